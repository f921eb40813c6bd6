"""What containerd 1.6, 1.7 or 2.x will do to each task when it restarts over a runtime-v2 state
dir (SPEC-v2 §2, §2a), and what its CRI plugin will then record.  Pure: records, verdicts and host
facts in, predictions out, for the behaviour of the version that will start (version.py).

The daemon's restore (runtime/v2 `loadExistingTasks` / `loadShims`), per task dir; `TASK_RULES`
is this list, in order, each rule with the behaviours it holds for; the first that decides, decides:
  hidden namespace or task (a dot-name)    -> skipped: its shim and processes live on, untracked
  the bundle cannot be listed, or is empty -> deleted without a word: what runs is leaked
  the shim cannot be reached               -> "cleaning up after shim disconnected": the shim binary's
      `delete` runs `runc delete --force`, which SIGKILLs the container when runc's state still
      names its live init (runc checks the start ticks first); a live shim is left running.  What
      "reached" takes depends on the version (`dial`): 1.6 dials `address` as written; 1.7 also
      takes JSON there, up to version 2; 2.x reads bootstrap.json, else migrates `address` as
      version 2, and speaks that task API, which a 2.x shim (v3) does not serve
  the shim is stopped                      -> the start blocks (its load and its delete time out),
      then runc still SIGKILLs the processes, which stay zombies under the stopped shim; what is
      left afterwards depends on the version (STOPPED_AFTERMATH)
  1.7, 2.x: nothing of a (non-sandbox) task runs under its live shim -> cleaned up as a leaked
      shim: the shim is shut down and the exit status it held is lost
  otherwise                                -> re-adopted as the shim reports it
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, get_args

import msgspec

from ...judge import ContainerPrediction, ProcessPrediction
from ...records import ContainerRecord
from ...rules import Finding, finding
from ...value import Value
from ...verdicts import Decision
from .advice import restoration, what_to_do
from .facts import As, TaskHost, TaskPrediction, TaskWould, dial
from .reader import TaskFiles
from .version import BEHAVIOURS, Behaviour, DaemonVersion

TASK_WOULD: tuple[TaskWould, ...] = get_args(TaskWould)
# how bad each outcome is, where versions differ and the worst leads
HARM: dict[TaskWould | None, int] = {None: -1, "reconnect": 0, "skip": 0, "clean-up": 1, "skip-and-leak": 2,
                                     "delete-silently-and-leak": 2, "clean-up-and-leak": 2,
                                     "kill-live-processes": 3, "block-then-kill": 4}
CriWould = Literal["keep-running", "record-exit", "record-255-unknown"]

LIVE = ("running", "orphaned")  # verdicts of a process that runs (a zombie has exited)
EVERY: frozenset[Behaviour] = frozenset(BEHAVIOURS)


# --- the rules, in the daemon's order -------------------------------------------------------

Rule = Callable[[TaskFiles, TaskHost, As], TaskPrediction | None]


def _hidden(t: TaskFiles, h: TaskHost, who: As) -> TaskPrediction | None:
    if not t.hidden:
        return None
    where = "its namespace" if t.hidden_namespace else "the task dir"
    if h.twin_key:
        return TaskPrediction("skip", f"{where} is a dot-name: containerd skips it, but {h.twin_key} is the same "
                              "task to it (the same runc state, the same shim and socket): what becomes of the "
                              f"task is said there")
    return TaskPrediction("skip-and-leak", f"{where} is a dot-name: containerd skips it, and {_leaks(h)}")


def _unlisted(t: TaskFiles, h: TaskHost, who: As) -> TaskPrediction | None:
    if t.entries is not None:
        return None
    if t.listing_problem and "ermission" in t.listing_problem:
        return TaskPrediction(None, "recover may not list the bundle; containerd, as root, can")
    return TaskPrediction("delete-silently-and-leak", f"the bundle cannot be listed ({t.listing_problem}): "
                          f"containerd deletes it, and {_leaks(h)}")


def _empty(t: TaskFiles, h: TaskHost, who: As) -> TaskPrediction | None:
    if not t.empty:
        return None
    return TaskPrediction("delete-silently-and-leak", f"the bundle is empty: containerd deletes it without a "
                          f"word, and {_leaks(h)}")


def _no_proc(t: TaskFiles, h: TaskHost, who: As) -> TaskPrediction | None:
    if h.proc_read:
        return None
    return TaskPrediction(None, "whether the shim answers cannot be told without /proc")


def _unreachable(t: TaskFiles, h: TaskHost, who: As) -> TaskPrediction | None:
    d = dial(t, who.b)
    cause = None
    if d.problem is not None:
        cause = d.problem
    elif d.file is not None and d.file.socket in ("missing", "not-a-socket"):
        cause = (f"the shim's socket {d.file.socket_path} is "
                 f"{'missing' if d.file.socket == 'missing' else 'not a socket'}")
    elif d.file is not None and h.listened.get(d.file.socket_path or "") is False:
        cause = (f"nobody listens on the shim's socket file {d.file.socket_path} (it was replaced: the shim's own "
                 "socket is gone)")
    elif h.shim_state == "gone":
        cause = "its shim is gone"
    elif h.shim_state == "zombie":
        cause = f"its shim (pid {h.shim_pid}) is a zombie"
    elif d.api is not None and h.shim_api is not None and d.api != h.shim_api:
        how = " (it migrates `address` to bootstrap.json version 2)" if d.migrated else f" ({d.file.name} says so)"
        cause = (f"{who.name} speaks task API v{d.api} to it{how}, and its shim serves v{h.shim_api} only "
                 f"({h.shim_api_from})")
    if cause is None:
        return None
    return _clean_up(cause, t, h, who)


# What a stopped shim's task is left as, when a live exec kept its delete from finishing (seen on
# real 1.6.20, 1.7.34, 2.3.4): the bundle, and whether a later restart takes the task back.
STOPPED_AFTERMATH: dict[Behaviour, str] = {
    "1.6": "its bundle and runc's state are left, and a later restart after the shim resumes takes the task "
           "back stopped (exit 137)",
    "1.7": "its bundle and runc's state are left, and once the shim resumes a later restart cleans the task up "
           "as a leaked shim (exit 137 lost)",
    "2.x": "its bundle is removed (runc's state is left), and once resumed the shim lives on untracked, never "
           "taken back",
}


def _stopped(t: TaskFiles, h: TaskHost, who: As) -> TaskPrediction | None:
    """A stopped shim does not answer: its load times out (5 s by default), then the clean-up runs
    `runc delete --force`, which SIGKILLs what runs.  A live exec (a child of the stopped shim, not
    of the init) stays an unreaped zombie, so the dying init never finishes and the delete times
    out too (5 s more): the task is left half-removed, differently by version.  Without one the
    delete finishes: everything is removed and the shim is leaked (SPEC-v2 §2.6, §2a.4; seen on
    real 1.6.20, 1.7.34, 2.3.4, with and without an exec)."""
    if h.shim_state != "stopped":
        return None
    live = _live(h)
    # an exec is a child of the shim in the task's pid namespace: alive, or a zombie the stopped shim
    # cannot reap, it keeps the dying init from finishing (seen on Docker's 1.6.20: a zombie exec)
    execs = [p for p, v in h.verdicts.items() if p != "init" and (v in LIVE or v == "zombie")]
    shim = f"its shim (pid {h.shim_pid}) is stopped"
    if execs:
        return TaskPrediction("block-then-kill", keeps_bundle=who.b != "2.x", why=(
            f"{shim}: the restart blocks about 10 s (the shim's load and its delete time out, 5 s each by "
            f"default), runc SIGKILLs {live or 'what runs'}, which stay zombies under the stopped shim "
            f"({' and '.join(execs)} "
            "keep the init from dying, so the delete never finishes); the task is not listed after the restart: "
            f"{STOPPED_AFTERMATH[who.b]}"))
    return TaskPrediction("block-then-kill", f"{shim}: the restart blocks about 5 s (the shim's load times out, 5 s "
                          f"by default), then runc SIGKILLs {live or 'what runs'} (a zombie under the stopped shim) "
                          "and the task is removed (bundle, work dir, runc's state); once resumed the shim lives on "
                          "untracked")


def _unknown_transport(t: TaskFiles, h: TaskHost, who: As) -> TaskPrediction | None:
    d = dial(t, who.b)
    if d.file is None or d.file.socket != "unknown":
        return None
    return TaskPrediction(None, f"the shim's address {d.address!r} is not a unix socket on this host")


def _leaked_shim(t: TaskFiles, h: TaskHost, who: As) -> TaskPrediction | None:
    """1.7 and 2.x clean up a live shim that reports nothing of its (non-sandbox) task running
    (SPEC-v2 §2a.1): a pod's shim stays, as it serves the sandbox; a task's own shim is shut down.
    A 1.7 shim asks runc whether the init runs: without runc's state it says no, whatever runs
    (seen on 1.7.34; 2.3.4 re-adopted such a task), and runc, without its state, kills nothing."""
    if t.container_type == "sandbox" or not h.verdicts:
        return None
    shim = "the pod's shim lives on (it serves the sandbox)" if t.sandbox else f"its shim (pid {h.shim_pid}) is shut down"
    live = _live(h)
    if live and who.b == "1.7" and t.runc is not None and t.runc.problem == "missing":
        return TaskPrediction("clean-up-and-leak", keeps_bundle=True, why=(
            f"runc has no state for the task, so its shim reports nothing of it running: {who.name} drops it as a "
            f"leaked shim (\"cleaning leaked shim process\"), but the shim (pid {h.shim_pid}), which still watches "
            f"{live}, does not shut down: the task is no longer listed and its work dir is removed, its bundle is "
            "left, and nothing is killed: its processes and its shim live on, untracked"))
    if live:
        return None
    undecided = [p for p, v in h.verdicts.items() if v in ("unknown", "not-started")]
    if undecided:  # the shim may still run them: what it reports cannot be told
        return TaskPrediction(None, f"whether {' and '.join(undecided)} still run under its live shim (pid "
                              f"{h.shim_pid}) cannot be told: {who.name} re-adopts the task if so, else cleans it up "
                              "as a leaked shim")
    exited = " and ".join(p for p, v in h.verdicts.items() if v in ("exited", "zombie"))
    return TaskPrediction("clean-up", f"nothing of the task runs under its live shim ({exited or 'no process'} "
                          f"exited): {who.name} cleans it up as a leaked shim (\"cleaning leaked shim process\"): "
                          f"{shim}, the bundle, work dir and runc state are removed, and the exit status the shim "
                          "held is lost (no event is published)")


def _reconnect(t: TaskFiles, h: TaskHost, who: As) -> TaskPrediction | None:
    exited = [p for p, v in h.verdicts.items() if v == "exited"]
    tail = (f"; {' and '.join(exited)} exited: {who.name} re-adopts the task stopped, with the exit status "
            "its shim kept (the exit event itself is re-sent only within about 15 s of the exit: a client "
            "that missed it, such as a dockerd that stayed up, must ask)" if exited else "")
    d = dial(t, who.b)
    migrated = " (it writes bootstrap.json version 2 from `address` first)" if d.migrated else ""
    return TaskPrediction("reconnect", f"its shim (pid {h.shim_pid}) lives and its socket is there: "
                          f"{who.name} re-adopts the task as the shim reports it{migrated}{tail}")


TASK_RULES: tuple[tuple[str, frozenset[Behaviour], Rule], ...] = (
    ("hidden task or namespace: skipped", EVERY, _hidden),
    ("bundle cannot be listed: deleted", EVERY, _unlisted),
    ("empty bundle: deleted silently", EVERY, _empty),
    ("/proc not read", EVERY, _no_proc),
    ("shim unreachable (address, socket, API, shim gone): cleaned up", EVERY, _unreachable),
    ("shim stopped: blocks, then kills", EVERY, _stopped),
    ("address is not a unix socket here", EVERY, _unknown_transport),
    ("nothing runs under the live shim: cleaned up, exit lost", frozenset(("1.7", "2.x")), _leaked_shim),
    ("otherwise: reconnected", EVERY, _reconnect),
)


def predict_task(t: TaskFiles, h: TaskHost, who: As) -> TaskPrediction:
    for _, behaviours, rule in TASK_RULES:
        if who.b in behaviours and (p := rule(t, h, who)) is not None:
            return _blocked_delete(p, h)
    raise AssertionError("the last rule always decides")  # pragma: no cover


CLEAN_UPS = ("kill-live-processes", "clean-up", "clean-up-and-leak", "block-then-kill")


def _blocked_delete(p: TaskPrediction, h: TaskHost) -> TaskPrediction:
    """containerd deletes a bundle by renaming it `.<id>` first: where that dir is there (a hidden
    twin), the rename fails and the bundle stays (seen on real 1.7.34 and 2.3.4: "failed to clean up
    after shim disconnected": "rename ...: file exists"), to be cleaned up again at every restart."""
    if not h.dot_twin or p.would not in CLEAN_UPS or p.keeps_bundle:
        return p
    return msgspec.structs.replace(p, keeps_bundle=True, why=(
        f"{p.why}; but the bundle stays: containerd deletes it by renaming it {h.dot_twin} first, and that dir "
        "is there (\"failed to clean up after shim disconnected\": file exists), so every restart cleans it up "
        f"again until {h.dot_twin} is removed"))


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


def _clean_up(cause: str, t: TaskFiles, h: TaskHost, who: As) -> TaskPrediction:
    live = _live(h)
    # the clean-up runs a new shim binary's `delete`: a live shim that cannot be reached is left running
    # (it reports, for a task containerd no longer lists, 137 for an init runc kills, else what it holds)
    held = "the exit status it holds" if h.verdicts.get("init") in ("exited", "zombie") else "exit 137"
    shim = (f"; its shim (pid {h.shim_pid}) is left {'stopped' if h.shim_state == 'stopped' else 'running'}, "
            f"untracked (it later reports {held} for a task containerd no longer lists)"
            if h.shim_state in ("alive", "stopped") and h.shim_pid is not None else "")
    if t.runtime_file is False and who.b in ("1.6", "1.7"):
        # a 1.x shim's `delete` reads the bundle's `runtime` first, and fails without it (2.x takes
        # runc): runc is never asked to delete, and containerd stops before removing the bundle
        # (seen on real 1.6.20 and 1.7.34: a bundle made again by Docker without one)
        left = f"{live} live on, untracked" if live else "nothing runs, and the exit status is lost"
        return TaskPrediction("clean-up-and-leak" if live else "clean-up", keeps_bundle=True, cause=cause, why=(
            f"{cause}: containerd cleans the task up, but the shim's `delete` fails at once (the bundle has no "
            f"`runtime` file, which a {who.b} shim reads first: \"failed to clean up after shim disconnected\"), "
            f"so runc kills nothing: {left}; the bundle and runc's state stay and its work dir is removed, and "
            f"every restart tries again{shim}"))
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
    if task.would == "skip":
        return None, "its visible twin is the task CRI sees"
    return "record-255-unknown", ("the task is gone after the restore: CRI records exit code 255, reason "
                                  "\"Unknown\", finished now, and keeps the stale pid")


# --- a whole task -----------------------------------------------------------------------------

_LEAKS = ("skip-and-leak", "delete-silently-and-leak", "clean-up-and-leak")


class _Outcome(Value):
    """One behaviour's prediction of a task: what containerd does, what CRI records, the findings."""

    task: TaskPrediction
    cri_would: CriWould | None
    cri_why: str
    findings: tuple[Finding, ...]


def _outcome(record: ContainerRecord, decisions: dict[str, Decision], h: TaskHost, who: As,
             behaviours: tuple[Behaviour, ...]) -> _Outcome:
    t: TaskFiles = record.files
    task = predict_task(t, h, who)
    init = decisions.get("init")
    cri_would, cri_why = (predict_cri(t, task, init.verdict if init else None)
                          if t.container_type == "container" else (None, ""))
    found = []
    # an exit only the live shim holds, which the restore throws away
    held = [p + (f" ({d.exit_status})" if d.exit_status is not None else "") for p, d in decisions.items()
            if d.verdict == "exited" and d.exit_status_source in ("shim-memory", "shim")]
    if task.would == "kill-live-processes":
        found.append(finding("R101", f"{task.why}: {what_to_do(record, h, behaviours, task)}", record.rel))
    elif task.would == "block-then-kill":
        found.append(finding("R105", f"{task.why}: resume it first (kill -CONT {h.shim_pid})", record.rel))
    elif task.would == "clean-up" and not held:
        found.append(finding("R102", task.why, record.rel))
    elif task.would in _LEAKS:
        found.append(finding("R103" if any(_running_on(h)) else "R104", task.why, record.rel))
    if held and task.would not in ("reconnect", "skip", None):
        cri = " (CRI then records 255 \"Unknown\")" if cri_would == "record-255-unknown" else ""
        found.append(finding("R107", f"{task.why}; the exit of {' and '.join(held)}, which only its live shim "
                             f"(pid {h.shim_pid}) holds, is lost{cri}", record.rel))
    if cri_would == "record-255-unknown":
        found.append(finding("R106", f"CRI: {cri_why}", record.rel))
    return _Outcome(task, cri_would, cri_why, tuple(found))


def _merged(outcomes: dict[Behaviour, _Outcome]) -> tuple[_Outcome, dict[Behaviour, str | None]]:
    """One outcome from those of several behaviours (the version cannot be told): the worst leads;
    where they differ, the reason says so, and a finding only some of them make says which."""
    order = list(outcomes)
    lead_b = max(order, key=lambda b: (HARM[outcomes[b].task.would], -order.index(b)))
    lead = outcomes[lead_b]
    wouldn = {b: o.task.would for b, o in outcomes.items()}
    if len(set(wouldn.values())) > 1:
        others = "; ".join(f"containerd {b} would {o.task.would or 'do what cannot be told'}: {o.task.why}"
                           for b, o in outcomes.items() if o.task.would != lead.task.would)
        why = (f"the version that will start cannot be told; the worst, containerd {lead_b}: {lead.task.why}. "
               f"Where versions differ: {others}")
    else:
        why = lead.task.why
    # one finding per code and place: the versions that say the same (but for the daemon's name)
    # share one message, and where they differ each group says its own, named
    by_place: dict[tuple[str, str | None], dict[str, list[Behaviour]]] = {}
    for b, o in outcomes.items():
        for f in o.findings:
            said = by_place.setdefault((f.code, f.path), {})
            said.setdefault(f.message.replace(f"containerd {b}", "{daemon}"), []).append(b)
    found = []
    for (code, path), messages in by_place.items():
        parts = []
        for message, said_by in messages.items():
            named = f"containerd {_names(said_by)}"
            message = message.replace("{daemon}", named)
            parts.append(message if len(said_by) == len(outcomes) else f"{named}: {message}")
        found.append(finding(code, "; ".join(parts), path))
    task = TaskPrediction(lead.task.would, why, lead.task.cause)
    return _Outcome(task, lead.cri_would, lead.cri_why, tuple(found)), wouldn


def _names(behaviours: list[Behaviour]) -> str:
    return " and ".join(behaviours) if len(behaviours) < 3 else ", ".join(behaviours[:-1]) + " and " + behaviours[-1]


def predict_task_container(record: ContainerRecord, decisions: dict[str, Decision], h: TaskHost,
                           judged: DaemonVersion) -> ContainerPrediction:
    """The task's restore by the containerd judged (each known behaviour when its version cannot
    be told), what CRI then records, and findings that say what to do first."""
    t: TaskFiles = record.files
    outcomes = {b: _outcome(record, decisions, h, As.of(b, judged), judged.behaviours) for b in judged.behaviours}
    if len(outcomes) == 1:
        (outcome,) = outcomes.values()
        by_version = None
    else:
        outcome, by_version = _merged(outcomes)
    task = outcome.task
    lead_dial = dial(t, max(judged.behaviours, key=lambda b: HARM[outcomes[b].task.would]))
    processes = {p.id: ProcessPrediction(task.would, task.why) for p in record.processes}
    address = lead_dial.file
    extra = {
        "hidden": t.hidden, "empty": t.empty,
        "sandbox": t.sandbox, "container_type": t.container_type,
        "shim": {"pid": h.shim_pid, "state": h.shim_state if h.proc_read else None, "start_ticks": h.shim_start,
                 "asked": h.asked or None,
                 "address": lead_dial.address, "address_file": address.name if address else None,
                 "address_problem": lead_dial.problem, "api": h.shim_api,
                 "socket": address.socket_path if address else None,
                 "socket_state": address.socket if address else "unknown",
                 "socket_listened": h.listened.get(address.socket_path or "") if address else None},
        "runc_state": None if t.runc is None else {"path": t.runc.path, "pid": t.runc.pid, "start": t.runc.start,
                                                   "created": t.runc.created, "problem": t.runc.problem},
        "cri": None if t.cri is None else {"path": t.cri.path, "state": t.cri.state, "pid": t.cri.pid,
                                           "exit_code": t.cri.exit_code, "finished_at": t.cri.finished_at,
                                           "reason": t.cri.reason, "problem": t.cri.problem,
                                           "cri_would": outcome.cri_would, "why": outcome.cri_why},
        "work_dir": t.work_link, "work_dir_exists": t.work_dir_exists,
        "containerd_would_why": task.why,
    }
    if by_version is not None:
        extra["containerd_would_by_version"] = by_version
    extra["restore"] = restoration(record, h, judged.behaviours, task)
    return ContainerPrediction(task.would, processes, outcome.findings, extra)
