"""Where verdicts are decided.  Pure: file records + host facts in, judgements out.

Two questions per process, answered separately:
  * `decide_verdict`: what really happened (SPEC §3), an ordered table of checks, first match wins;
  * `predict_containerd`: what containerd 0.2.9 will do on restart (SPEC §2), emulating its Go
    code byte for byte, including its bugs.
`judge_container` puts them together and adds the findings where the two disagree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from .host import ProcessFacts, ProcStat, ShimStateName, wait_status_to_exit
from .layout import INIT_PROCESS, JsonDoc
from .root import ContainerRecord, ProcessRecord, printable
from .rules import Finding, finding

Verdict = Literal["running", "exited", "orphaned", "zombie", "pid-reused", "vanished", "not-started", "unknown"]
VERDICTS: tuple[Verdict, ...] = ("running", "exited", "orphaned", "zombie", "pid-reused", "vanished",
                                 "not-started", "unknown")
Identity = Literal["start-time", "pid-file-mtime", "assumed"]
ContainerdWould = Literal["keep-running", "use-exit-status", "record-255", "kill-record-137",
                          "skip-process", "drop-container", "crash-daemon", "hang-daemon"]
CONTAINERD_WOULD: tuple[ContainerdWould, ...] = (
    "keep-running", "use-exit-status", "record-255", "kill-record-137", "skip-process",
    "drop-container", "crash-daemon", "hang-daemon")

PREVIOUS_BOOT_MARGIN_S = 60  # btime moves when the clock is stepped after boot
PID_FILE_MTIME_SLACK_S = 2  # btime is a whole second; copies may keep whole-second mtimes


@dataclass(frozen=True, slots=True)
class HostFacts:
    """Run-wide facts about the host view."""

    proc_read: bool  # false: offline, or the proc root is not readable
    live: bool
    btime: int | None
    clock_ticks: int
    hidepid: bool = False
    root_on_tmpfs: bool | None = None  # None: unknown filesystem

    def start_epoch(self, ticks: int) -> float | None:
        return None if self.btime is None else self.btime + ticks / self.clock_ticks


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    identity: Identity | None = None
    exit_status: int | None = None
    exit_status_source: str | None = None
    findings: tuple[Finding, ...] = ()


@dataclass(frozen=True, slots=True)
class ProcessJudgement:
    id: str
    rel: str
    exec: bool | None
    verdict: Verdict
    pid: int | None
    pid_from_shim: bool  # the pid file was missing: pid is the live shim's only child
    recorded_start: int | None
    observed_start: int | None
    identity: Identity | None
    ppid: int | None
    shim_pid: int | None
    shim_state: ShimStateName | None
    exit_status: int | None
    exit_status_source: str | None
    containerd_would: ContainerdWould | None
    findings: tuple[Finding, ...]
    temp_files: tuple[str, ...] = ()  # left by an interrupted repair: removed by the next one
    shim_root: str | None = None  # the root its shim's cwd names (when its cwd can be read)
    other_root: str | None = None  # ... when that is another existing root: this one is a copy


@dataclass(frozen=True, slots=True)
class ContainerJudgement:
    id: str
    rel: str
    bundle: str
    runtime: str
    shim: str
    labels: tuple[str, ...]
    containerd_would: Literal["keep", "drop-container", "crash-daemon", "hang-daemon"] | None
    processes: tuple[ProcessJudgement, ...]
    findings: tuple[Finding, ...]


# --- what really happened ------------------------------------------------------------------

Check = Callable[[ProcessRecord, ProcessFacts, HostFacts], Decision | None]


def _exit_recorded(rec: ProcessRecord, facts: ProcessFacts, host: HostFacts) -> Decision | None:
    es = rec.exit_status
    if es.value is None or lives_under_its_shim(rec, facts, host):
        return None
    found = []
    if _recorded_process_lives(rec, facts):
        found.append(finding("L007", f"pid {facts.pid} is alive and is the recorded process, "
                             f"but exitStatus says {es.value}", rec.rel))
    return Decision("exited", exit_status=es.value, exit_status_source=es.source, findings=tuple(found))


def lives_under_its_shim(rec: ProcessRecord, facts: ProcessFacts, host: HostFacts) -> bool:
    """The recorded process is alive, not a zombie, and its parent is its own shim: it has not
    exited, whatever exitStatus says (SPEC §2 rule 3).  The rest of the table then decides it."""
    if not host.proc_read or facts.stat is None or not facts.parent_is_shim or facts.stat.state in "ZXx":
        return False
    return all(check(rec, facts, host) is None for check in (_previous_boot, _thread, _identity))


def _proc_unreadable(rec: ProcessRecord, facts: ProcessFacts, host: HostFacts) -> Decision | None:
    if host.proc_read:
        return None
    return Decision("unknown", findings=(finding("L006", "/proc was not read", rec.rel),))


def _no_pid(rec: ProcessRecord, facts: ProcessFacts, host: HostFacts) -> Decision | None:
    if facts.pid is not None:
        return None
    if facts.shim_children and facts.shim_children > 1:
        return Decision("unknown", findings=(finding(
            "L006", f"no pid file, and its shim (pid {facts.shim_pid}) has "
            f"{facts.shim_children} children: which one is the process cannot be told", rec.rel),))
    why = (f"its shim (pid {facts.shim_pid}) is {facts.shim_state} without a child"
           if facts.shim_pid else "no shim is alive for it")
    logged = f"; runc's log.json says: {quoted(rec.runtime_error)}" if rec.runtime_error is not None else ""
    return Decision("not-started", findings=(finding(
        "L005", f"no usable pid file and {why}: the start never finished{logged}", rec.rel),))


def _pid_gone(rec: ProcessRecord, facts: ProcessFacts, host: HostFacts) -> Decision | None:
    if facts.stat is not None:
        return None
    if host.hidepid:
        return Decision("unknown", findings=(finding(
            "L006", f"pid {facts.pid} is not visible, but /proc hides other users' "
            "processes (hidepid): run as root", rec.rel),))
    return Decision("vanished", findings=(finding(
        "L001", f"pid {facts.pid} is gone and no exit status was recorded", rec.rel),))


def _previous_boot(rec: ProcessRecord, facts: ProcessFacts, host: HostFacts) -> Decision | None:
    evidence = previous_boot_evidence(rec, host)
    if evidence is None:
        return None
    return Decision("pid-reused", findings=(
        finding("L009", evidence, rec.rel),
        finding("L002", f"pid {facts.pid} is alive, but the pid file was written before "
                "this boot: it is another process", rec.rel)))


def _thread(rec: ProcessRecord, facts: ProcessFacts, host: HostFacts) -> Decision | None:
    if facts.tgid is None or facts.tgid == facts.pid:
        return None
    return Decision("pid-reused", findings=(finding(
        "L002", f"pid {facts.pid} is now a thread of process {facts.tgid}", rec.rel),))


def _identity(rec: ProcessRecord, facts: ProcessFacts, host: HostFacts) -> Decision | None:
    """Decide whether the live pid is the recorded process; strongest evidence first."""
    assert facts.stat is not None
    recorded = rec.starttime.value
    observed = facts.stat.starttime
    if recorded is not None:
        if recorded == observed:
            return None
        return Decision("pid-reused", "start-time", findings=(finding(
            "L002", f"pid {facts.pid} started at tick {observed}, the recorded process at "
            f"tick {recorded}: it is another process", rec.rel),))
    mtime_ns = rec.pid.mtime_ns if facts.pid_source == "pid-file" else None
    started = host.start_epoch(observed)
    if mtime_ns is not None and started is not None and started > mtime_ns / 1e9 + PID_FILE_MTIME_SLACK_S:
        return Decision("pid-reused", "pid-file-mtime", findings=(finding(
            "L002", f"pid {facts.pid} started {started - mtime_ns / 1e9:.0f} s after the pid "
            "file was written: it is another process", rec.rel),))
    return None


def _zombie(rec: ProcessRecord, facts: ProcessFacts, host: HostFacts) -> Decision | None:
    assert facts.stat is not None
    if facts.stat.state not in ("Z", "X", "x"):
        return None
    code = facts.stat.exit_code
    status = wait_status_to_exit(code) if code is not None else None
    shown = f"exit status {status}" if status is not None else "exit status unreadable (kernel < 3.5)"
    return Decision("zombie", identity_of(rec, facts, host), status, "zombie-stat" if status is not None else None,
                    (finding("L004", f"pid {facts.pid} exited ({shown}) and its shim "
                             f"(pid {facts.shim_pid}, {facts.shim_state}) does not reap it", rec.rel),))


def _under_shim(rec: ProcessRecord, facts: ProcessFacts, host: HostFacts) -> Decision | None:
    if not facts.parent_is_shim:
        return None
    return Decision("running", identity_of(rec, facts, host))


def _orphaned(rec: ProcessRecord, facts: ProcessFacts, host: HostFacts) -> Decision | None:
    assert facts.stat is not None
    parent = facts.parent
    who = f"pid {parent.pid} ({parent.comm!r})" if parent else f"pid {facts.stat.ppid}"
    return Decision("orphaned", identity_of(rec, facts, host), findings=(finding(
        "L003", f"pid {facts.pid} is alive but its parent is {who}, not its shim "
        f"(shim {facts.shim_state})", rec.rel),))


# The verdict table, in order (SPEC §3).  The docs' table says the same thing.
VERDICT_CHECKS: tuple[tuple[str, Check], ...] = (
    ("exitStatus holds a status", _exit_recorded),
    ("/proc not read", _proc_unreadable),
    ("no pid (pid file and shim child)", _no_pid),
    ("pid not in /proc", _pid_gone),
    ("pid file older than this boot", _previous_boot),
    ("pid is a thread of another process", _thread),
    ("start ticks differ, or started after the pid file", _identity),
    ("process is a zombie", _zombie),
    ("parent is its own shim", _under_shim),
    ("otherwise: the shim is gone", _orphaned),
)


def decide_verdict(rec: ProcessRecord, facts: ProcessFacts, host: HostFacts) -> Decision:
    for _, check in VERDICT_CHECKS:
        decision = check(rec, facts, host)
        if decision is not None:
            return decision
    raise AssertionError("the last check always decides")  # pragma: no cover


def identity_of(rec: ProcessRecord, facts: ProcessFacts, host: HostFacts) -> Identity:
    """How the live pid was shown to be the recorded process (after _identity let it pass)."""
    if rec.starttime.value is not None:
        return "start-time"
    if facts.pid_source == "pid-file" and rec.pid.mtime_ns is not None and host.btime is not None:
        return "pid-file-mtime"
    return "assumed"


def _same_start(rec: ProcessRecord, facts: ProcessFacts) -> bool:
    return facts.stat is not None and rec.starttime.value == facts.stat.starttime


def _recorded_process_lives(rec: ProcessRecord, facts: ProcessFacts) -> bool:
    """The pid is alive, not a zombie, and its start ticks are the recorded ones."""
    return facts.stat is not None and _same_start(rec, facts) and facts.stat.state not in "ZXx"


QUOTE_LIMIT = 160


def quoted(text: str) -> str:
    """Text from a file of the root, for a message: escaped, and cut when long."""
    shown = printable(text)
    return f'"{shown[:QUOTE_LIMIT]}"' + ("..." if len(shown) > QUOTE_LIMIT else "")


def previous_boot_evidence(rec: ProcessRecord, host: HostFacts) -> str | None:
    """Why the process's files belong to a previous boot, or None.  Never on a tmpfs (it cannot
    outlive a boot) and only with a margin, since btime moves when the clock is stepped."""
    mtime_ns = rec.pid.mtime_ns
    if host.root_on_tmpfs is not False or host.btime is None or mtime_ns is None:
        return None
    age = host.btime - mtime_ns / 1e9
    if age <= PREVIOUS_BOOT_MARGIN_S:
        return None
    return f"the pid file was written {age:.0f} s before this boot (btime {host.btime})"


# --- what containerd 0.2.9 would do --------------------------------------------------------

class _Panic(Exception):
    """containerd's readProcStatField indexing out of range: the daemon panics."""


