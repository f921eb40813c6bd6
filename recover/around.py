"""What lies around the root: Docker's files beside it, runc's state, a mounted disk image.

None of this is in the state root, but all of it decides what happens on restart: Docker reads
`docker-containerd.pid` to decide whether containerd still runs, containerd 0.2.9 kills a
container whose bundle dir is gone, and runc keeps its own idea of each container's init.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

import orjson

from .host import HostView
from .judge import ContainerJudgement
from .root import printable, read_regular
from .rules import Finding, finding

RUNC_ROOT = "/run/runc"
MAX_LINKS = 40


def in_image(image_root: str, path: str) -> str:
    """`path` as seen from inside a mounted image: symlinks resolved inside it, never out of it.

    `/var/run` is usually a link to `/run` (an absolute target): it is re-rooted at the image.
    """
    parts = [p for p in path.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(image_root, *resolved, part)
        try:
            is_link = stat.S_ISLNK(os.lstat(candidate).st_mode)
        except (OSError, ValueError):  # ValueError: a NUL byte in a path taken from the root
            is_link = False
        if not is_link:
            resolved.append(part)
            continue
        hops += 1
        if hops > MAX_LINKS:
            break
        try:
            target = os.readlink(candidate)
        except OSError:
            break
        if target.startswith("/"):
            resolved = []
        parts = [p for p in target.split("/") if p not in ("", ".")] + parts
    return os.path.join(image_root, *resolved)


@dataclass(frozen=True, slots=True)
class Surroundings:
    """Where to look: the host's own paths, or the same paths inside an image."""

    image_root: str | None = None
    runc_root: str | None = RUNC_ROOT  # None: runc's state is not read (analysing a capture)

    def path(self, host_path: str) -> str:
        return host_path if self.image_root is None else in_image(self.image_root, host_path)


def _read(path: str) -> bytes | None:
    """A small regular file, read without following a final link or opening a FIFO."""
    directory, name = os.path.split(path)
    try:
        fd = os.open(directory or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            if not stat.S_ISREG(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
                return None
        except OSError:
            return None
        return read_regular(fd, name, name).data
    finally:
        os.close(fd)


def docker_findings(root_real: str, host: HostView | None) -> list[Finding]:
    """Docker 1.12-1.13's files beside the root (SPEC §1.5): is the daemon its pid file names alive,
    really containerd, and on this root?"""
    libcontainerd = os.path.dirname(root_real.rstrip("/"))
    pid_path = os.path.join(libcontainerd, "docker-containerd.pid")
    data = _read(pid_path)
    out: list[Finding] = []
    if data is None:
        return out
    try:
        pid = int(data.strip())
    except ValueError:
        return [finding("H007", f"docker-containerd.pid holds {data[:20]!r}, not a pid: Docker will start a "
                        "new containerd", pid_path)]
    if host is None or not host.readable:
        return out
    st = host.stat(pid)
    if st is None:
        return [finding("H007", f"docker-containerd.pid names pid {pid}, which is gone: the daemon is not "
                        "running, and Docker will start a new one over this root", pid_path)]
    argv = host.cmdline(pid) or []
    if not argv or "containerd" not in os.path.basename(argv[0]) or "shim" in os.path.basename(argv[0]):
        shown = printable(" ".join(argv[:3])) if argv else st.comm
        return [finding("H008", f"docker-containerd.pid names pid {pid}, which is alive but is not containerd "
                        f"({shown}): Docker would take it for a running containerd and never start one", pid_path)]
    out.append(finding("H009", f"containerd runs on this root (pid {pid}, from docker-containerd.pid): the "
                       "root may change while it is read, and repair refuses to write", pid_path))
    return out


def bundle_findings(c: ContainerJudgement, where: Surroundings) -> list[Finding]:
    """A Docker bundle's config.json and stdio FIFOs (only where the bundle can be seen).
    One listing of the bundle dir: types come from it, nothing in it is opened."""
    if not c.bundle:
        return []
    try:
        with os.scandir(where.path(c.bundle)) as it:
            kinds = {e.name: _kind(e) for e in it}
    except (OSError, ValueError):
        return []  # gone (judged as R003 where it matters) or not readable
    out = []
    if kinds.get("config.json") != "file":
        out.append(finding("H010", f"bundle {printable(c.bundle)} has no config.json: runc cannot act on "
                           "this container", c.rel))
    for p in c.processes:
        prefix = "init" if p.id == "init" else p.id
        for stream in ("stdin", "stdout", "stderr"):
            kind = kinds.get(f"{prefix}-{stream}")
            if kind is not None and kind != "fifo":  # absent: not a Docker bundle, nothing to say
                out.append(finding("H010", f"{printable(prefix)}-{stream} in the bundle is not a FIFO: Docker "
                                   "cannot reattach the container's stdio", c.rel))
    return out


def _kind(entry: os.DirEntry) -> str:
    if entry.is_file(follow_symlinks=False):
        return "file"
    if entry.is_dir(follow_symlinks=False) or entry.is_symlink():
        return "other"
    try:
        return "fifo" if stat.S_ISFIFO(entry.stat(follow_symlinks=False).st_mode) else "other"
    except OSError:
        return "other"


def runc_dir(where: Surroundings) -> str | None:
    """runc's state dir, when there is one (looked up once per scan)."""
    if where.runc_root is None:
        return None
    path = where.path(where.runc_root)
    return path if os.path.isdir(path) else None


def runc_findings(c: ContainerJudgement, runc_root: str | None) -> list[Finding]:
    """runc's own state of the container (`<runc-root>/<id>/state.json`) against the init's files."""
    init = next((p for p in c.processes if p.id == "init"), None)
    if runc_root is None or init is None:
        return []
    data = _read(os.path.join(runc_root, c.id, "state.json"))
    if init is None or data is None:
        return []
    try:
        doc = orjson.loads(data)
        pid = int(doc["init_process_pid"])
        start = int(doc["init_process_start"])  # a string in old runc, a number in new
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return [finding("H011", "runc's state.json cannot be read (init_process_pid, init_process_start)", c.rel)]
    if init.pid is not None and init.pid != pid:
        return [finding("H011", f"runc's state says init is pid {pid}, containerd's pid file says {init.pid}", c.rel)]
    if init.recorded_start is not None and init.recorded_start != start:
        return [finding("H011", f"runc's state says init started at tick {start}, containerd's starttime says "
                        f"{init.recorded_start}", c.rel)]
    return []
