"""guard: recover before every daemon start (systemd's ExecStartPre=), and its drop-in.

Annotations here are evaluated when the module loads (no `from __future__ import annotations`):
typer reads every command's signature at each start, and strings would make it eval() each one."""

import os
import sys
import traceback
from typing import Annotated, Optional

import typer

from . import (EXIT_FINDINGS, EXIT_INTERNAL, EXIT_OK, EXIT_REFUSED, ContainerdVersionOpt, DockerConfigOpt, DockerRootOpt, ImageRootOpt, ProcRootOpt, RootArg, _fail, _note, _open_scan, app)


GUARD_EXIT_CODES_HELP = """\b
Exit codes of guard:
  0  the start goes on: no hazard, or --policy report or repair (whatever
     happened, a bug or a time-out included), or overridden once, or a daemon
     already runs on ROOT, or ROOT is from a previous boot or does not exist;
     --install / --uninstall: done
  1  --policy block: a hazard (the start would crash or hang the daemon, kill or
     leak live processes, or drop a container)
  2  usage error; --policy block: ROOT is not a readable root
  3  --policy block: recover failed (a bug) or timed out: not judged, not passed
  4  --install / --uninstall: the drop-in's file was not written by recover"""


@app.command(epilog=GUARD_EXIT_CODES_HELP)
def guard(
    root: RootArg = None,
    policy: Annotated[str, typer.Option(
        "--policy", metavar="POLICY", help="report: log, write the report and pass, always; block: fail the start "
        "on a hazard (or when it cannot judge); repair: apply the safe repairs first, then report.")] = "report",
    kill_orphans: Annotated[bool, typer.Option(
        "--kill-orphans", help="With --policy repair: kill orphaned processes too (never otherwise).")] = False,
    timeout: Annotated[Optional[float], typer.Option(
        "--timeout", metavar="SECONDS", show_default=False,
        help="Give up after this long: pass (report, repair) or fail (block). Default: 10.")] = None,
    report_dir: Annotated[Optional[str], typer.Option(
        "--report-dir", metavar="DIR", show_default=False,
        help="Where the JSON reports go (guard-<UTC time>-<root>.json). Default: /var/lib/recover.")] = None,
    keep: Annotated[Optional[int], typer.Option(
        "--keep", metavar="N", show_default=False, help="Keep the last N reports of the root. Default: 10.")] = None,
    run_dir: Annotated[Optional[str], typer.Option(
        "--run-dir", metavar="DIR", show_default=False,
        help="Where the one-shot override file guard-override is looked for. Default: /run/recover.")] = None,
    proc_root: ProcRootOpt = None,
    image_root: ImageRootOpt = None,
    containerd_version: ContainerdVersionOpt = None,
    docker_root: DockerRootOpt = None,
    docker_config: DockerConfigOpt = None,
    install: Annotated[bool, typer.Option(
        "--install", help="Write the systemd drop-in that runs this command (with these options) before --unit.")]
        = False,
    uninstall: Annotated[bool, typer.Option("--uninstall", help="Remove the drop-in that --install wrote.")] = False,
    unit: Annotated[str, typer.Option(
        "--unit", metavar="UNIT", help="The daemon's unit: containerd.service or docker.service (its ExecStart "
        "tells which containerd will start).")] = "containerd.service",
    systemd_dir: Annotated[str, typer.Option(
        "--systemd-dir", metavar="DIR", help="Where the drop-in goes: DIR/UNIT.d/50-recover.conf.")]
        = "/etc/systemd/system",
) -> None:
    """Judge ROOT (a containerd 1.x/2.x state dir or a containerd 0.2 root) before the daemon
    starts: made for systemd's ExecStartPre= (see --install).

    Says what it found on stderr (the journal), writes a JSON report in --report-dir, and exits
    by --policy. Never fails a start under --policy report; never runs while a daemon runs on ROOT.
    """
    import threading

    from .. import guard as gd
    from ..generations import daemon_version_problem

    if policy not in gd.POLICIES:
        raise _fail(f"--policy must be one of: {', '.join(gd.POLICIES)}")
    if kill_orphans and policy != "repair":
        raise _fail("--kill-orphans goes with --policy repair only")
    if timeout is not None and not timeout > 0:
        raise _fail("--timeout must be more than 0 seconds")
    if keep is not None and keep < 1:
        raise _fail("--keep must be at least 1")
    if install or uninstall:
        if install and uninstall:
            raise _fail("--install and --uninstall cannot be given together")
        if not gd.UNIT_NAME.fullmatch(unit):
            raise _fail(f"--unit {unit}: not a service unit's name (containerd.service, docker.service)")
        if uninstall:
            _guard_uninstall(gd.dropin_path(systemd_dir, unit))
            return
        if proc_root is not None or image_root is not None:
            raise _fail("--install writes the command for this host's own starts: "
                        "--proc-root and --image-root cannot be given with it")
        if containerd_version is not None and (problem := daemon_version_problem(containerd_version)):
            raise _fail(problem)  # never a drop-in whose every start fails on its usage error
        argv = [*_recover_command(), "guard", "--policy", policy, "--unit", unit] + (
            ["--kill-orphans"] if kill_orphans else [])
        for flag, value in (("--timeout", None if timeout is None else f"{timeout:g}"),
                            ("--containerd-version", containerd_version),
                            ("--docker-root", docker_root and os.path.abspath(docker_root)),
                            ("--docker-config", docker_config and os.path.abspath(docker_config)),
                            ("--keep", None if keep is None else str(keep)),
                            ("--report-dir", report_dir and os.path.abspath(report_dir)),
                            ("--run-dir", run_dir and os.path.abspath(run_dir))):
            if value is not None:  # given: systemd runs the command with another cwd
                argv += [flag, value]
        if (mismatch := _unit_mismatch(unit, root)) is not None:
            _note(f"recover: warning: {mismatch}")
        _guard_install(gd.dropin_path(systemd_dir, unit), gd.dropin_text(unit, argv + (
            [os.path.abspath(root)] if root is not None else [])))
        return

    timeout = gd.DEFAULT_TIMEOUT_S if timeout is None else timeout
    run_dir = gd.DEFAULT_RUN_DIR if run_dir is None else run_dir

    def say(line: str) -> None:
        typer.echo(f"recover guard: {line}", err=True)

    overridden = None
    if policy == "block":
        try:
            overridden = gd.consume_override(run_dir)
        except OSError as e:
            say(f"{gd.override_path(run_dir)} cannot be removed ({e.strerror}): not taken as an override")
    if overridden is not None:
        say(f"overridden once by {overridden} (removed): this start is judged as --policy report")
    blocking = policy == "block" and overridden is None
    cannot_judge = EXIT_INTERNAL if blocking else EXIT_OK
    goes_on = f"the start is blocked: it could not be judged; {gd.override_hint(run_dir)}" if blocking \
        else "the start goes on"

    def timed_out() -> None:
        say(f"timed out after {timeout:g} s (--timeout): not judged; {goes_on}")
        sys.stderr.flush()
        os._exit(cannot_judge)  # the judging thread may be stuck in a read: nothing else would end it

    watchdog = threading.Timer(timeout, timed_out)
    watchdog.daemon = True
    watchdog.start()
    settings = gd.Settings(policy,  # type: ignore[arg-type]
                           report_dir=gd.DEFAULT_REPORT_DIR if report_dir is None else report_dir,
                           keep=gd.DEFAULT_KEEP if keep is None else keep, kill_orphans=kill_orphans,
                           overridden=overridden)
    try:
        decision = _guard_judge(root, proc_root, image_root, settings, say, containerd_version, unit,
                                docker_root, docker_config)
    except typer.Exit:  # ROOT cannot be read as a root: said in one line already
        say(f"not judged; {goes_on}")
        if blocking:
            raise
        raise typer.Exit(EXIT_OK) from None
    except Exception:  # noqa: BLE001 - a bug in recover must never fail a start under report
        traceback.print_exc(file=sys.stderr)
        say(f"internal error (a bug in recover; the traceback is above): not judged; {goes_on}")
        raise typer.Exit(cannot_judge) from None
    finally:
        watchdog.cancel()
    if decision is None:  # no root, or a daemon runs on it: said already
        return
    say(gd.conclusion(decision, settings, run_dir))
    if decision.blocked:
        raise typer.Exit(EXIT_FINDINGS)