def go_read_proc_stat_field(stat: bytes, field: int) -> bytes:
    """containerd 0.2.9 readProcStatField: splits at EVERY ") " and indexes the second piece.

    A comm holding ") " leaves a short piece, and the index panics the daemon.
    """
    parts = stat.split(b") ")
    if len(parts) < 2:
        raise _Panic
    pieces = parts[1].split(b" ")
    if field - 3 >= len(pieces):
        raise _Panic
    return pieces[field - 3]


@dataclass(frozen=True, slots=True)
class Prediction:
    would: ContainerdWould | None  # None: cannot be told (offline)
    why: str


def predict_process(rec: ProcessRecord, facts: ProcessFacts, host: HostFacts) -> Prediction:
    """SPEC §2 rules 2-5 for one process whose process.json containerd could decode."""
    # loadProcess reads starttime, then pid, then (only if pid parsed) exitStatus
    if "denied" in (rec.starttime.containerd_read, rec.pid.containerd_read, rec.exit_status.containerd):
        return Prediction(None, "recover may not read this process's files; containerd, as root, can")
    if rec.starttime.containerd_read == "blocks" or rec.pid.containerd_read == "blocks":
        return Prediction("hang-daemon", "a FIFO stands where containerd reads a file: its read never returns")
    if rec.starttime.containerd_read == "follows-link":
        return Prediction(None, "starttime is a symbolic link: what containerd reads through it cannot be told")
    if rec.starttime.containerd_read == "error" and rec.starttime.findings and not any(
            f.code == "F006" for f in rec.starttime.findings):
        return Prediction("skip-process", "starttime exists but cannot be read: the process fails to load")
    pid = rec.pid.containerd
    if pid is None:
        return Prediction("skip-process", "the pid file is missing or not exactly an integer")
    if rec.exit_status.containerd == "blocks":
        return Prediction("hang-daemon", "exitStatus is a FIFO: containerd's read never returns")
    if rec.exit_status.containerd == "valid":
        return Prediction("use-exit-status", f"exitStatus holds {rec.exit_status.containerd_status}: containerd "
                          "reports that exit")
    if not host.proc_read:
        return Prediction(None, "whether the pid lives cannot be told without /proc")
    stat = facts.containerd_stat
    if stat is None and pid > 0 and host.hidepid:
        return Prediction(None, "containerd (root) sees processes that hidepid hides from recover")
    if stat is None and pid > 0:
        return Prediction("record-255", f"kill({pid}, 0) fails: \"does not exist\"")
    started = rec.starttime.containerd_raw if rec.starttime.containerd_read == "ok" else b""
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
    if rec.exit_status.containerd == "invalid":
        return Prediction("skip-process", "exitStatus cannot be parsed and the process looks alive")
    if rec.exit_is_file:
        return Prediction("crash-daemon", f"containerd would watch this process, but {rec.rel}/exit is a regular "
                          "file, not a FIFO: epoll refuses it (\"operation not permitted\") and the daemon exits "
                          "(level=fatal) at every start: make that file a FIFO again")
    return Prediction("keep-running", "the pid lives, is the same process, and its parent is not pid 1")


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
    alive = d.verdict in ("running", "orphaned") or _recorded_process_lives(rec, facts)
    if p.would != "use-exit-status" or not alive:
        return None
    what = "the container" if rec.id == INIT_PROCESS else "this process"
    return (f"exitStatus says {rec.exit_status.containerd_status}, but pid {facts.pid} is alive and is the recorded "
            f"process: containerd would take that exit, drop the state of {what} and leak the live process")


