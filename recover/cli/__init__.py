"""The command line.  The only package that prints or exits; everything else returns values.
Each command group is a module of its own (judging.py: scan, check, explain, rules; repairing.py:
repair; guarding.py: guard), registered on `app` when this package loads.

Annotations here are evaluated when the module loads (no `from __future__ import annotations`):
typer reads every command's signature at each start, and strings would make it eval() each one
(about 6 ms of every run)."""

import os
import shutil
import sys
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, BinaryIO, Optional

import typer

if TYPE_CHECKING:
    from ..render import Display

EXIT_OK = 0  # the root was scanned, whatever was found
EXIT_FINDINGS = 1  # check: findings at or above --fail-on remain
EXIT_USAGE = 2  # bad options, or a root that is not a readable directory
EXIT_INTERNAL = 3  # a bug in recover: never means "findings"
EXIT_REFUSED = 4  # repair: a daemon runs on the root, or another repair holds the lock

EXIT_CODES_HELP = """\b
Exit codes:
  0  scanned (scan reports; it does not judge the root by its exit code);
     check: no finding at or above --fail-on remains;
     repair: every planned action applied, or a dry run, or nothing to do
  1  check: findings at or above --fail-on remain;
     repair: some action failed or was skipped by re-verification
  2  usage error (also: a file given cannot be written or read), or ROOT is
     not a readable directory or not a root recover reads
  3  internal error in recover (a bug: please report it)
  4  repair refused: ROOT is not a root recover writes in, a containerd daemon runs
     on ROOT, another repair holds the lock, or kills are refused (a copy of the
     live root, a captured proc dir)
  129, 130, 143  stopped by SIGHUP, SIGINT (Ctrl-C) or SIGTERM (128 + the signal);
       watch: 0, its textfile holding the last scan"""

app = typer.Typer(
    name="recover",
    help="Judge a containerd state root after a crash, before the daemon restarts: containerd "
         "1.6, 1.7 and 2.x (Docker 20+, every Kubernetes node) and containerd 0.2 (Docker 1.11-1.13).\n\n"
         "On restart the daemon decides from that root, and destructively: containerd 1.6-2.x SIGKILLs "
         "healthy containers whose shim it cannot reach, loses exit statuses, leaks live containers and "
         "blocks on a stopped shim; containerd 0.2 deletes evidence, kills the wrong process or crashes. "
         "recover reads the root and /proc, says what really happened to every process, and what the "
         "daemon would do (and, on a Docker host, what dockerd's own restart then does); `watch` feeds "
         "the same judgement to Prometheus on every node.\n\n" + EXIT_CODES_HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from .. import __version__

        _write_out(lambda out: out.write(f"recover {__version__}\n".encode()))
        raise typer.Exit()


@app.callback()
def _options(version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True, help="Print the version and exit.")] = False) -> None:
    pass


def _to_devnull(stream) -> None:
    """Point a standard stream's fd at /dev/null: what is still buffered for a reader that went
    away (EPIPE) is dropped there, and Python's flush at exit does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, stream.fileno())
    finally:
        os.close(devnull)


def _note(message: str) -> None:
    """A line on stderr.  Once stderr's reader is gone, notes are dropped: never a reason to stop."""
    try:
        typer.echo(message, err=True)
    except BrokenPipeError:
        _to_devnull(sys.stderr)


def _write_out(render: Callable[[BinaryIO], None]) -> None:
    """Data on stdout.  A reader that went away (`| head`) ends the output, not the command, which
    goes on to exit as it would have: nothing more is printed, and a closed pipe is no error."""
    try:
        render(sys.stdout.buffer)
        sys.stdout.buffer.flush()
    except BrokenPipeError:
        _to_devnull(sys.stdout)


