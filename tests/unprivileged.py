"""Scans as an unprivileged user, from a forked child of this (root) test process."""

from __future__ import annotations

import os

import orjson
from conftest import record_emitted

NOBODY = 65534


def mount_hidepid_proc(target: str) -> None:
    """In a new mount namespace of this (child) process, mount a procfs with hidepid=2."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    CLONE_NEWNS, MS_REC, MS_PRIVATE = 0x00020000, 0x4000, 1 << 18
    if libc.unshare(CLONE_NEWNS) != 0 or libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        raise OSError(ctypes.get_errno(), "unshare")
    if libc.mount(b"proc", target.encode(), b"proc", 0, b"hidepid=2") != 0:
        raise OSError(ctypes.get_errno(), "mount proc")


def scan_as_nobody(root: str, proc_root: str, hidepid: bool = False) -> dict | None:
    """Scan in a forked child that dropped root (already not root: as we are): the interpreter
    and every module it needs are loaded already (the unprivileged user may not be able to read
    them).  None: the child could not set up what was asked (no mount namespaces here)."""
    import io

    from recover.around import Surroundings
    from recover.render import render_json
    from recover.scan import Scan

    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            os.close(read_end)
            if hidepid:
                try:
                    mount_hidepid_proc(proc_root)
                except OSError:
                    code = 77
                    raise
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
            buf = io.BytesIO()
            around = Surroundings(containerd_version=os.environ.get("RECOVER_CONTAINERD_VERSION"))
            with Scan(root, proc_root=proc_root, around=around) as s:
                render_json(s, buf)
            with os.fdopen(write_end, "wb") as out:
                out.write(buf.getvalue())
            code = 0
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        data = f.read()
    _, status = os.waitpid(child, 0)
    if os.waitstatus_to_exitcode(status) == 77:
        return None
    assert os.waitstatus_to_exitcode(status) == 0
    doc = orjson.loads(data)
    record_emitted(doc)  # emitted in the child: count them for the catalog check
    return doc


def world_readable(top: str) -> None:
    for d, dirs, files in os.walk(top):
        for n in dirs + files:
            path = os.path.join(d, n)
            if not os.path.islink(path):  # a link (the capture's cwd links) is not ours to chmod
                os.chmod(path, 0o755 if n in dirs else 0o644)


def cli_as_nobody(args: list[str]) -> tuple[int, str, str]:
    """Run the CLI in a forked child that dropped root; its exit code, stdout and stderr.  The
    same command runs first as root, so that every module it needs is loaded before the drop."""
    from typer.testing import CliRunner

    from recover.cli import app

    CliRunner().invoke(app, args)
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            result = CliRunner().invoke(app, args)
            crash = None if result.exception is None or isinstance(result.exception, SystemExit) \
                else repr(result.exception)
            with os.fdopen(write_end, "wb") as out:
                out.write(orjson.dumps({"code": result.exit_code, "stdout": result.stdout,
                                        "stderr": result.stderr, "crash": crash}))
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        data = f.read()
    os.waitpid(child, 0)
    got = orjson.loads(data)
    assert got["crash"] is None, got["crash"]
    if got["code"] == 0 and got["stdout"].startswith("{"):
        record_emitted(orjson.loads(got["stdout"]))  # emitted in the child: count them for the catalog
    return got["code"], got["stdout"], got["stderr"]