# --- a whole container ---------------------------------------------------------------------

def judge_container(record: ContainerRecord, facts: dict[str, ProcessFacts], host: HostFacts,
                    bundle_exists: bool | None = None) -> ContainerJudgement:
    """Judge every process of a container and predict containerd's restore of it (SPEC §2)."""
    found = list(record.findings) + list(record.state.findings)
    decisions = {p.id: decide_verdict(p, facts[p.id], host) for p in record.processes}
    predictions: dict[str, Prediction] = {}
    container_would = None
    # containerd loads process dirs in name order; the first undecodable one, or a panic or hang,
    # ends the load of the container there.
    if record.state.containerd_read == "blocks":
        container_would = "hang-daemon"
        found.append(finding("R008", "state.json is a FIFO: containerd's read blocks forever",
                             record.rel))
    elif record.state.containerd_read == "denied":
        container_would = None  # containerd, as root, reads what recover may not: nothing is predicted
    elif not record.state.containerd_decodes:
        container_would = "drop-container"
        found.append(finding("R001", f"state.json {_not_loaded(record.state)}: containerd would delete the "
                             "container dir", record.rel))
    else:
        for p in record.processes:
            if p.spec.containerd_read == "blocks":
                predictions[p.id] = Prediction("hang-daemon", "process.json is a FIFO")
                container_would = "hang-daemon"
                break
            if p.spec.containerd_read == "denied":
                predictions[p.id] = Prediction(None, "recover may not read process.json; containerd, as root, can")
                continue
            if not p.spec.containerd_decodes:
                container_would = "drop-container"
                found.append(finding("R001", f"{printable(p.id)}/process.json {_not_loaded(p.spec)}: "
                                     "containerd would delete the whole container dir", record.rel))
                break
            predictions[p.id] = predict_process(p, facts[p.id], host)
            if predictions[p.id].would in ("crash-daemon", "hang-daemon"):
                container_would = predictions[p.id].would
                break
        else:
            loaded = [w for w in predictions.values() if w.would != "skip-process"]
            if bundle_exists is False:
                container_would = "drop-container"
                found.append(finding("R003", f"bundle {record.bundle!r} is missing: containerd "
                                     "would run `delete -f` (killing the container) and delete the dir", record.rel))
            elif not loaded:
                container_would = "drop-container"
                found.append(finding("R002", "no process would load: containerd would delete "
                                     "the container dir", record.rel))
            elif any(w.would is None for w in predictions.values()):
                container_would = None
            else:
                container_would = "keep"
    if container_would == "drop-container":
        predictions = {pid: Prediction("drop-container", "the container dir is deleted") for pid in decisions}
    processes = []
    for p in record.processes:
        d, f = decisions[p.id], facts[p.id]
        pred = predictions.get(p.id, Prediction(None, "containerd stops before it reaches this process"))
        pfound = list(p.findings) + list(d.findings)
        if pred.would in _PREDICTION_CODES:
            pfound.append(finding(_PREDICTION_CODES[pred.would], pred.why, p.rel))
        if (why := _disagreement(p, d, pred, f)) is not None:
            pfound.append(finding("R009", why, p.rel))
        if (why := _takes_exit_of_live(p, d, pred, f)) is not None:
            pfound.append(finding("R010", why, p.rel))
        if f.pid_source == "shim-child":
            pfound.append(finding("L010", f"pid {f.pid} is the only child of its shim "
                                  f"(pid {f.shim_pid})", p.rel))
        if d.identity == "assumed" and d.verdict in ("running", "orphaned", "zombie") and f.pid_source == "pid-file":
            pfound.append(finding("L008", f"no starttime and no usable pid file mtime: pid "
                                  f"{f.pid} is assumed to be the recorded process", p.rel))
        if f.shim_state == "stopped":
            pfound.append(finding("H001", f"its shim (pid {f.shim_pid}) is stopped", p.rel))
        elif f.shim_state == "zombie":
            pfound.append(finding("H002", f"its shim (pid {f.shim_pid}) is a zombie", p.rel))
        if f.other_root is not None:
            pfound.append(finding("H012", f"its shim (pid {f.shim_pid}) works in {printable(f.other_root)}: "
                                  "this root is a copy of that one, or both describe the same process", p.rel))
        processes.append(_process_judgement(p, d, f, pred.would, host, pfound))
    labels = (record.state.value or {}).get("labels")
    return ContainerJudgement(
        id=record.id, rel=record.rel, bundle=record.bundle,
        runtime=_str((record.state.value or {}).get("runtime")), shim=record.shim,
        labels=tuple(x for x in labels if isinstance(x, str)) if isinstance(labels, list) else (),
        containerd_would=container_would, processes=tuple(processes), findings=tuple(found))


