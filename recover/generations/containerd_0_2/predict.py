"""What containerd 0.2.9 will do to each container when it restarts over a 0.2 root (SPEC §2),
emulating its Go code byte for byte, bugs included.  Pure: records, verdicts and host facts in,
predictions out.

containerd loads container dirs in name order, and in each the process dirs in name order:
state.json and every process.json must decode (rule 1), each process reads starttime, pid, then
exitStatus (rules 2-4), and three cases stop the daemon itself (rule 5).  `predict_process` is
rules 2-5 for one process, as an ordered list of checks; `predict_container` walks a container
as the daemon does.
"""

from __future__ import annotations

from typing import Literal

from ...fsread import printable
from ...host import ProcessFacts
from ...judge import ContainerPrediction, ProcessPrediction
from ...records import ContainerRecord, ProcessRecord
from ...rules import finding
from ...value import Value
from ...verdicts import Decision, HostFacts, recorded_process_lives
from .files import INIT_PROCESS, JsonDoc

ContainerdWould = Literal["keep-running", "use-exit-status", "record-255", "kill-record-137",
                          "skip-process", "drop-container", "crash-daemon", "hang-daemon"]
CONTAINERD_WOULD: tuple[ContainerdWould, ...] = (
    "keep-running", "use-exit-status", "record-255", "kill-record-137", "skip-process",
    "drop-container", "crash-daemon", "hang-daemon")


class _Panic(Exception):
    """containerd's readProcStatField indexing out of range: the daemon panics."""


def go_read_proc_stat_field(stat: bytes, field: int) -> bytes:
    """containerd 0.2.9 readProcStatField: splits at EVERY ") " and indexes the second piece.

    A comm holding ") " leaves a short piece, and the index panics the daemon.
    """
    parts = stat.split(b") ", 2)  # the second piece is the same however many follow it
    if len(parts) < 2:
        raise _Panic
    pieces = parts[1].split(b" ", field - 2)  # exact up to index field - 3; the rest in one
    if field - 3 >= len(pieces):
        raise _Panic
    return pieces[field - 3]


class Prediction(Value):
    would: ContainerdWould | None  # None: cannot be told (offline)
    why: str


def predict_process(rec: ProcessRecord, facts: ProcessFacts, host: HostFacts) -> Prediction:
    """SPEC §2 rules 2-5 for one process whose process.json containerd could decode."""
    files = rec.files
    starttime, exit_status = files.starttime, files.exit_status
    start_read, exit_read = starttime.containerd_read, exit_status.containerd
    # loadProcess reads starttime, then pid, then (only if pid parsed) exitStatus
    if "denied" in (start_read, files.pid.containerd_read, exit_read):
        return Prediction(None, "recover may not read this process's files; containerd, as root, can")
    if start_read == "blocks" or files.pid.containerd_read == "blocks":
        return Prediction("hang-daemon", "a FIFO stands where containerd reads a file: its read never returns")
    if start_read == "follows-link":
        return Prediction(None, "starttime is a symbolic link: what containerd reads through it cannot be told")
    if start_read == "error" and starttime.findings and not any(f.code == "F006" for f in starttime.findings):
        return Prediction("skip-process", "starttime exists but cannot be read: the process fails to load")
    pid = files.pid.containerd
    if pid is None:
        return Prediction("skip-process", "the pid file is missing or not exactly an integer")
    if exit_read == "blocks":
        return Prediction("hang-daemon", "exitStatus is a FIFO: containerd's read never returns")
    if exit_read == "valid":
        return Prediction("use-exit-status", f"exitStatus holds {exit_status.containerd_status}: containerd "
                          "reports that exit")
    if not host.proc_read:
        return Prediction(None, "whether the pid lives cannot be told without /proc")
    stat = facts.containerd_stat
    if stat is None and pid > 0 and host.hidepid:
        return Prediction(None, "containerd (root) sees processes that hidepid hides from recover")
    if stat is None and pid > 0:
        return Prediction("record-255", f"kill({pid}, 0) fails: \"does not exist\"")
    started = starttime.containerd_raw if start_read == "ok" else b""
    try:
        if started:
            if stat is None:
                return Prediction("record-255", f"/proc/{pid}/stat cannot be read: \"not the same process\"")
            if go_read_proc_stat_field(stat.raw, 22) != started:
                return Prediction("record-255", "starttime differs from stat field 22: \"not the same process anymore\"")
        if stat is None:
            return Prediction("skip-process", f"/proc/{pid}/stat cannot be read for the ppid check")
        ppid = go_read_proc_stat_field(stat.raw, 4)
    except _Panic:
        return Prediction("crash-daemon", f"the comm of pid {pid} ({stat.comm!r}) holds \") \": "
                          "containerd's stat parser panics (index out of range)")
    if ppid == b"1":
        if facts.frozen:
            return Prediction("hang-daemon", "ppid is 1 and the process is frozen: the SIGKILL never lands "
                              "and the daemon waits forever")
        return Prediction("kill-record-137", "ppid is 1: \"shim died, killing associated process\"")
    if exit_read == "invalid":
        return Prediction("skip-process", "exitStatus cannot be parsed and the process looks alive")
    if files.exit_is_file:
        return Prediction("crash-daemon", f"containerd would watch this process, but {rec.rel}/exit is a regular "
                          "file, not a FIFO: epoll refuses it (\"operation not permitted\") and the daemon exits "
                          "(level=fatal) at every start: make that file a FIFO again")
    return _KEEPS_RUNNING


_KEEPS_RUNNING = Prediction("keep-running", "the pid lives, is the same process, and its parent is not pid 1")


