"""The command line.  The only module that prints or exits; everything else returns values.

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
    from .render import Display

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
  129, 130, 143  stopped by SIGHUP, SIGINT (Ctrl-C) or SIGTERM (128 + the signal)"""

app = typer.Typer(
    name="recover",
    help="Judge a containerd state root after a crash, before the daemon restarts: containerd "
         "1.6, 1.7 and 2.x (Docker 20+, every Kubernetes node) and containerd 0.2 (Docker 1.11-1.13).\n\n"
         "On restart the daemon decides from that root, and destructively: containerd 1.6-2.x SIGKILLs "
         "healthy containers whose shim it cannot reach, loses exit statuses, leaks live containers and "
         "blocks on a stopped shim; containerd 0.2 deletes evidence, kills the wrong process or crashes. "
         "recover reads the root and /proc, says what really happened to every process, and what the "
         "daemon would do.\n\n" + EXIT_CODES_HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from . import __version__

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
    from .render import Display

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
         "(runtime-v2); read only beside a live /proc or inside --image-root.")]
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
LayoutOpt = Annotated[Optional[str], typer.Option(
    "--layout", metavar="LAYOUT", show_default=False,
    help="Read ROOT as this layout, whatever it looks like: containerd-0.2 or containerd-runtime-v2.")]
ContainerOpt = Annotated[Optional[list[str]], typer.Option(
    "--container", "-c", metavar="ID", help="A container id or unique prefix (repeatable).", show_default=False)]


def _resolve_root(root: str | None, around=None) -> str:
    from .around import Surroundings
    from .scan import default_root

    if root == "":
        raise _fail("the root is an empty string, not a path")
    if root is not None:
        return root
    found = default_root(around or Surroundings())
    if found is None:
        from .classify import DEFAULT_ROOTS

        raise _fail(f"no state root found at {', '.join(DEFAULT_ROOTS)}; name one (see `recover --help`), "
                    "or try `recover demo`")
    return found


def _check_proc_root(proc_root: str | None, offline: bool) -> None:
    """A --proc-root that is not a proc would judge every process `vanished`: a usage error."""
    from .host import proc_root_problem

    if proc_root is None:
        return
    if offline:
        raise _fail("--offline reads no proc: it cannot be given with --proc-root")
    if (problem := proc_root_problem(proc_root)) is not None:
        raise _fail(f"--proc-root {proc_root} is not a proc root: {problem}")


def _open_scan(root: str | None, proc_root: str | None, offline: bool, container: list[str] | None,
               image_root: str | None = None, runc_root: str | None = None, containerd_root: str | None = None,
               layout: str | None = None, *, containerd_version: str | None = None, unit: str | None = None,
               not_a_root: Callable[[str], typer.Exit] = _fail):
    from .around import Surroundings
    from .fsread import RootError
    from .host import is_procfs
    from .generations import GENERATION_NAMES
    from .scan import NotAStateRoot, Scan, SelectionError

    if image_root is not None and not os.path.isdir(image_root):
        raise _fail(f"--image-root {image_root}: not a directory")
    if layout is not None and layout not in GENERATION_NAMES:
        raise _fail(f"--layout must be one of: {', '.join(GENERATION_NAMES)}")
    _check_proc_root(proc_root, offline)
    # runc's state is this host's, beside its live /proc, or the image's own: never a capture's
    read_runc = runc_root is not None or image_root is not None or proc_root is None or is_procfs(proc_root)
    # not typer's envvar=: `guard --install` would write a variable of the shell into the drop-in
    containerd_version = containerd_version or os.environ.get("RECOVER_CONTAINERD_VERSION") or None
    if containerd_version is not None:
        from .generations.runtime_v2.version import from_flag

        if isinstance(problem := from_flag(containerd_version), str):
            raise _fail(problem)
    around = Surroundings(image_root, runc_root, read_runc, containerd_root, containerd_version, unit)
    for flag, value in (("--runc-root", runc_root), ("--containerd-root", containerd_root)):
        if value is not None and image_root is not None and not os.path.isdir(around.path(value)):
            raise _fail(f"{flag} {value}: with --image-root it is a path inside the image, and "
                        f"{around.path(value)} is no directory")
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


