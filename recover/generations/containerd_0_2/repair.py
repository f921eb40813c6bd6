"""What `recover repair` does in a containerd 0.2 root: write what the daemon should have written
(exit statuses, pid files from live shims), optionally kill orphans and move doomed container dirs
out.  The plan is pure (from judgements); each action re-verifies its target against a fresh read
of /proc just before it acts through the shared applier (recover/repair/)."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from dataclasses import replace
from typing import Literal

from ...fsread import RECOVER_TEMP_PREFIX, printable
from ...host import read_stat, wait_status_to_exit
from ...judge import ContainerJudgement, ProcessJudgement
from ...repair import (
    KILL_TIMEOUT_S,
    NONE,
    Action,
    Applier,
    Options,
    Skip,
    free_name,
    read_small,
)
from . import files as layout

ActionKind = Literal["write-exit-status", "rewrite-exit-status", "kill-orphan", "rewrite-pid", "quarantine", "none"]


# --- plan ----------------------------------------------------------------------------------

def plan_container(c: ContainerJudgement, opts: Options) -> Iterator[Action]:
    """The actions for one judged container, in order.  Pure."""
    drop = c.containerd_would == "drop-container" and not _saved_by_rewrite_pid(c)
    for p in c.processes:
        yield from _plan_process(c, p, opts, drop)
    if drop:
        yield _plan_quarantine(c, opts)


def _saved_by_rewrite_pid(c: ContainerJudgement) -> bool:
    """Dropped only because no pid file loads (rule 2), and this plan rewrites one: once it is
    written the process loads and containerd keeps the container, so it is repaired, not moved."""
    return any(f.code == "R002" for f in c.findings) and any(
        p.pid_from_shim and p.verdict in ("running", "orphaned") for p in c.processes)


def _plan_process(c: ContainerJudgement, p: ProcessJudgement, opts: Options, drop: bool) -> Iterator[Action]:
    def act(kind: ActionKind, value: object, reason: str, **seen) -> Action:
        return Action(c.id, p.id, kind, None if value is None else str(value), reason, **seen)

    seen = {"pid": p.pid, "start_ticks": p.observed_start, "ppid": p.ppid}
    codes = {f.code for f in p.findings}
    if p.containerd_would == "use-exit-status" and p.verdict != "exited":
        # a status the process cannot have (F039), or beside a process that still runs (R010)
        yield act(NONE, None, f"exitStatus holds a status containerd reads as valid, but the verdict is "
                  f"{p.verdict}: a valid exitStatus is never overwritten; move it out by hand if containerd "
                  "must not take it")
    elif p.verdict in ("vanished", "pid-reused") and not drop:
        why = "the process is gone" if p.verdict == "vanished" else f"pid {p.pid} is now another process"
        # start_ticks: the RECORDED process's, re-checked to be still gone before writing
        yield act("write-exit-status", 255, f"{why} and its exit was missed: 255, as containerd would record "
                  "(without ever signalling the pid)", pid=p.pid, start_ticks=p.recorded_start)
    elif p.verdict == "zombie" and p.exit_status is not None and not drop:
        if p.shim_state in ("stopped", "gone"):
            yield act("write-exit-status", p.exit_status, f"the process exited with {p.exit_status} (stat field 52); "
                      f"its shim is {p.shim_state} and will not record it", **seen)
        else:
            yield act(NONE, None, "a zombie whose shim is alive: the shim reaps it and records the status itself")
    elif p.verdict == "exited" and codes & {"F036", "F037"} and not drop:
        yield act("rewrite-exit-status", p.exit_status, "containerd cannot parse the recorded status: rewrite it "
                  "as a bare decimal, the same value")
    elif p.verdict == "orphaned":
        if opts.kill_orphans:
            yield act("kill-orphan", 137, "its shim is gone: SIGKILL through a pidfd, then record 137 as "
                      "containerd would", **seen)
        else:
            later = {"kill-record-137": "containerd would SIGKILL it on restart",
                     "keep-running": "containerd would never notice it (its parent is not pid 1) and never "
                                     "record its exit"}.get(p.containerd_would or "", "nothing records its exit")
            yield act(NONE, None, f"left running (no --kill-orphans): {later}")
    if p.pid_from_shim and p.verdict in ("running", "orphaned"):
        yield act("rewrite-pid", p.pid, "the pid file is missing but the shim's only child is the process: "
                  "rewrite pid and starttime so that containerd loads it", **seen)


def _plan_quarantine(c: ContainerJudgement, opts: Options) -> Action:
    live = [p for p in c.processes if p.verdict in ("running", "orphaned", "zombie")]
    running = [p for p in live if p.verdict == "running"]
    reason = "containerd would delete this container dir on restart: move it out whole, keep the evidence"
    if opts.quarantine is None:
        return Action(c.id, None, NONE, None, f"{reason} (give --quarantine DIR)")
    if live and not opts.force and (running or not opts.kill_orphans):
        names = ", ".join(p.id for p in live)
        need = "--force" if running else "--kill-orphans (kills them first) or --force"
        return Action(c.id, None, NONE, None, f"{reason}; not moved: {names} still alive, needs {need}")
    return Action(c.id, None, "quarantine", opts.quarantine, reason)


# --- carrying it out -------------------------------------------------------------------------

def _write_exit_status(ap: Applier, a: Action) -> Action:
    if a.start_ticks is not None and a.pid is not None:
        now = read_stat(ap.proc_root, a.pid)
        if a.value != "255":  # a zombie's status: it must still be that zombie, unreaped
            if now is None or now.starttime != a.start_ticks or not now.exited:
                raise Skip(f"pid {a.pid} is no longer the same unreaped zombie")
            if now.exit_code is not None and str(wait_status_to_exit(now.exit_code)) != a.value:
                raise Skip(f"pid {a.pid}'s exit status changed")
        elif now is not None and now.starttime == a.start_ticks and not now.exited:
            raise Skip(f"pid {a.pid} holds a live process with the recorded start time")
    _publish(ap, a, layout.EXIT_STATUS_FILE, a.value.encode())
    return replace(a, result="applied")


def _rewrite_exit_status(ap: Applier, a: Action) -> Action:
    with ap.in_root(a.container, a.process) as pfd:
        before = read_small(pfd, layout.EXIT_STATUS_FILE)
        if before is None or before == a.value.encode() or layout.go_parse_uint32(before) is not None:
            raise Skip("exitStatus changed since the plan (and a valid status is never overwritten)")
        ap.replace(a, pfd, ap.root_path(a.container, a.process), layout.EXIT_STATUS_FILE, before, a.value.encode())
    return replace(a, result="applied")


def _kill_orphan(ap: Applier, a: Action) -> Action:
    assert a.pid is not None
    if not ap.signal(a, a.pid, a.start_ticks, a.ppid, signal.SIGKILL, wait=KILL_TIMEOUT_S,
                     undo="a killed process cannot be revived"):
        return replace(a, result="failed", detail=f"pid {a.pid} did not die within {KILL_TIMEOUT_S:g} s")
    _publish(ap, a, layout.EXIT_STATUS_FILE, b"137", undo="kept: it records a kill that cannot be undone")
    return replace(a, result="applied")


def _rewrite_pid(ap: Applier, a: Action) -> Action:
    assert a.pid is not None
    now = read_stat(ap.proc_root, a.pid)
    if now is None or now.starttime != a.start_ticks or now.ppid != a.ppid:
        raise Skip(f"pid {a.pid} is no longer the shim's child it was")
    # starttime first: a run that dies between the two leaves no pid file, so that the next run
    # plans this action again and finishes it (the other order would leave starttime unwritten)
    _restore(ap, a, layout.STARTTIME_FILE, str(now.starttime).encode())
    _restore(ap, a, layout.PID_FILE, str(a.pid).encode())
    return replace(a, result="applied")


def _quarantine(ap: Applier, a: Action) -> Action:
    assert a.value is not None
    os.makedirs(a.value, exist_ok=True)
    dest = free_name(a.value, a.container)
    src = ap.root_path(a.container)
    if not os.path.isdir(src) or os.path.islink(src):
        raise Skip("the container dir is gone already")
    ap.move(a, src, dest)
    return replace(a, result="applied", detail=f"moved to {printable(dest)}")


def _publish(ap: Applier, a: Action, name: str, data: bytes, *, undo: str | None = None) -> None:
    with ap.in_root(a.container, a.process) as pfd:
        ap.publish(a, pfd, ap.root_path(a.container, a.process), name, data, undo=undo)


def _restore(ap: Applier, a: Action, name: str, data: bytes) -> None:
    """Publish `name`; or, when it holds what containerd cannot use (empty, NULs, a newline),
    replace it, journalling what it held.  A decimal already there is kept if right, else skipped."""
    with ap.in_root(a.container, a.process) as pfd:
        try:
            os.stat(name, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            ap.publish(a, pfd, ap.root_path(a.container, a.process), name, data)
            return
        before = read_small(pfd, name)
        if before == data:
            return
        if before is None or re.fullmatch(rb"[0-9]+", before):
            raise Skip(f"{name} holds {printable(repr(before))} now; left as it is")
        ap.replace(a, pfd, ap.root_path(a.container, a.process), name, before, data)


_HANDLERS = {"write-exit-status": _write_exit_status, "rewrite-exit-status": _rewrite_exit_status,
             "kill-orphan": _kill_orphan, "rewrite-pid": _rewrite_pid, "quarantine": _quarantine}


class Repairer:
    """recover/repair's questions, answered for a containerd 0.2 root."""

    kinds = tuple(_HANDLERS)
    signals = ("kill-orphan",)
    plan = staticmethod(plan_container)

    def carry_out(self, applier: Applier, action: Action, opts: Options) -> Action:
        return _HANDLERS[action.kind](applier, action)

    def clean_temp_files(self, applier: Applier, c: ContainerJudgement) -> None:
        """Remove what an interrupted run left: temp files are never state."""
        for p in c.processes:
            if not p.temp_files:
                continue
            try:
                with applier.in_root(c.id, p.id) as pfd:
                    for name in p.temp_files:
                        if name.startswith(RECOVER_TEMP_PREFIX):
                            try:
                                os.unlink(name, dir_fd=pfd)
                            except FileNotFoundError:
                                pass
            except OSError:
                continue


REPAIRER = Repairer()
