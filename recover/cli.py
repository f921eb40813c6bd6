"""The command line.  The only module that prints or exits; everything else returns values."""

from __future__ import annotations

import sys
import traceback
from typing import Annotated, Optional

import typer

EXIT_OK = 0  # the root was scanned, whatever was found
EXIT_FINDINGS = 1  # check: findings at or above --fail-on remain
EXIT_USAGE = 2  # bad options, or a root that is not a readable directory
EXIT_INTERNAL = 3  # a bug in recover: never means "findings"

EXIT_CODES_HELP = """\b
Exit codes:
  0  scanned (scan reports; it does not judge the root by its exit code)
  2  usage error, or ROOT is not a readable directory
  3  internal error in recover (a bug: please report it)"""

app = typer.Typer(
    name="recover",
    help="Judge a containerd 0.2.x state root after a crash, before the daemon restarts.\n\n"
         "containerd 0.2 (docker-containerd in Docker 1.11-1.13) deletes evidence, leaks live "
         "containers, kills the wrong process or crashes when it restarts over a damaged root. "
         "recover reads the root and /proc, says what really happened to every process, and what "
         "containerd would do.\n\n" + EXIT_CODES_HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)


def _fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    typer.echo(f"recover: {message}", err=True)
    return typer.Exit(code)


RootArg = Annotated[Optional[str], typer.Argument(
    help="The state root. Default: the first that exists of /run/containerd and "
         "/var/run/docker/libcontainerd/containerd.", show_default=False, metavar="ROOT")]
ProcRootOpt = Annotated[str, typer.Option(
    "--proc-root", metavar="DIR", help="A live proc mount, or a captured proc dir laid out like /proc.")]
OfflineOpt = Annotated[bool, typer.Option(
    "--offline", help="Read no proc at all: processes that have not exited are 'unknown'.")]
ContainerOpt = Annotated[Optional[list[str]], typer.Option(
    "--container", "-c", metavar="ID", help="A container id or unique prefix (repeatable).", show_default=False)]


def _resolve_root(root: str | None) -> str:
    from .scan import default_root

    if root is not None:
        return root
    found = default_root()
    if found is None:
        raise _fail("no state root found at /run/containerd or /var/run/docker/libcontainerd/containerd; "
                    "name one (see `recover --help`), or try `recover demo`")
    return found


def _open_scan(root: str | None, proc_root: str, offline: bool, container: list[str] | None):
    from .root import RootError
    from .scan import Scan, SelectionError

    path = _resolve_root(root)
    try:
        return Scan(path, proc_root=proc_root, offline=offline, select=container)
    except RootError as e:
        raise _fail(f"{e}: not a readable directory") from None
    except SelectionError as e:
        raise _fail(str(e)) from None


@app.command(epilog=EXIT_CODES_HELP)
def scan(
    root: RootArg = None,
    proc_root: ProcRootOpt = "/proc",
    offline: OfflineOpt = False,
    format: Annotated[str, typer.Option(
        "--format", "-f", metavar="FORMAT", help="table, json (one document) or jsonl (a line per container, then a summary).")] = "table",
    container: ContainerOpt = None,
) -> None:
    """Read ROOT and /proc, and report a verdict for every process and what containerd would do.

    Scan writes nothing and never opens a FIFO. Run it BEFORE restarting the daemon.
    """
    from .render import RENDERERS, ScanFormat

    try:
        fmt = ScanFormat(format)
    except ValueError:
        raise _fail(f"--format must be one of: {', '.join(f.value for f in ScanFormat)}") from None
    with _open_scan(root, proc_root, offline, container) as s:
        RENDERERS[fmt](s, sys.stdout.buffer)
        sys.stdout.flush()


@app.command()
def demo(
    keep: Annotated[bool, typer.Option("--keep", help="Leave the demo root on disk (processes are still stopped).")] = False,
) -> None:
    """Build a root with real processes (running, exited, orphaned, zombie, pid-reused, vanished,
    not-started), scan it, explain each row, then remove everything it made.
    """
    from .demo import run_demo

    run_demo(sys.stdout.buffer, keep=keep)


def main() -> None:
    """Console entry point: unexpected errors exit 3, never the code that means "findings"."""
    try:
        app()
    except SystemExit:
        raise
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(EXIT_OK)
    except Exception:  # noqa: BLE001 - the top-level handler of a CLI
        traceback.print_exc(file=sys.stderr)
        typer.echo("recover: internal error (a bug in recover); the traceback is above", err=True)
        sys.exit(EXIT_INTERNAL)