def _guard_judge(root: str | None, proc_root: str | None, image_root: str | None, settings, say,
                 containerd_version: str | None, unit: str, docker_root: str | None = None,
                 docker_config: str | None = None):
    from .. import guard as gd
    from ..around import Surroundings
    from ..classify import DEFAULT_ROOTS
    from ..scan import default_root

    if root == "":
        raise _fail("the root is an empty string, not a path")
    path = root if root is not None else default_root(Surroundings(image_root))
    if path is None or not os.path.lexists(path):  # a first start: the daemon makes its root
        say(f"no state root at {path or ' or '.join(DEFAULT_ROOTS)}: nothing to judge; the start goes on")
        return None
    return gd.judge(lambda: _open_scan(path, proc_root, False, None, image_root, containerd_version=containerd_version,
                                       unit=unit, docker_root=docker_root, docker_config=docker_config), settings, say)


def _unit_mismatch(unit: str, root: str | None) -> str | None:
    """What guard.unit_mismatch says of the root the installed guard would judge (ROOT, else the
    default root this host has); None when there is none yet."""
    from .. import guard as gd
    from ..classify import classify
    from ..fsread import OpenRoot, RootError
    from ..scan import default_root

    path = root if root is not None else default_root()
    if path is None or not os.path.isdir(path):
        return None
    try:
        with OpenRoot(path) as opened:
            kind = classify(opened).kind
    except (OSError, RootError):
        return None
    return gd.unit_mismatch(unit, path, kind)


def _guard_install(path: str, text: str) -> None:
    from .. import guard as gd

    try:
        gd.install(path, text)
    except gd.Refused as e:
        raise _fail(f"refusing: {e}", EXIT_REFUSED) from None
    except OSError as e:
        raise _fail(f"{path}: {e.strerror or e}") from None
    typer.echo(f"wrote {path}:\n{text}then run: systemctl daemon-reload")


def _guard_uninstall(path: str) -> None:
    from .. import guard as gd

    try:
        removed = gd.uninstall(path)
    except gd.Refused as e:
        raise _fail(f"refusing: {e}", EXIT_REFUSED) from None
    except OSError as e:
        raise _fail(f"{path}: {e.strerror or e}") from None
    typer.echo(f"removed {path}\nthen run: systemctl daemon-reload" if removed
               else f"nothing to remove: {path} does not exist")


def _recover_command() -> list[str]:
    """The running recover as an absolute command: its console script, else this interpreter with
    `-m recover` (systemd runs it with another PATH and cwd)."""
    import shutil

    argv0 = sys.argv[0]
    if os.path.basename(argv0) == "recover":
        found = argv0 if os.sep in argv0 else shutil.which(argv0)
        if found:
            return [os.path.abspath(found)]
    return [sys.executable, "-m", "recover"]
