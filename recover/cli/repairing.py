"""repair: the plan, its carrying out, and undo.

Annotations here are evaluated when the module loads (no `from __future__ import annotations`):
typer reads every command's signature at each start, and strings would make it eval() each one."""

import os
from typing import Annotated, Optional

import typer

from . import (EXIT_CODES_HELP, EXIT_FINDINGS, EXIT_REFUSED, ContainerdVersionOpt, ContainerOpt, RepairProcRootOpt,
               RootArg, _display, _fail, _note, _open_scan, _unwritable, _write_out, app)


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

    from .. import repair as rp
    from ..around import daemons_on_root
    from ..fsread import printable
    from ..render import REPAIR_RENDERERS, RepairFormat

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
    from .. import repair as rp
    from ..render import UNDO_RENDERERS

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