@app.command(epilog=EXIT_CODES_HELP)
def scan(
    root: RootArg = None,
    proc_root: ProcRootOpt = None,
    offline: OfflineOpt = False,
    image_root: ImageRootOpt = None,
    runc_root: RuncRootOpt = None,
    containerd_root: ContainerdRootOpt = None,
    containerd_version: ContainerdVersionOpt = None,
    layout: LayoutOpt = None,
    format: Annotated[str, typer.Option(
        "--format", "-f", metavar="FORMAT", help="text (a table; `table` is the same), json (one document), "
        "jsonl (a line per container, then a summary) or prometheus (textfile metrics).")] = "text",
    container: ContainerOpt = None,
) -> None:
    """Read ROOT (a containerd 1.x/2.x state dir or a containerd 0.2 root) and /proc, and report
    a verdict for every process and what the daemon would do when it restarts.

    Scan writes nothing and never opens a FIFO. Run it BEFORE restarting the daemon.
    """
    from .render import RENDERERS, ScanFormat

    try:
        fmt = ScanFormat(format)
    except ValueError:
        raise _fail(f"--format must be one of: {', '.join(f.value for f in ScanFormat)}") from None
    display = _display()
    with _open_scan(root, proc_root, offline, container, image_root, runc_root, containerd_root, layout,
                    containerd_version=containerd_version) as s:
        _write_out(lambda out: RENDERERS[fmt](s, out, display=display))


@app.command(epilog=EXIT_CODES_HELP)
def check(
    root: RootArg = None,
    proc_root: ProcRootOpt = None,
    offline: OfflineOpt = False,
    image_root: ImageRootOpt = None,
    runc_root: RuncRootOpt = None,
    containerd_root: ContainerdRootOpt = None,
    containerd_version: ContainerdVersionOpt = None,
    layout: LayoutOpt = None,
    container: ContainerOpt = None,
    select: Annotated[Optional[str], typer.Option(
        "--select", metavar="CODES", help="Only these codes or prefixes (comma-separated), e.g. L,R006.")] = None,
    ignore: Annotated[Optional[str], typer.Option(
        "--ignore", metavar="CODES", help="Not these codes or prefixes (comma-separated).")] = None,
    fail_on: Annotated[str, typer.Option(
        "--fail-on", metavar="SEVERITY", help="The lowest severity that fails the gate: error, warning or info.")] = "error",
    baseline: Annotated[Optional[str], typer.Option(
        "--baseline", metavar="FILE", help="Findings listed in FILE do not fail the gate.")] = None,
    write_baseline: Annotated[Optional[str], typer.Option(
        "--write-baseline", metavar="FILE", help="Write every reported finding to FILE as a baseline.")] = None,
    format: Annotated[str, typer.Option(
        "--format", "-f", metavar="FORMAT",
        help="text, json, jsonl, junit, github, sarif or prometheus.")] = "text",
) -> None:
    """A CI gate: exit 1 when a finding at or above --fail-on remains after --select, --ignore
    and --baseline; 0 when none does.
    """
    import time

    from . import check as ck
    from .render import CHECK_RENDERERS, CheckFormat
    from .rules import SEVERITIES

    try:
        fmt = CheckFormat(format)
    except ValueError:
        raise _fail(f"--format must be one of: {', '.join(f.value for f in CheckFormat)}") from None
    if fail_on not in SEVERITIES:
        raise _fail(f"--fail-on must be one of: {', '.join(SEVERITIES)}")
    try:
        known = ck.read_baseline(baseline) if baseline else frozenset()
    except (OSError, ValueError) as e:
        raise _fail(f"--baseline: {e}") from None
    for flag, value in (("--select", select), ("--ignore", ignore)):
        if unknown := ck.unknown_codes(ck.parse_codes(value)):
            raise _fail(f"{flag} {','.join(unknown)}: no finding code starts with it (see `recover rules`)")
    if write_baseline and (problem := _unwritable("--write-baseline", write_baseline)):
        raise _fail(problem)
    gate = ck.Gate(ck.parse_codes(select), ck.parse_codes(ignore), fail_on, known)
    with _open_scan(root, proc_root, offline, container, image_root, runc_root, containerd_root, layout,
                    containerd_version=containerd_version) as s:
        containers = list(s.containers())
        report = ck.CheckReport(
            root=s.root.path, findings=tuple(ck.locate(containers, s.findings)),
            subjects=tuple(x for c in containers for x in ck.subjects_of(c)),
            verdicts=dict(s.summary.verdicts), gate=gate, timestamp=time.time())
    if write_baseline:
        try:
            _write_file(write_baseline, ck.baseline_json(report.reported))
        except OSError as e:
            raise _fail(f"--write-baseline {write_baseline}: {e.strerror or e}") from None
    display = _display()
    _write_out(lambda out: CHECK_RENDERERS[fmt](report, out, display=display))
    if not report.passed:
        raise typer.Exit(EXIT_FINDINGS)