def _display() -> "Display":
    """Tables fit the terminal and verdicts are coloured only on a terminal (COLUMNS, when set,
    is the width anywhere); piped output never depends on where it runs.  NO_COLOR (any
    non-empty value) or TERM=dumb turns colour off."""
    from ..render import Display

    tty = sys.stdout.isatty()
    width = shutil.get_terminal_size().columns if tty or os.environ.get("COLUMNS") else None
    colour = tty and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"
    return Display(width=width, colour=colour)


def _fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    _note(f"recover: {message}")
    return typer.Exit(code)


def _unwritable(option: str, path: str, *, is_dir: bool = False) -> str | None:
    """Why a file (or, with is_dir, a dir that may not exist yet) cannot be written at `path`,
    seen before anything is written; None if it looks writable (the write may still fail)."""
    target = os.path.abspath(path)
    probe = target if is_dir else os.path.dirname(target)
    if not is_dir and os.path.isdir(target):
        return f"{option} {path}: is a directory"
    while not os.path.lexists(probe):  # a dir to be created: its nearest existing ancestor decides
        if is_dir:
            probe = os.path.dirname(probe)
        else:
            return f"{option} {path}: {os.path.dirname(target)} does not exist"
    if not os.path.isdir(probe):
        return f"{option} {path}: {probe} is not a directory"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{option} {path}: {probe} is not writable"
    if os.statvfs(probe).f_flag & os.ST_RDONLY:
        return f"{option} {path}: {probe} is on a read-only filesystem"
    return None


RootArg = Annotated[Optional[str], typer.Argument(
    help="The state root. Default: the first that exists of /run/containerd, "
         "/var/run/docker/containerd/daemon and /var/run/docker/libcontainerd/containerd.",
    show_default=False, metavar="ROOT")]
ProcRootOpt = Annotated[Optional[str], typer.Option(
    "--proc-root", metavar="DIR", show_default=False,
    help="A live proc mount, or a captured proc dir laid out like /proc. Default: /proc (none with --image-root).")]
RepairProcRootOpt = Annotated[Optional[str], typer.Option(
    "--proc-root", metavar="DIR", show_default=False,
    help="The proc mount to judge and re-verify with. Default: /proc; --apply needs the live one "
         "of this pid namespace.")]
OfflineOpt = Annotated[bool, typer.Option(
    "--offline", help="Read no proc at all: processes that have not exited are 'unknown'.")]
ImageRootOpt = Annotated[Optional[str], typer.Option(
    "--image-root", metavar="DIR", help="Analyse a mounted disk image or copied host tree: the default roots, "
    "Docker's files and runc's root are looked up under DIR; /proc only from --proc-root.")]
RuncRootOpt = Annotated[Optional[str], typer.Option(
    "--runc-root", metavar="DIR", show_default=False,
    help="runc's state dir. Default: /run/runc (0.2) or each task's runc root, /run/containerd/runc "
         "(runtime-v2); read only beside a live /proc or inside an image.")]
ContainerdRootOpt = Annotated[Optional[str], typer.Option(
    "--containerd-root", metavar="DIR", show_default=False,
    help="containerd 1.x/2.x's root dir (work dirs, CRI checkpoints). Default: as each task's work link names "
         "it (/var/lib/containerd).")]
ContainerdVersionOpt = Annotated[Optional[str], typer.Option(
    "--containerd-version", metavar="VERSION", show_default=False,
    help="The containerd that will start over a 1.x/2.x state dir (1.6.20, 1.7.34, 2.3.4: what it does to each task "
         "depends on it; `all`: each known behaviour). Default: $RECOVER_CONTAINERD_VERSION, else the version in the "
         "binary that will start (read, never run), else what the bundles show, else each known behaviour, the "
         "worst leading.")]
DockerRootOpt = Annotated[Optional[str], typer.Option(
    "--docker-root", metavar="DIR", show_default=False,
    help="Docker's data root, beside a 1.x/2.x state dir whose tasks Docker runs (namespace moby): what dockerd "
    "does on its own restart is judged too. Default: the running dockerd's --data-root, else data-root in "
    "/etc/docker/daemon.json, else /var/lib/docker (when it holds containers).")]