def _not_loaded(doc: JsonDoc) -> str:
    """Why containerd cannot load a JSON file, in what is seen (SPEC §2 rule 1)."""
    seen = {"missing": "is missing", "error": "cannot be read", "follows-link": "is a symbolic link"}
    return seen.get(doc.containerd_read, "cannot be decoded")


def _process_judgement(rec: ProcessRecord, d: Decision, f: ProcessFacts, would: ContainerdWould | None,
                       host: HostFacts, found: list[Finding]) -> ProcessJudgement:
    exec_ = (rec.spec.value or {}).get("exec")
    return ProcessJudgement(
        id=rec.id, rel=rec.rel, exec=exec_ if isinstance(exec_, bool) else None,
        verdict=d.verdict, pid=f.pid if f.pid is not None else rec.pid.value,
        pid_from_shim=f.pid_source == "shim-child",
        recorded_start=rec.starttime.value,
        observed_start=f.stat.starttime if f.stat else None,
        identity=d.identity, ppid=f.stat.ppid if f.stat else None,
        shim_pid=f.shim_pid, shim_state=f.shim_state if host.proc_read else None,
        exit_status=d.exit_status, exit_status_source=d.exit_status_source,
        containerd_would=would, findings=tuple(found), temp_files=rec.temp_files,
        shim_root=f.shim_root, other_root=f.other_root)


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""