def _write_file(path: str, data: bytes) -> None:
    """Write a whole file; never waits on a FIFO, never writes into anything but a regular file."""
    import errno
    import stat

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC, 0o644)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        os.ftruncate(fd, 0)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


@app.command(epilog=EXIT_CODES_HELP)
def explain(
    target: Annotated[str, typer.Argument(
        metavar="ID[/PROCESS]", help="A container id (or namespace/id) or unique prefix, optionally /process.")],
    root: Annotated[Optional[str], typer.Option("--root", metavar="ROOT", help="The state root (default as for scan).")] = None,
    proc_root: ProcRootOpt = None,
    offline: OfflineOpt = False,
    image_root: ImageRootOpt = None,
    runc_root: RuncRootOpt = None,
    containerd_root: ContainerdRootOpt = None,
    containerd_version: ContainerdVersionOpt = None,
    layout: LayoutOpt = None,
    format: Annotated[str, typer.Option("--format", "-f", metavar="FORMAT", help="text or json.")] = "text",
) -> None:
    """Everything recover knows about one container or process: its files, the evidence behind
    each verdict step by step, the runtime's and the shim's logs, its events, a timeline, and what
    containerd and `recover repair` would do.
    """
    from .explain import ExplainError, build_explanation
    from .explain_text import render_explanation

    if format not in ("text", "json"):
        raise _fail("--format must be one of: text, json")
    with _open_scan(root, proc_root, offline, None, image_root, runc_root, containerd_root, layout,
                    containerd_version=containerd_version) as s:
        try:
            doc = build_explanation(s, target)
        except ExplainError as e:
            raise _fail(str(e)) from None
    _write_out(lambda out: render_explanation(doc, out, format))


@app.command()
def rules(
    format: Annotated[str, typer.Option("--format", "-f", metavar="FORMAT", help="table or json.")] = "table",
) -> None:
    """Print the catalog of finding codes: severity, title, and what to do."""
    from .rules import RULES

    from .render import render_rules

    if format not in ("table", "json"):
        raise _fail("--format must be one of: table, json")
    display = _display()
    _write_out(lambda out: render_rules(list(RULES.values()), out, format, display))


