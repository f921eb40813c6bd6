"""What containerd 1.6-2.x will do to each task when it restarts over a runtime-v2 state dir
(SPEC-v2 §2), and what its CRI plugin will then record.  Pure: records, verdicts and host facts
in, predictions out.

The daemon's restore (runtime/v2 `loadExistingTasks` / `loadShims`), per task dir:
  hidden namespace or task (a dot-name)   -> skipped: its shim and processes live on, untracked
  the bundle cannot be listed, or is empty -> deleted without a word: what runs is leaked
  the shim cannot be reached (no usable address, no socket, shim dead) -> "cleaning up after shim
      disconnected": the shim binary's `delete` runs `runc delete --force`, which SIGKILLs the
      container when runc's state still names its live init (runc checks the start ticks first)
  the shim is stopped                    -> the start blocks (pid and delete time out, 5 s each),
      then runc still SIGKILLs the processes, which stay zombies under the stopped shim
  otherwise                              -> re-adopted as the shim reports it
`TASK_RULES` below is that list, in order; the first rule that decides, decides.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Literal

from ..fsread import printable
from ..judge import ContainerPrediction, ProcessPrediction
from ..layouts.runtime_v2.reader import DEFAULT_GRPC_ADDRESS, TaskFiles, address_for
from ..records import ContainerRecord
from ..rules import finding
from ..value import Value
from ..verdicts import Decision

TaskWould = Literal["reconnect", "kill-live-processes", "clean-up", "clean-up-and-leak",
                    "delete-silently-and-leak", "skip-and-leak", "block-then-kill"]
TASK_WOULD: tuple[TaskWould, ...] = ("reconnect", "kill-live-processes", "clean-up", "clean-up-and-leak",
                                     "delete-silently-and-leak", "skip-and-leak", "block-then-kill")
CriWould = Literal["keep-running", "record-exit", "record-255-unknown"]
CRI_WOULD: tuple[CriWould, ...] = ("keep-running", "record-exit", "record-255-unknown")

LIVE = ("running", "orphaned")  # verdicts of a process that runs (a zombie has exited)


class TaskHost(Value):
    """What the host says about a task, gathered before predicting."""

    proc_read: bool
    shim_pid: int | None
    shim_state: str  # alive, stopped, zombie, gone; unknown (the bundle cannot be listed)
    grpc_address: str | None  # the shim's -address: the daemon's socket
    verdicts: dict[str, str]  # process id -> verdict
    pids: dict[str, int | None]
    runc_init: int | None  # the live init runc's state names (same start ticks): runc can kill it
    shim_children: tuple[int, ...] = ()  # what the live shim still watches (an empty bundle names nothing)
    socket_listened: bool | None = None  # a live socket listens on the socket file (None: not told)


class TaskPrediction(Value):
    would: TaskWould | None  # None: cannot be told
    why: str
    cause: str | None = None  # for a clean-up: why the shim cannot be reached


Rule = Callable[[TaskFiles, TaskHost], TaskPrediction | None]


def _hidden(t: TaskFiles, h: TaskHost) -> TaskPrediction | None:
    if not t.hidden:
        return None
    where = "its namespace" if t.hidden_namespace else "the task dir"
    return TaskPrediction("skip-and-leak", f"{where} is a dot-name: containerd skips it, and {_leaks(h)}")


def _unlisted(t: TaskFiles, h: TaskHost) -> TaskPrediction | None:
    if t.entries is not None:
        return None
    if t.listing_problem and "ermission" in t.listing_problem:
        return TaskPrediction(None, "recover may not list the bundle; containerd, as root, can")
    return TaskPrediction("delete-silently-and-leak", f"the bundle cannot be listed ({t.listing_problem}): "
                          f"containerd deletes it, and {_leaks(h)}")


def _empty(t: TaskFiles, h: TaskHost) -> TaskPrediction | None:
    if not t.empty:
        return None
    return TaskPrediction("delete-silently-and-leak", f"the bundle is empty: containerd deletes it without a "
                          f"word, and {_leaks(h)}")


def _no_proc(t: TaskFiles, h: TaskHost) -> TaskPrediction | None:
    if h.proc_read:
        return None
    return TaskPrediction(None, "whether the shim answers cannot be told without /proc")


def _unreachable(t: TaskFiles, h: TaskHost) -> TaskPrediction | None:
    cause = None
    if t.address_problem is not None:
        cause = t.address_problem
    elif t.socket in ("missing", "not-a-socket"):
        cause = f"the shim's socket {t.socket_path} is {'missing' if t.socket == 'missing' else 'not a socket'}"
    elif h.socket_listened is False:
        cause = (f"nobody listens on the shim's socket file {t.socket_path} (it was replaced: the shim's own "
                 "socket is gone)")
    elif h.shim_state == "gone":
        cause = "its shim is gone"
    elif h.shim_state == "zombie":
        cause = f"its shim (pid {h.shim_pid}) is a zombie"
    if cause is None:
        return None
    return _clean_up(cause, h)


def _stopped(t: TaskFiles, h: TaskHost) -> TaskPrediction | None:
    if h.shim_state != "stopped":
        return None
    live = _live(h)
    return TaskPrediction("block-then-kill", f"its shim (pid {h.shim_pid}) is stopped: the restart blocks about "
                          f"5-10 s (the shim does not answer, and its delete times out), then runc SIGKILLs "
                          f"{live or 'what runs'}, which stay zombies under the stopped shim; the task is not "
                          "listed after the restart, not even once the shim resumes")


def _unknown_transport(t: TaskFiles, h: TaskHost) -> TaskPrediction | None:
    if t.socket != "unknown":
        return None
    return TaskPrediction(None, f"the shim's address {t.address!r} is not a unix socket on this host")


def _reconnect(t: TaskFiles, h: TaskHost) -> TaskPrediction | None:
    exited = [p for p, v in h.verdicts.items() if v == "exited"]
    tail = (f"; {' and '.join(exited)} exited: containerd 1.6 re-adopts the task stopped, with the exit status "
            "its shim kept (the exit event itself is re-sent only within about 15 s of the exit: a client "
            "that missed it, such as a dockerd that stayed up, must ask)" if exited else "")
    return TaskPrediction("reconnect", f"its shim (pid {h.shim_pid}) lives and its socket is there: containerd "
                          f"re-adopts the task as the shim reports it{tail}")


TASK_RULES: tuple[tuple[str, Rule], ...] = (
    ("hidden task or namespace: skipped", _hidden),
    ("bundle cannot be listed: deleted", _unlisted),
    ("empty bundle: deleted silently", _empty),
    ("/proc not read", _no_proc),
    ("shim unreachable (address, socket, shim gone): cleaned up", _unreachable),
    ("shim stopped: blocks, then kills", _stopped),
    ("address is not a unix socket here", _unknown_transport),
    ("otherwise: reconnected", _reconnect),
)


def predict_task(t: TaskFiles, h: TaskHost) -> TaskPrediction:
    for _, rule in TASK_RULES:
        if (p := rule(t, h)) is not None:
            return p
    raise AssertionError("the last rule always decides")  # pragma: no cover


def _live(h: TaskHost) -> str:
    return ", ".join(f"{p} (pid {h.pids[p]})" for p, v in h.verdicts.items() if v in LIVE)


def _running_on(h: TaskHost) -> tuple[str, str]:
    """What of the task still runs, named ("" for none): its processes, and its live shim's other
    children where no pid file names them (an emptied bundle), else the init runc's state names;
    and its shim."""
    live = _live(h)
    named = {pid for p, pid in h.pids.items() if h.verdicts.get(p) in LIVE}
    others = [pid for pid in h.shim_children if pid not in named]
    if others:
        listed = ", ".join(map(str, others))
        live = f"{live} and its shim's other children (pid {listed})" if live else \
            f"its shim's children (pid {listed})"
    elif not live and h.runc_init is not None:
        live = f"its init (pid {h.runc_init}, as runc's state names it)"
    shim = f"its shim (pid {h.shim_pid})" if h.shim_pid is not None and h.shim_state != "gone" else ""
    return live, shim


def _leaks(h: TaskHost) -> str:
    if not h.proc_read:
        return "whatever still runs is leaked"
    live, shim = _running_on(h)
    leaked = " and ".join(x for x in (live, shim) if x)
    return f"{leaked} {'live' if live else 'lives'} on, untracked" if leaked else "nothing of it runs"


def _clean_up(cause: str, h: TaskHost) -> TaskPrediction:
    live = _live(h)
    # the clean-up runs a new shim binary's `delete`: a live shim that cannot be reached is left running
    shim = (f"; its shim (pid {h.shim_pid}) is left running, untracked (it later reports exit 137 for a task "
            "containerd no longer lists)" if h.shim_state in ("alive", "stopped") and h.shim_pid is not None else "")
    if live and h.runc_init is not None:
        return TaskPrediction("kill-live-processes", f"{cause}: containerd cleans the task up, and `runc delete "
                              f"--force` SIGKILLs {live}; no exit event is published{shim}", cause)
    if live:
        return TaskPrediction("clean-up-and-leak", f"{cause}: containerd cleans the task up, but runc's state "
                              f"does not name a live init, so nothing is killed: {live} live on, untracked{shim}",
                              cause)
    return TaskPrediction("clean-up", f"{cause}: containerd cleans the task up; nothing runs, and the exit "
                          f"status is lost (none is published){shim}", cause)


# --- CRI --------------------------------------------------------------------------------------

def predict_cri(t: TaskFiles, task: TaskPrediction, init_verdict: str | None) -> tuple[CriWould | None, str]:
    """What CRI records for a container from its checkpoint and what the restore leaves."""
    cri = t.cri
    if cri is None or cri.problem is not None:
        return None, "no usable CRI checkpoint"
    if cri.state == "exited":
        return "record-exit", f"the checkpoint already holds exit {cri.exit_code}"
    if cri.state != "running":
        return None, f"the checkpoint says {cri.state}: CRI leaves it so"
    if task.would == "reconnect":
        if init_verdict == "exited":
            return "record-exit", "the task is re-adopted stopped: CRI records the true exit code and time"
        return "keep-running", "the task is re-adopted running"
    if task.would is None:
        return None, "what containerd does with the task cannot be told"
    return "record-255-unknown", ("the task is gone after the restore: CRI records exit code 255, reason "
                                  "\"Unknown\", finished now, and keeps the stale pid")


def restore_address(record: ContainerRecord, h: TaskHost) -> str:
    """What the `address` file must hold for containerd to reach the task's shim."""
    t: TaskFiles = record.files
    return address_for(h.grpc_address or DEFAULT_GRPC_ADDRESS, t.namespace, t.shim_id)


