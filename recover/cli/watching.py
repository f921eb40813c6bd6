"""`recover watch`: the fleet's end (recover/watch.py).
Annotations here are evaluated when the module loads (no `from __future__ import annotations`):
typer reads them."""

import os
import re
from typing import Annotated, Optional

import typer

from . import (ContainerdRootOpt, ContainerdVersionOpt, DockerConfigOpt, DockerRootOpt, ImageRootOpt, ProcRootOpt,
               RootArg, RuncRootOpt, _check_proc_root, _fail, _note, _open_scan, _unwritable, app)


@app.command()
def watch(
    root: RootArg = None,
    textfile: Annotated[str, typer.Option(
        "--textfile", metavar="FILE", help="The node_exporter textfile to write (e.g. "
        "/var/lib/node_exporter/textfile_collector/recover.prom), whole at each scan; nothing else is written.")]
        = "",
    interval: Annotated[float, typer.Option(
        "--interval", metavar="SECONDS", help="Seconds from one scan's start to the next.")] = 60.0,
    upgrade_to: Annotated[Optional[list[str]], typer.Option(
        "--upgrade-to", metavar="VERSION", show_default=False,
        help="Also judge the root for this containerd version (the next release: what an upgrade's first start "
             "would do); repeatable.")] = None,
    count: Annotated[Optional[int], typer.Option(
        "--count", metavar="N", show_default=False, help="Stop after N scans (default: until SIGTERM).")] = None,
    proc_root: ProcRootOpt = None,
    image_root: ImageRootOpt = None,
    runc_root: RuncRootOpt = None,
    containerd_root: ContainerdRootOpt = None,
    containerd_version: ContainerdVersionOpt = None,
    docker_root: DockerRootOpt = None,
    docker_config: DockerConfigOpt = None,
) -> None:
    """Rescan ROOT every --interval seconds and write its metrics to --textfile for node_exporter's
    textfile collector: what a restart (and, with --upgrade-to, an upgrade) would do on this node.

    A root that is missing or unreadable for a while is said in the metrics (recover_scan_ok 0),
    not an end. Stops cleanly on SIGTERM or SIGINT.
    """
    from ..generations import daemon_version_problem
    from ..stop import Stopped
    from ..watch import CannotScan, watch as watch_loop

    if not textfile:
        raise _fail("--textfile is required: the file node_exporter's textfile collector reads (*.prom)")
    if not textfile.endswith(".prom"):
        raise _fail(f"--textfile {textfile}: node_exporter's textfile collector reads only *.prom files")
    if (problem := _unwritable("--textfile", textfile)) is not None:
        raise _fail(problem)
    if not interval > 0:
        raise _fail("--interval must be more than 0 seconds")
    if count is not None and count < 1:
        raise _fail("--count must be at least 1")
    _check_proc_root(proc_root, False)
    for version in [*(upgrade_to or []), *([containerd_version] if containerd_version else [])]:
        if (problem := daemon_version_problem(version)) is not None:
            raise _fail(problem)
    if "all" in (upgrade_to or []):
        raise _fail("--upgrade-to all: name the version the upgrade installs (e.g. 2.3.4)")
    upgrade_to = list(dict.fromkeys(upgrade_to or []))  # one judgement (one set of series) per version

    def opener(version: Optional[str]):
        def open_scan():
            try:  # the root may come and go: each time, what it is then (said on stderr, once a scan)
                return _open_scan(root, proc_root, False, None, image_root, runc_root, containerd_root,
                                  containerd_version=version, docker_root=docker_root, docker_config=docker_config)
            except typer.Exit:
                raise CannotScan() from None
        return open_scan

    from ..scan import default_root

    # the root as its node names it: one reached through /proc/<pid>/root (a DaemonSet's view of
    # the host's mount namespace) is labelled with the path inside
    label = os.path.abspath(root) if root else default_root() or "/run/containerd"
    if (inside := re.fullmatch(r"/proc/\d+/root(/.*)", label)) is not None:
        label = inside.group(1)
    try:
        watch_loop(label, opener(containerd_version), [opener(v) for v in upgrade_to or []], textfile, interval,
                   lambda line: _note(f"recover watch: {line}"), count)
    except Stopped as e:
        _note(f"recover watch: stopped by signal {e.signum}; {textfile} holds the last scan")