_NOT_REACHED = Prediction(None, "containerd stops before it reaches this process")
_STOPS_THE_DAEMON = ("crash-daemon", "hang-daemon")
_PREDICTION_CODES = {"skip-process": "R004", "record-255": "R005", "kill-record-137": "R006",
                     "crash-daemon": "R007", "hang-daemon": "R008"}


def _disagreement(rec: ProcessRecord, d: Decision, p: Prediction, facts: ProcessFacts) -> str | None:
    """Where containerd's decision is wrong about what really happened (R009)."""
    v, would = d.verdict, p.would
    if v == "zombie" and would == "keep-running":
        return (f"the process exited (status {d.exit_status}) but containerd would wait for it forever: "
                "its stopped shim never reaps it")
    if v == "orphaned" and would == "keep-running":
        return (f"the shim is gone but the parent is pid {facts.stat.ppid if facts.stat else '?'}, "
                "not 1 (a subreaper): containerd would never notice and never record an exit")
    if v == "pid-reused" and would == "kill-record-137":
        return f"containerd would SIGKILL pid {facts.pid}, which is ANOTHER process"
    if v in ("running", "orphaned") and would == "record-255":
        return "the recorded process is alive, but containerd would call it gone and record 255"
    if v == "exited" and would in ("record-255", "kill-record-137"):
        return (f"the process exited with {d.exit_status}, but containerd cannot read that and would "
                f"overwrite it ({would})")
    return None


def _takes_exit_of_live(rec: ProcessRecord, d: Decision, p: Prediction, facts: ProcessFacts) -> str | None:
    """containerd would read exitStatus as the exit of a process that is still alive (R010)."""
    if p.would != "use-exit-status" or not (d.verdict in ("running", "orphaned") or recorded_process_lives(rec, facts)):
        return None
    what = "the container" if rec.id == INIT_PROCESS else "this process"
    return (f"exitStatus says {rec.files.exit_status.containerd_status}, but pid {facts.pid} is alive and is the recorded "
            f"process: containerd would take that exit, drop the state of {what} and leak the live process")


# --- a whole container ---------------------------------------------------------------------

def predict_container(record: ContainerRecord, decisions: dict[str, Decision], facts: dict[str, ProcessFacts],
                      host: HostFacts, bundle_exists: bool | None) -> ContainerPrediction:
    """containerd 0.2.9's restore of one container dir (SPEC §2), and where it is wrong (R009, R010)."""
    state = record.files.state
    found = list(state.findings)
    predictions: dict[str, Prediction] = {}
    would = None
    # containerd loads process dirs in name order; the first undecodable one, or a panic or hang,
    # ends the load of the container there.
    if state.containerd_read == "blocks":
        would = "hang-daemon"
        found.append(finding("R008", "state.json is a FIFO: containerd's read blocks forever", record.rel))
    elif state.containerd_read == "denied":
        would = None  # containerd, as root, reads what recover may not: nothing is predicted
    elif not state.containerd_decodes:
        would = "drop-container"
        found.append(finding("R001", f"state.json {_not_loaded(state)}: containerd would delete the "
                             "container dir", record.rel))
    else:
        for p in record.processes:
            spec = p.files.spec
            if not spec.containerd_decodes:
                if spec.containerd_read == "blocks":
                    predictions[p.id] = Prediction("hang-daemon", "process.json is a FIFO")
                    would = "hang-daemon"
                    break
                if spec.containerd_read == "denied":
                    predictions[p.id] = Prediction(None, "recover may not read process.json; containerd, as root, can")
                    continue
                would = "drop-container"
                found.append(finding("R001", f"{printable(p.id)}/process.json {_not_loaded(spec)}: "
                                     "containerd would delete the whole container dir", record.rel))
                break
            prediction = predictions[p.id] = predict_process(p, facts[p.id], host)
            if prediction.would in _STOPS_THE_DAEMON:
                would = prediction.would
                break
        else:
            outcomes = [w.would for w in predictions.values()]
            if bundle_exists is False:
                would = "drop-container"
                found.append(finding("R003", f"bundle {record.bundle!r} is missing: containerd "
                                     "would run `delete -f` (killing the container) and delete the dir", record.rel))
            elif outcomes.count("skip-process") == len(outcomes):  # no process would load
                would = "drop-container"
                found.append(finding("R002", "no process would load: containerd would delete "
                                     "the container dir", record.rel))
            elif None in outcomes:
                would = None
            else:
                would = "keep"
    if would == "drop-container":
        predictions = {p.id: Prediction("drop-container", "the container dir is deleted") for p in record.processes}
    processes = {}
    for p in record.processes:
        d, f = decisions[p.id], facts[p.id]
        pred = predictions.get(p.id, _NOT_REACHED)
        pfound = []
        if pred.would in _PREDICTION_CODES:
            pfound.append(finding(_PREDICTION_CODES[pred.would], pred.why, p.rel))
        if (why := _disagreement(p, d, pred, f)) is not None:
            pfound.append(finding("R009", why, p.rel))
        if (why := _takes_exit_of_live(p, d, pred, f)) is not None:
            pfound.append(finding("R010", why, p.rel))
        processes[p.id] = ProcessPrediction(pred.would, pred.why, tuple(pfound))
    return ContainerPrediction(would, processes, tuple(found))


def _not_loaded(doc: JsonDoc) -> str:
    """Why containerd cannot load a JSON file, in what is seen (SPEC §2 rule 1)."""
    seen = {"missing": "is missing", "error": "cannot be read", "follows-link": "is a symbolic link"}
    return seen.get(doc.containerd_read, "cannot be decoded")
