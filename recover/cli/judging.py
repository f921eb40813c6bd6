"""scan, check, explain and rules: judging a root, as a report, a gate, or one container's evidence.

Annotations here are evaluated when the module loads (no `from __future__ import annotations`):
typer reads every command's signature at each start, and strings would make it eval() each one."""

import os
from typing import Annotated, Optional

import typer

from . import (EXIT_CODES_HELP, EXIT_FINDINGS, ContainerdRootOpt,
               ContainerdVersionOpt, ContainerOpt, DockerConfigOpt, DockerRootOpt, ImageRootOpt, LayoutOpt, OfflineOpt, ProcRootOpt, RootArg, RuncRootOpt, _display, _fail, _open_scan, _unwritable, _write_out, app)


@app.command(epilog=EXIT_CODES_HELP)
def scan(
    root: RootArg = None,
    proc_root: ProcRootOpt = None,
    offline: OfflineOpt = False,
    image_root: ImageRootOpt = None,
    runc_root: RuncRootOpt = None,
    containerd_root: ContainerdRootOpt = None,
    containerd_version: ContainerdVersionOpt = None,
    docker_root: DockerRootOpt = None,
    docker_config: DockerConfigOpt = None,
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
    from ..render import RENDERERS, ScanFormat

    try:
        fmt = ScanFormat(format)
    except ValueError:
        raise _fail(f"--format must be one of: {', '.join(f.value for f in ScanFormat)}") from None
    display = _display()
    with _open_scan(root, proc_root, offline, container, image_root, runc_root, containerd_root, layout,
                    containerd_version=containerd_version, docker_root=docker_root, docker_config=docker_config) as s:
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
    docker_root: DockerRootOpt = None,
    docker_config: DockerConfigOpt = None,
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

    from .. import check as ck
    from ..render import CHECK_RENDERERS, CheckFormat
    from ..rules import SEVERITIES

    try:
        fmt = CheckFormat(format)
    except ValueError:
        raise _fail(f"--format must be one of: {', '.join(f.value for f in CheckFormat)}") from None
    if fail_on not in SEVERITIES:
        raise _fail(f"--fail-on must be one of: {', '.join(SEVERITIES)}")
    try:
        known = ck.read_baseline(baseline) if baseline else frozenset()
    except OSError as e:
        raise _fail(f"--baseline {baseline}: {e.strerror or e}") from None
    except ValueError as e:
        raise _fail(f"--baseline: {e}") from None
    for flag, value in (("--select", select), ("--ignore", ignore)):
        if unknown := ck.unknown_codes(ck.parse_codes(value)):
            raise _fail(f"{flag} {','.join(unknown)}: no finding code starts with it (see `recover rules`)")
    if write_baseline and (problem := _unwritable("--write-baseline", write_baseline)):
        raise _fail(problem)
    gate = ck.Gate(ck.parse_codes(select), ck.parse_codes(ignore), fail_on, known)
    with _open_scan(root, proc_root, offline, container, image_root, runc_root, containerd_root, layout,
                    containerd_version=containerd_version, docker_root=docker_root, docker_config=docker_config) as s:
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
    docker_root: DockerRootOpt = None,
    docker_config: DockerConfigOpt = None,
    layout: LayoutOpt = None,
    format: Annotated[str, typer.Option("--format", "-f", metavar="FORMAT", help="text or json.")] = "text",
) -> None:
    """Everything recover knows about one container or process: its files, the evidence behind
    each verdict step by step, the runtime's and the shim's logs, its events, a timeline, and what
    containerd and `recover repair` would do.
    """
    from ..explain import ExplainError, build_explanation, target_problem
    from ..explain_text import render_explanation

    if format not in ("text", "json"):
        raise _fail("--format must be one of: text, json")
    if (problem := target_problem(target)) is not None:
        raise _fail(problem)
    with _open_scan(root, proc_root, offline, None, image_root, runc_root, containerd_root, layout,
                    containerd_version=containerd_version, docker_root=docker_root, docker_config=docker_config) as s:
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
    from ..render import render_rules
    from ..rules import RULES

    if format not in ("table", "json"):
        raise _fail("--format must be one of: table, json")
    display = _display()
    _write_out(lambda out: render_rules(list(RULES.values()), out, format, display))