DockerConfigOpt = Annotated[Optional[str], typer.Option(
    "--docker-config", metavar="FILE", show_default=False,
    help="dockerd's daemon.json (live-restore, data-root). Default: the running dockerd's --config-file, else "
    "/etc/docker/daemon.json.")]
LayoutOpt = Annotated[Optional[str], typer.Option(
    "--layout", metavar="LAYOUT", show_default=False,
    help="Read ROOT as this layout, whatever it looks like: containerd-0.2 or containerd-runtime-v2.")]
ContainerOpt = Annotated[Optional[list[str]], typer.Option(
    "--container", "-c", metavar="ID", help="A container id or unique prefix (repeatable).", show_default=False)]


def _resolve_root(root: str | None, around=None) -> str:
    from ..around import Surroundings
    from ..scan import default_root

    if root == "":
        raise _fail("the root is an empty string, not a path")
    if root is not None:
        return root
    found = default_root(around or Surroundings())
    if found is None:
        from ..classify import DEFAULT_ROOTS

        raise _fail(f"no state root found at {', '.join(DEFAULT_ROOTS)}; name one (see `recover --help`), "
                    "or try `recover demo`")
    return found


def _check_proc_root(proc_root: str | None, offline: bool) -> None:
    """A --proc-root that is not a proc would judge every process `vanished`: a usage error."""
    from ..host import proc_root_problem

    if proc_root is None:
        return
    if offline:
        raise _fail("--offline reads no proc: it cannot be given with --proc-root")
    if (problem := proc_root_problem(proc_root)) is not None:
        raise _fail(f"--proc-root {proc_root} is not a proc root: {problem}")


def _open_scan(root: str | None, proc_root: str | None, offline: bool, container: list[str] | None,
               image_root: str | None = None, runc_root: str | None = None, containerd_root: str | None = None,
               layout: str | None = None, *, containerd_version: str | None = None, unit: str | None = None,
               docker_root: str | None = None, docker_config: str | None = None, not_a_root: Callable[[str], typer.Exit] = _fail):
    from ..around import Surroundings, namespace_root, unreachable_here
    from ..fsread import RootError
    from ..generations import GENERATION_NAMES, daemon_version_problem
    from ..host import is_procfs
    from ..scan import NotAStateRoot, Scan, SelectionError

    if image_root is not None and not os.path.isdir(image_root):
        raise _fail(f"--image-root {image_root}: not a directory")
    if layout is not None and layout not in GENERATION_NAMES:
        raise _fail(f"--layout must be one of: {', '.join(GENERATION_NAMES)}")
    _check_proc_root(proc_root, offline)
    # runc's state is this host's, beside its live /proc, or the image's own: never a capture's
    read_runc = runc_root is not None or image_root is not None or proc_root is None or is_procfs(proc_root)
    # not typer's envvar=: `guard --install` would write a variable of the shell into the drop-in
    if containerd_version == "":
        raise _fail("--containerd-version: an empty value (give a version such as 1.6.20, or all)")
    version_source = "flag" if containerd_version else "environment"
    containerd_version = containerd_version or os.environ.get("RECOVER_CONTAINERD_VERSION") or None
    if containerd_version is not None and (problem := daemon_version_problem(containerd_version, version_source)):
        raise _fail(problem)
    # a root reached through /proc/<pid>/root is that process's mount namespace's: every path its
    # files name (sockets, runc's state, the root dir, the daemon's binary) is read there too, with
    # this host's live /proc
    ns_root = None
    if image_root is None and root:
        ns_root = namespace_root(root)
        if ns_root is None and (problem := unreachable_here(root)):
            raise _fail(problem)
    around = Surroundings(image_root or ns_root, runc_root, read_runc, containerd_root, containerd_version,
                          version_source, unit, docker_root, docker_config)
    for flag, value in (("--runc-root", runc_root), ("--containerd-root", containerd_root),
                        ("--docker-root", docker_root)):
        if value is not None and not os.path.isdir(around.path(value)):
            inside = f"it is a path inside {around.image_root}, and " if around.image_root is not None else ""
            raise _fail(f"{flag} {value}: {inside}{around.path(value)} is no directory")
    if docker_config is not None and not os.path.isfile(around.path(docker_config)):
        raise _fail(f"--docker-config {docker_config}: {around.path(docker_config)} is no file")
    path = _resolve_root(root, around)
    if proc_root is None:  # a disk image has no /proc of its own: the host's would be wrong
        offline = offline or image_root is not None
        proc_root = "/proc"
    try:
        return Scan(path, proc_root=proc_root, offline=offline, select=container, around=around, layout=layout)
    except NotAStateRoot as e:
        raise not_a_root(f"{e}; recover reads containerd 0.2 roots and containerd 1.x/2.x state dirs "
                         "(--layout to read it as one anyway)") from None
    except RootError as e:
        hint = " (run recover as root: the daemon's state is root's)" if "ermission denied" in str(e) else ""
        raise _fail(f"{e}: not a readable directory{hint}") from None
    except SelectionError as e:
        raise _fail(str(e)) from None