# --- a whole task -----------------------------------------------------------------------------

_LEAKS = ("skip-and-leak", "delete-silently-and-leak", "clean-up-and-leak")


def predict_task_container(record: ContainerRecord, decisions: dict[str, Decision], h: TaskHost
                           ) -> ContainerPrediction:
    """The task's restore, what CRI then records, and findings that say what to do first."""
    t: TaskFiles = record.files
    task = predict_task(t, h)
    init = decisions.get("init")
    cri_would, cri_why = (predict_cri(t, task, init.verdict if init else None)
                          if t.container_type == "container" else (None, ""))
    found = []
    if task.would == "kill-live-processes":
        found.append(finding("R101", f"{task.why}: {_what_to_do(record, h, task.cause)}", record.rel))
    elif task.would == "block-then-kill":
        found.append(finding("R105", f"{task.why}: resume it first (kill -CONT {h.shim_pid})", record.rel))
    elif task.would == "clean-up":
        found.append(finding("R102", task.why, record.rel))
    elif task.would in _LEAKS:
        found.append(finding("R103" if any(_running_on(h)) else "R104", task.why, record.rel))
    if cri_would == "record-255-unknown":
        found.append(finding("R106", f"CRI: {cri_why}", record.rel))
    processes = {p.id: ProcessPrediction(task.would, task.why) for p in record.processes}
    extra = {
        "hidden": t.hidden, "empty": t.empty,
        "sandbox": t.sandbox, "container_type": t.container_type,
        "shim": {"pid": h.shim_pid, "state": h.shim_state if h.proc_read else None,
                 "address": t.address, "address_problem": t.address_problem,
                 "socket": t.socket_path, "socket_state": t.socket, "socket_listened": h.socket_listened},
        "runc_state": None if t.runc is None else {"path": t.runc.path, "pid": t.runc.pid, "start": t.runc.start,
                                                   "created": t.runc.created, "problem": t.runc.problem},
        "cri": None if t.cri is None else {"path": t.cri.path, "state": t.cri.state, "pid": t.cri.pid,
                                           "exit_code": t.cri.exit_code, "finished_at": t.cri.finished_at,
                                           "reason": t.cri.reason, "problem": t.cri.problem,
                                           "cri_would": cri_would, "why": cri_why},
        "work_dir": t.work_link, "work_dir_exists": t.work_dir_exists,
        "containerd_would_why": task.why,
    }
    return ContainerPrediction(task.would, processes, tuple(found), extra)


def _what_to_do(record: ContainerRecord, h: TaskHost, cause: str | None) -> str:
    t: TaskFiles = record.files
    if t.address_problem is not None and h.shim_state == "alive":
        want = restore_address(record, h)
        return (f"before restarting, restore the address: write {want!r} (no newline) to "
                f"{printable(os.path.join(t.dir, 'address'))}; the socket name is sha256 of "
                f"'{h.grpc_address or DEFAULT_GRPC_ADDRESS}/{t.namespace}/{t.shim_id}'")
    if (t.socket in ("missing", "not-a-socket") or h.socket_listened is False) and h.shim_state == "alive":
        return ("the live shim can no longer be reached (a socket cannot be re-created for it): stop the "
                "task's processes cleanly before restarting, or accept the SIGKILL")
    return "stop them cleanly before restarting (their exit status will not be recorded), or accept the SIGKILL"
