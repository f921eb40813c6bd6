"""repair: the plan, its carrying out, and undo.

Annotations here are evaluated when the module loads (no `from __future__ import annotations`):
typer reads every command's signature at each start, and strings would make it eval() each one."""

import os
from typing import Annotated, Optional

import typer

from . import (EXIT_CODES_HELP, EXIT_FINDINGS, EXIT_REFUSED, ContainerdRootOpt, ContainerdVersionOpt, ContainerOpt, DockerConfigOpt, DockerRootOpt,
               RepairProcRootOpt, RootArg, RuncRootOpt, _display, _fail, _note, _open_scan, _unwritable, _write_out,
               app)


@app.command(epilog=EXIT_CODES_HELP)
def repair(
    root: RootArg = None,
    apply: Annotated[bool, typer.Option("--apply", help="Carry the plan out. Without it: print the plan, change nothing.")] = False,
    kill_orphans: Annotated[bool, typer.Option(
        "--kill-orphans", help="containerd 0.2: SIGKILL orphaned processes (through a pidfd) and record 137.")] = False,
    stop_orphans: Annotated[bool, typer.Option(
        "--stop-orphans", help="containerd 1.x/2.x: stop what the restart would SIGKILL cleanly instead: SIGTERM, "
                               "--grace seconds, then SIGKILL (through a pidfd).")] = False,
    grace: Annotated[float, typer.Option(
        "--grace", metavar="SECONDS", help="With --stop-orphans: how long a process has to exit after SIGTERM.")] = 10.0,
    quarantine: Annotated[Optional[str], typer.Option(
        "--quarantine", metavar="DIR", help="containerd 0.2: move container dirs that containerd would delete out of "
                                            "the root, whole.")] = None,
    journal: Annotated[Optional[str], typer.Option(
        "--journal", metavar="PATH", help="Where to append the journal. Default: ROOT.recover-journal.jsonl beside ROOT.")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Write even while a daemon runs on ROOT, kill in a root not told to be the live one, or "
                        "move live containers.")] = False,
    undo: Annotated[Optional[str], typer.Option(
        "--undo", metavar="JOURNAL", help="Revert what a journal recorded, where files are still as it left them.")] = None,
    proc_root: RepairProcRootOpt = None,
    runc_root: RuncRootOpt = None,
    containerd_root: ContainerdRootOpt = None,
    containerd_version: ContainerdVersionOpt = None,
    docker_root: DockerRootOpt = None,
    docker_config: DockerConfigOpt = None,
    container: ContainerOpt = None,
    format: Annotated[str, typer.Option("--format", "-f", metavar="FORMAT", help="table or json.")] = "table",
) -> None:
    """Save what the daemon's restart would kill or lose, BEFORE restarting it.

    containerd 0.2: write what the daemon should have written (exit statuses for vanished, reused
    and zombie processes, pid files from live shims); optionally kill orphans and move doomed dirs
    out. containerd 1.x/2.x, for the version judged: write back the file that names a live shim's
    socket (address, or bootstrap.json on 2.x), resume a stopped shim, write an exit only a live
    shim holds into CRI's checkpoint (else the report), optionally stop cleanly what the restart
    would SIGKILL.

    Never deletes, never overwrites a valid exit status, never signals a process it has not
    re-verified through a pidfd. Every change is re-verified first and journalled (--undo).

    Refuses (exit 4, writing nothing) a dir that is not a root it reads, a root a containerd daemon
    runs on, a copy of a live root, a root read through another mount namespace (/proc/PID/root)
    or beside a captured proc dir, a root another repair holds the lock of, and kills where the
    live root cannot be told.
    """
    import orjson

    from .. import repair as rp
    from ..around import daemons_on_root
    from ..fsread import printable
    from ..render_repair import REPAIR_RENDERERS, RepairFormat

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
    if not grace >= 0:
        raise _fail(f"--grace {grace:g}: a number of seconds, 0 or more")
    meta = {"root": root, "apply": apply, "journal": None}

    def refuse(message: str) -> typer.Exit:
        """A refusal (exit 4): the message on stderr; under -f json, a recover.repair/1 document
        that says it, with no action, so that the output stays well-formed whatever happens."""
        if fmt is RepairFormat.json:
            doc = {"schema": "recover.repair/1", **meta, "refused": message, "actions": [], "summary": {}}
            _write_out(lambda out: out.write(orjson.dumps(doc) + b"\n"))
        return _fail(message, EXIT_REFUSED)

    with _open_scan(root, proc_root, False, container, runc_root=runc_root, containerd_root=containerd_root,
                    containerd_version=containerd_version, docker_root=docker_root, docker_config=docker_config, not_a_root=refuse) as s:
        meta["root"] = s.root.path
        repairer = s.generation.repairer
        v02 = "kill-orphan" in repairer.kinds
        for flag, given, ours in (("--kill-orphans", kill_orphans, v02), ("--quarantine", quarantine is not None, v02),
                                  ("--stop-orphans", stop_orphans, not v02)):
            if given and not ours:
                raise _fail(f"{flag} does not apply to a {s.generation.name} root ({s.generation.daemon})")
        if quarantine is not None:
            inside = os.path.realpath(quarantine)
            if inside == s.root.real or inside.startswith(s.root.real.rstrip("/") + "/"):
                raise _fail(f"--quarantine {quarantine} is inside the root: containerd would load what is moved there")
        opts = rp.Options(kill_orphans=kill_orphans, stop_orphans=stop_orphans, grace=grace, quarantine=quarantine,
                          force=force)
        journal_path = journal or rp.default_journal(s.root.real)
        meta["journal"] = journal_path if apply else None
        # judged whole before anything is done: whether it may act at all depends on every process
        judged = list(s.containers())
        planned = list(rp.run(repairer, judged, opts, None))
        signals = any(a.kind in repairer.signals for a in planned)
        refusal = rp.write_refusal(judged, s.root.real, proc_root, s.host_facts.live, s.around.image_root)
        no_kills = rp.kill_refusal(judged, s.root.real, proc_root, s.live_shim_works_here(), force) \
            if signals and refusal is None else None
        found = daemons_on_root(s.host, s.own) if s.host is not None else None
        daemons = [*found.on, *found.untold] if found is not None else []
        if not apply:
            for problem in (refusal, no_kills and f"to kill: {no_kills}"):
                if problem:
                    _note(f"recover: note: --apply will refuse {problem}")
            if daemons:
                _note(f"recover: note: a containerd daemon runs on this root ({daemons[0]}); --apply will refuse")
            _write_out(lambda out: REPAIR_RENDERERS[fmt](planned, meta, out, display=display))
            return
        if refusal:
            raise refuse(f"refusing: {refusal}")
        if no_kills:
            raise refuse(f"refusing to kill: {no_kills}")
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
            actions = rp.apply_plan(repairer, judged, s.root.real, proc_root, opts, journal_path, said)
        except rp.Refused as e:
            raise refuse(f"refusing: {e}") from None
        except rp.CannotWrite as e:
            raise _fail(str(e)) from None
        _write_out(lambda out: REPAIR_RENDERERS[fmt](actions, meta, out, display=display))
        if any(a.result in ("skipped", "failed") for a in actions):
            raise typer.Exit(EXIT_FINDINGS)


def _undo(journal_path: str, fmt, display) -> None:
    from .. import repair as rp
    from ..render_repair import UNDO_RENDERERS

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