@app.command()
def demo(
    keep: Annotated[bool, typer.Option("--keep", help="Leave the demo root on disk (processes are still stopped).")] = False,
    layout: Annotated[str, typer.Option(
        "--layout", metavar="LAYOUT",
        help="containerd-0.2 (default: stand-in shims, needs nothing) or containerd-runtime-v2 (a real "
             "containerd, the newest the lab can run here: 2.3.4, 1.7.34 or Debian's 1.6.20, in a private mount "
             "namespace: root, runc, busybox-static).")] = "containerd-0.2",
) -> None:
    """Build a root with real processes (running, exited, orphaned, zombie, pid-reused, vanished,
    not-started), scan it, explain each row, then remove everything it made, also when stopped
    by a signal or when its output is closed.  With --layout containerd-runtime-v2: crash a real
    containerd (the newest the lab runs here), break its tasks, scan, restart it, and show what it
    did against the prediction.
    """
    from ..generations import GENERATION_NAMES, CannotRun, generation_named

    if layout not in GENERATION_NAMES:
        raise _fail(f"--layout must be one of: {', '.join(GENERATION_NAMES)}")
    display = _display()
    try:
        _write_out(lambda out: generation_named(layout).demo(out, _note, keep=keep, display=display))
    except CannotRun as e:
        raise _fail(str(e)) from None


def main() -> None:
    """Console entry point: a stop signal exits 128 + its number after cleanup; unexpected errors
    exit 3, never the code that means "findings"."""
    from ..stop import Stopped, install

    install()
    try:
        code = app(standalone_mode=False)  # click's own usage errors come here: said in one line below
    except SystemExit:
        raise
    except Stopped as e:
        sys.exit(128 + e.signum)
    except Exception as e:  # noqa: BLE001 - the top-level handler of a CLI
        kinds = {c.__name__ for c in type(e).__mro__}  # click's, or the copy newer typers carry
        if "ClickException" in kinds:
            usage = "UsageError" in kinds
            _note(f"recover: {e.format_message()}" + (" (see --help)" if usage else ""))
            sys.exit(EXIT_USAGE if usage else e.exit_code)
        if "Abort" in kinds:
            sys.exit(128 + 2)  # Ctrl-C while click itself waited
        traceback.print_exc(file=sys.stderr)
        _note("recover: internal error (a bug in recover); the traceback is above")
        sys.exit(EXIT_INTERNAL)
    sys.exit(code if isinstance(code, int) else 0)


# the commands register themselves on `app` (imported last: they use what is defined above)
from . import guarding, judging, repairing, watching  # noqa: E402,F401

