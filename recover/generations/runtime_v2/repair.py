"""What `recover repair` does in a containerd 1.6/1.7/2.x state dir, for the daemon version judged:
save what the restart would kill or lose.

- write-address / write-bootstrap-json: the file that names the shim's socket is missing or broken
  (or, on 2.x, names a task API its shim does not serve), and its live shim is seen listening on a
  socket: write it back as the version judged reads it (1.6/1.7 `address`, 2.x bootstrap.json
  version 3), so that the daemon reconnects instead of killing a healthy task;
- resume-shim: a stopped shim blocks the restart and gets its task killed: SIGCONT, after its
  identity (start ticks, stopped) is checked through a pidfd;
- write-cri-exit: an exit only the live shim holds, which the restart loses (CRI would record 255
  "Unknown"): asked of the shim again, written into CRI's status checkpoint (same JSON, mode 0600,
  replaced atomically) as CRI itself would have recorded it;
- stop-orphan (--stop-orphans): what the restart would SIGKILL (a dead or unreachable shim) is
  stopped cleanly instead: SIGTERM, --grace seconds, then SIGKILL, through a pidfd.
An exit the restart loses and no file can keep is said in the plan (and so in the report).

The plan is pure (from judgements and the predictor's `restore`); each action re-verifies its
target just before it acts through the shared applier (recover/repair/)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from dataclasses import replace

import orjson

from ...fsread import RECOVER_TEMP_PREFIX, printable
from ...host import read_stat
from ...judge import ContainerJudgement
from ...repair import KILL_TIMEOUT_S, NONE, Action, Applier, Options, Skip, read_small
from ...sockets import held_sockets, unix_listeners
from .reader import TASKS_DIR, unhidden

LIVE = ("running", "orphaned")
WRITES = {"address": "write-address", "bootstrap.json": "write-bootstrap-json"}
FILE_MODE = 0o644  # as containerd and its shims write address and bootstrap.json
CRI_MODE = 0o600  # as CRI writes its status checkpoint


# --- plan ----------------------------------------------------------------------------------

def plan_task(c: ContainerJudgement, opts: Options) -> Iterator[Action]:
    """The actions for one judged task, in order.  Pure."""
    x = c.extra
    shim = x.get("shim") or {}
    would = c.containerd_would
    seen_shim = {"pid": shim.get("pid"), "start_ticks": shim.get("start_ticks")}
    saved = False  # after this plan the daemon reaches the live shim
    if shim.get("state") == "stopped" and would == "block-then-kill" and shim.get("start_ticks") is not None:
        yield Action(c.key, None, "resume-shim", "SIGCONT", f"its shim (pid {shim['pid']}) is stopped: the restart "
                     "would block, then kill the task; resumed, the shim answers and the task is re-adopted",
                     **seen_shim)
        saved = True
    restore = x.get("restore") or {}
    if restore.get("unhide") and shim.get("start_ticks") is not None:
        yield Action(c.key, None, "unhide-bundle", restore["to"], f"containerd skips a dot-named task dir and its "
                     f"shim (pid {shim['pid']}) lives: named {restore['to']} again, the task is re-adopted", **seen_shim)
        saved = True
    elif restore.get("file") and shim.get("start_ticks") is not None:
        why = ("the bundle was emptied" if restore.get("init_pid") else
               f"containerd cannot reach the task's live shim ({_cause(c)})")
        yield Action(c.key, None, WRITES[restore["file"]], restore["content"],
                     f"{why}; its shim listens on {restore['socket']}: write {restore['file']} as the daemon "
                     "judged reads it", **seen_shim)
        if restore.get("init_pid"):
            runc = x.get("runc_state") or {}
            yield Action(c.key, "init", "write-pid", str(restore["init_pid"]), "the bundle was emptied: write "
                         "init.pid from runc's state (its init runs, same start ticks), with the address the "
                         "daemon re-adopts the task", pid=restore["init_pid"], start_ticks=runc.get("start"))
        saved = True
    yield from _plan_exits(c, saved)
    if would == "kill-live-processes" and not saved:
        # the execs first: once the init exits, the kernel SIGKILLs the rest of its pid namespace
        for p in sorted(c.processes, key=lambda p: p.id == "init"):
            if p.verdict not in LIVE or p.observed_start is None:
                continue
            if opts.stop_orphans:
                yield Action(c.key, p.id, "stop-orphan", "SIGTERM", f"containerd would SIGKILL it on restart: stop it "
                             f"cleanly instead (SIGTERM, {opts.grace:g} s, then SIGKILL)", pid=p.pid,
                             start_ticks=p.observed_start)
            else:
                yield Action(c.key, p.id, NONE, None, "containerd would SIGKILL it on restart (--stop-orphans stops "
                             "it cleanly first)")


def _plan_exits(c: ContainerJudgement, saved: bool) -> Iterator[Action]:
    """An exit only the live shim holds, which the restart throws away: into CRI's checkpoint where
    there is one, and said in the plan in every case."""
    if saved or c.containerd_would in ("reconnect", "skip", None):
        return
    cri = c.extra.get("cri") or {}
    socket = (c.extra.get("shim") or {}).get("socket")
    for p in c.processes:
        if p.verdict != "exited" or p.exit_status_source != "shim" or p.exit_status is None:
            continue
        lost = f"exit status {p.exit_status}, which only its live shim holds, is lost on restart"
        if p.id == "init" and cri.get("cri_would") == "record-255-unknown" and cri.get("path") and socket:
            yield Action(c.key, p.id, "write-cri-exit", str(p.exit_status), f"{lost}, and CRI would record 255 "
                         "\"Unknown\": write the true exit code and time into CRI's status checkpoint",
                         pid=p.pid, target=cri["path"], via=socket)
        else:
            yield Action(c.key, p.id, NONE, str(p.exit_status), f"{lost}: recorded in this report")


def _cause(c: ContainerJudgement) -> str:
    why = str(c.extra.get("containerd_would_why") or "")
    return why.split(":", 1)[0] or "its address cannot be used"


# --- carrying it out -------------------------------------------------------------------------

def _bundle(ap: Applier, a: Action):
    namespace, _, task = a.container.partition("/")
    return ap.in_root(TASKS_DIR, namespace, task), ap.root_path(TASKS_DIR, namespace, task)


def _same_shim(ap: Applier, a: Action, *, stopped_ok: bool) -> None:
    assert a.pid is not None
    now = read_stat(ap.proc_root, a.pid)
    if now is None or now.starttime != a.start_ticks or now.exited or (not stopped_ok and now.state in ("T", "t")):
        raise Skip(f"the shim (pid {a.pid}) is no longer the one the plan saw")


def _listened_by(pid: int, proc_root: str, path: str) -> bool:
    """Whether the unix socket file at path is listened on by a socket pid holds (sock_diag)."""
    listeners = unix_listeners()
    if listeners is None:
        return False
    try:
        st = os.lstat(path)
    except OSError:
        return False
    inode = listeners.get((st.st_dev, st.st_ino))
    return inode is not None and inode in held_sockets(os.path.join(proc_root, str(pid)))


def _socket_of(a: Action) -> str:
    assert a.value is not None
    address = orjson.loads(a.value)["address"] if a.kind == "write-bootstrap-json" else a.value
    return str(address).removeprefix("unix://")


def _write_address_file(ap: Applier, a: Action) -> Action:
    name = next(n for n, k in WRITES.items() if k == a.kind)
    _same_shim(ap, a, stopped_ok=True)
    if not _listened_by(a.pid, ap.proc_root, _socket_of(a)):
        raise Skip(f"its shim no longer listens on {_socket_of(a)}")
    opened, path = _bundle(ap, a)
    data = a.value.encode()
    with opened as fd:
        try:
            os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            ap.publish(a, fd, path, name, data, mode=FILE_MODE)
            return replace(a, result="applied")
        before = read_small(fd, name)
        if before == data:
            raise Skip(f"{name} holds it already")
        if before is None:
            raise Skip(f"{name} is no regular file it could replace")
        ap.replace(a, fd, path, name, before, data, mode=FILE_MODE)
    return replace(a, result="applied")


def _write_pid(ap: Applier, a: Action) -> Action:
    assert a.pid is not None
    now = read_stat(ap.proc_root, a.pid)
    if now is None or now.starttime != a.start_ticks or now.exited:
        raise Skip(f"pid {a.pid} is no longer the init runc's state names")
    opened, path = _bundle(ap, a)
    with opened as fd:
        ap.publish(a, fd, path, "init.pid", str(a.pid).encode(), mode=FILE_MODE)
    return replace(a, result="applied")


def _unhide_bundle(ap: Applier, a: Action) -> Action:
    assert a.value is not None
    _same_shim(ap, a, stopped_ok=False)
    namespace, _, hidden = a.container.partition("/")
    src, dest = ap.root_path(TASKS_DIR, namespace, hidden), ap.root_path(TASKS_DIR, namespace, a.value)
    if os.path.lexists(dest):
        raise Skip(f"{a.value} is there: the hidden dir is left as it is")
    ap.move(a, src, dest)
    return replace(a, result="applied", detail=f"renamed {printable(a.value)}")


def _resume_shim(ap: Applier, a: Action) -> Action:
    assert a.pid is not None
    ap.signal(a, a.pid, a.start_ticks, None, signal.SIGCONT, stopped=True,
              undo="a resumed shim is not stopped again: it only answers, as it did before")
    return replace(a, result="applied")


def _write_cri_exit(ap: Applier, a: Action) -> Action:
    """Ask the shim again (the status, and when it exited), then rewrite CRI's checkpoint as CRI's
    own exit handler records an exit: Pid 0, FinishedAt, ExitCode (Reason is derived when asked)."""
    from .shimapi import ProcessState, ask_shim

    assert a.target is not None and a.via is not None and a.value is not None
    namespace, _, task = a.container.partition("/")
    said = ask_shim(a.via, namespace, unhidden(task), [], None, 1.0).init
    if not isinstance(said, ProcessState) or said.status != "STOPPED" or said.pid != a.pid \
            or str(said.exit_status) != a.value or said.exited_at is None:
        raise Skip(f"the shim no longer says the init (pid {a.pid}) exited {a.value}: {said}")
    directory, name = os.path.split(a.target)
    with ap.at(directory) as fd:
        before = read_small(fd, name)
        try:
            doc = orjson.loads(before) if before is not None else None
        except orjson.JSONDecodeError:
            doc = None
        if not isinstance(doc, dict) or doc.get("FinishedAt") or not doc.get("StartedAt"):
            raise Skip("CRI's checkpoint no longer says the container runs")
        doc.update(Pid=0, FinishedAt=said.exited_at, ExitCode=said.exit_status)  # as CRI's exit handler does
        ap.replace(a, fd, directory, name, before, orjson.dumps(doc), mode=CRI_MODE)
    return replace(a, result="applied", detail=f"ExitCode {said.exit_status}, FinishedAt {said.exited_at}")


def _stop_orphan(ap: Applier, a: Action, grace: float) -> Action:
    assert a.pid is not None
    now = read_stat(ap.proc_root, a.pid)
    if now is None or (now.starttime == a.start_ticks and now.exited):
        return replace(a, result="applied", detail="it had exited already")  # what was asked is so
    if ap.signal(a, a.pid, a.start_ticks, None, signal.SIGTERM, wait=grace,
                 undo="a stopped process cannot be revived"):
        return replace(a, result="applied", detail="exited on SIGTERM")
    if not ap.signal(a, a.pid, a.start_ticks, None, signal.SIGKILL, wait=KILL_TIMEOUT_S,
                     undo="a killed process cannot be revived"):
        return replace(a, result="failed", detail=f"pid {a.pid} did not die within {KILL_TIMEOUT_S:g} s of SIGKILL")
    return replace(a, result="applied", detail=f"SIGKILLed after {grace:g} s")


class Repairer:
    """recover/repair's questions, answered for a runtime-v2 state dir."""

    kinds = ("write-address", "write-bootstrap-json", "write-pid", "unhide-bundle", "resume-shim", "write-cri-exit",
             "stop-orphan")
    signals = ("resume-shim", "stop-orphan")
    plan = staticmethod(plan_task)

    def carry_out(self, applier: Applier, action: Action, opts: Options) -> Action:
        if action.kind in WRITES.values():
            return _write_address_file(applier, action)
        if action.kind == "write-pid":
            return _write_pid(applier, action)
        if action.kind == "unhide-bundle":
            return _unhide_bundle(applier, action)
        if action.kind == "resume-shim":
            return _resume_shim(applier, action)
        if action.kind == "write-cri-exit":
            return _write_cri_exit(applier, action)
        if action.kind == "stop-orphan":
            return _stop_orphan(applier, action, opts.grace)
        raise AssertionError(f"no such action: {action.kind}")  # pragma: no cover

    def clean_temp_files(self, applier: Applier, c: ContainerJudgement) -> None:
        """Remove what an interrupted run left in the bundle: temp files are never state."""
        try:
            opened, _ = _bundle(applier, Action(c.key, None, NONE, None, ""))
            with opened as fd:
                for name in os.listdir(fd):
                    if name.startswith(RECOVER_TEMP_PREFIX):
                        try:
                            os.unlink(name, dir_fd=fd)
                        except FileNotFoundError:
                            pass
        except OSError:
            return


REPAIRER = Repairer()