@app.command(epilog=EXIT_CODES_HELP)
def repair(
    root: RootArg = None,
    apply: Annotated[bool, typer.Option("--apply", help="Carry the plan out. Without it: print the plan, change nothing.")] = False,
    kill_orphans: Annotated[bool, typer.Option(
        "--kill-orphans", help="SIGKILL orphaned processes (through a pidfd) and record 137.")] = False,
    quarantine: Annotated[Optional[str], typer.Option(
        "--quarantine", metavar="DIR", help="Move container dirs that containerd would delete out of the root, whole.")] = None,
    journal: Annotated[Optional[str], typer.Option(
        "--journal", metavar="PATH", help="Where to append the journal. Default: ROOT.recover-journal.jsonl beside ROOT.")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Write even while a daemon runs on ROOT, without a live /proc, or move live containers.")] = False,
    undo: Annotated[Optional[str], typer.Option(
        "--undo", metavar="JOURNAL", help="Revert what a journal recorded, where files are still as it left them.")] = None,
    proc_root: RepairProcRootOpt = None,
    containerd_version: ContainerdVersionOpt = None,
    container: ContainerOpt = None,
    format: Annotated[str, typer.Option("--format", "-f", metavar="FORMAT", help="table or json.")] = "table",
) -> None:
    """Write what the daemon should have written, in a containerd 0.2 root: exit statuses for
    vanished, reused and zombie processes, pid files from live shims; optionally kill orphans and
    move doomed dirs out.

    Never deletes, never overwrites a valid exitStatus, never touches a running process.
    Every change is re-verified first and journalled. Run it BEFORE restarting the daemon.

    Refuses (exit 4, writing nothing) a containerd 1.x/2.x state dir (scan, check, explain and
    guard judge it), a dir that is not a root it reads, a root a containerd daemon runs on,
    a root another repair holds the lock of, and kills from a copy or beside a captured proc dir.
    """
    import orjson

    from . import repair as rp
    from .around import daemons_on_root
    from .fsread import printable
    from .render import REPAIR_RENDERERS, RepairFormat

    proc_root = proc_root or "/proc"

    try:
        fmt = RepairFormat(format)
    except ValueError:
        raise _fail(f"--format must be one of: {', '.join(f.value for f in RepairFormat)}") from None
    display = _display()
    if undo is not None:
        _undo(undo, fmt, display)
        return
    if quarantine is not None and (problem := _unwritable("--quarantine", quarantine, is_dir=True)):
        raise _fail(problem)
    meta = {"root": root, "apply": apply, "journal": None}

    def refuse(message: str) -> typer.Exit:
        """A refusal (exit 4): the message on stderr; under -f json, a recover.repair/1 document
        that says it, with no action, so that the output stays well-formed whatever happens."""
        if fmt is RepairFormat.json:
            doc = {"schema": "recover.repair/1", **meta, "refused": message, "actions": [], "summary": {}}
            _write_out(lambda out: out.write(orjson.dumps(doc) + b"\n"))
        return _fail(message, EXIT_REFUSED)

    with _open_scan(root, proc_root, False, container, containerd_version=containerd_version,
                    not_a_root=refuse) as s:
        meta["root"] = s.root.path
        if s.generation.repairer is None:
            raise refuse(f"refusing: {s.root.path} is a {s.generation.name} root ({s.generation.daemon}); repair writes only "
                         "in containerd 0.2 roots (`recover scan` judges it)")
        if quarantine is not None:
            inside = os.path.realpath(quarantine)
            if inside == s.root.real or inside.startswith(s.root.real.rstrip("/") + "/"):
                raise _fail(f"--quarantine {quarantine} is inside the root: containerd would load what is moved there")
        opts = rp.Options(kill_orphans=kill_orphans, quarantine=quarantine, force=force)
        journal_path = journal or rp.default_journal(s.root.real)
        meta["journal"] = journal_path if apply else None
        # judged whole before anything is done: whether kills may happen depends on every shim
        judged = list(s.containers())
        no_kills = rp.kill_refusal(judged, s.root.real, proc_root, s.live_shim_works_here(), force) if kill_orphans else None
        found = daemons_on_root(s.host, s.own) if s.host is not None else None
        daemons = [*found.on, *found.untold] if found is not None else []
        if not apply:
            if daemons:
                _note(f"recover: note: a containerd daemon runs on this root ({daemons[0]}); --apply will refuse")
            if no_kills:
                _note(f"recover: note: --apply will refuse to kill: {no_kills}")
            actions = list(rp.run(s.generation.repairer, judged, opts, None))
            _write_out(lambda out: REPAIR_RENDERERS[fmt](actions, meta, out, display=display))
            return
        if no_kills:
            raise refuse(f"refusing to kill: {no_kills}")
        if not s.host_facts.live and not force:
            raise _fail(f"--apply needs the live /proc to re-verify every target ({proc_root} is not one); "
                        "--force to write anyway")
        if daemons and not force:
            raise refuse(f"refusing: a containerd daemon runs on {s.root.real}: {'; '.join(daemons)} "
                         "(stop it, or --force)")
        if problem := _unwritable("--journal", journal_path):
            raise _fail(problem)
        def said(action: rp.Action) -> None:
            if action.result in ("applied", "skipped", "failed"):
                _note(f"recover: {action.result} {action.kind} {printable(action.rel)}"
                      + (f": {action.detail}" if action.detail else ""))

        try:
            actions = rp.apply_plan(s.generation.repairer, judged, s.root.real, proc_root, opts, journal_path, said)
        except rp.Refused as e:
            raise refuse(f"refusing: {e}") from None
        except rp.CannotWrite as e:
            raise _fail(str(e)) from None
        _write_out(lambda out: REPAIR_RENDERERS[fmt](actions, meta, out, display=display))
        if any(a.result in ("skipped", "failed") for a in actions):
            raise typer.Exit(EXIT_FINDINGS)


def _undo(journal_path: str, fmt, display) -> None:
    from . import repair as rp
    from .render import UNDO_RENDERERS

    try:
        entries = rp.read_journal(journal_path)
        log = rp.Journal(journal_path, create=False)
    except OSError as e:
        raise _fail(f"--undo {journal_path}: {e.strerror or e}") from None
    except rp.NotAJournal as e:
        raise _fail(f"--undo: {e}") from None
    try:
        reverted = rp.undo(entries, log)
    finally:
        log.close()
    _write_out(lambda out: UNDO_RENDERERS[fmt](reverted, journal_path, out, display=display))
    if any(r.result == "not-reverted" for r in reverted):
        raise typer.Exit(EXIT_FINDINGS)


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
    if layout == "containerd-runtime-v2":
        from .demo_v2 import CannotRun, run_demo_v2

        try:
            _write_out(lambda out: run_demo_v2(out, _note, keep=keep))
        except CannotRun as e:
            raise _fail(str(e)) from None
        return
    if layout != "containerd-0.2":
        raise _fail("--layout must be one of: containerd-0.2, containerd-runtime-v2")
    from .demo import run_demo

    display = _display()
    _write_out(lambda out: run_demo(out, _note, keep=keep, display=display))


def main() -> None:
    """Console entry point: a stop signal exits 128 + its number after cleanup; unexpected errors
    exit 3, never the code that means "findings"."""
    from .stop import Stopped, install

    install()
    try:
        app()
    except SystemExit:
        raise
    except Stopped as e:
        sys.exit(128 + e.signum)
    except Exception:  # noqa: BLE001 - the top-level handler of a CLI
        traceback.print_exc(file=sys.stderr)
        _note("recover: internal error (a bug in recover); the traceback is above")
        sys.exit(EXIT_INTERNAL)


# --- guard: recover before every daemon start (systemd's ExecStartPre=) ----------------------

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

    from . import guard as gd

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
        argv = [*_recover_command(), "guard", "--policy", policy, "--unit", unit] + (
            ["--kill-orphans"] if kill_orphans else [])
        for flag, value in (("--timeout", None if timeout is None else f"{timeout:g}"),
                            ("--containerd-version", containerd_version),
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
        decision = _guard_judge(root, proc_root, image_root, settings, say, containerd_version, unit)
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
                 containerd_version: str | None, unit: str):
    from . import guard as gd
    from .around import Surroundings
    from .classify import DEFAULT_ROOTS
    from .scan import default_root

    if root == "":
        raise _fail("the root is an empty string, not a path")
    path = root if root is not None else default_root(Surroundings(image_root))
    if path is None or not os.path.lexists(path):  # a first start: the daemon makes its root
        say(f"no state root at {path or ' or '.join(DEFAULT_ROOTS)}: nothing to judge; the start goes on")
        return None
    return gd.judge(lambda: _open_scan(path, proc_root, False, None, image_root, containerd_version=containerd_version,
                                       unit=unit), settings, say)


def _unit_mismatch(unit: str, root: str | None) -> str | None:
    """What guard.unit_mismatch says of the root the installed guard would judge (ROOT, else the
    default root this host has); None when there is none yet."""
    from . import guard as gd
    from .classify import classify
    from .fsread import OpenRoot, RootError
    from .scan import default_root

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
    from . import guard as gd

    try:
        gd.install(path, text)
    except gd.Refused as e:
        raise _fail(f"refusing: {e}", EXIT_REFUSED) from None
    except OSError as e:
        raise _fail(f"{path}: {e.strerror or e}") from None
    typer.echo(f"wrote {path}:\n{text}then run: systemctl daemon-reload")


def _guard_uninstall(path: str) -> None:
    from . import guard as gd

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
