"""Where verdicts are decided: what really happened to each recorded process (SPEC §3).

Pure: a process's record (from any layout's reader) and what the host says about it in, a
decision out.  `VERDICT_CHECKS` is an ordered table, first match wins; README's verdict table
says the same thing, row for row.  What a daemon will do is not decided here: see
each generation's predict module (recover/generations/).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from .fsread import printable
from .host import ProcessFacts, start_epoch, wait_status_to_exit
from .records import ProcessRecord
from .rules import Finding, finding
from .value import Value

Verdict = Literal["running", "exited", "orphaned", "zombie", "pid-reused", "vanished", "not-started", "unknown"]
VERDICTS: tuple[Verdict, ...] = ("running", "exited", "orphaned", "zombie", "pid-reused", "vanished",
                                 "not-started", "unknown")
Identity = Literal["start-time", "pid-file-mtime", "assumed"]

PREVIOUS_BOOT_MARGIN_S = 60  # btime moves when the clock is stepped after boot
PID_FILE_MTIME_SLACK_S = 2  # btime is a whole second; copies may keep whole-second mtimes


class HostFacts(Value):
    """Run-wide facts about the host view."""

    proc_read: bool  # false: offline, or the proc root is not readable
    live: bool
    btime: int | None
    clock_ticks: int
    hidepid: bool = False
    root_on_tmpfs: bool | None = None  # None: unknown filesystem
    daemon_runs: bool = False  # a containerd daemon runs on the root (H009): it has the shims' news

    boot: float | None = None  # when the host booted, to a tick (a live host), else btime's second is used

    def start_epoch(self, ticks: int) -> float | None:
        return start_epoch(ticks, self.boot, self.btime, self.clock_ticks)


class Decision(Value):
    verdict: Verdict
    identity: Identity | None = None
    exit_status: int | None = None
    exit_status_source: str | None = None
    findings: tuple[Finding, ...] = ()


Check = Callable[[ProcessRecord, ProcessFacts, HostFacts], Decision | None]


def _exit_recorded(rec: ProcessRecord, facts: ProcessFacts, host: HostFacts) -> Decision | None:
    if rec.exit_status is None or lives_under_its_shim(rec, facts, host):
        return None
    found = []
    if recorded_process_lives(rec, facts):
        found.append(finding("L007", f"pid {facts.pid} is alive and is the recorded process, "
                             f"but its recorded exit ({rec.exit_source}) says {rec.exit_status}", rec.rel))
    return Decision("exited", exit_status=rec.exit_status, exit_status_source=rec.exit_source,
                    findings=tuple(found))


def lives_under_its_shim(rec: ProcessRecord, facts: ProcessFacts, host: HostFacts) -> bool:
    """The recorded process is alive, not a zombie, and its parent is its own shim: it has not
    exited, whatever exitStatus says (SPEC §2 rule 3).  The rest of the table then decides it."""
    if not host.proc_read or facts.stat is None or not facts.parent_is_shim or facts.stat.exited:
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
    said = facts.shim_reports
    if said is not None and said.status == "stopped" and said.exit_status is not None:
        # no pid file, but its live shim, asked, says the process it started exited: a task
        # containerd re-adopts stopped (a bundle made again beside its hidden twin)
        held = () if host.daemon_runs else (finding(
            "L011", f"no pid file, but its shim (pid {facts.shim_pid}), asked, says pid {said.pid} exited "
            f"{said.exit_status}: the shim's memory holds it, the only copy while no daemon is connected to it",
            rec.rel),)
        return Decision("exited", exit_status=said.exit_status, exit_status_source="shim", findings=held)
    why = (f"its shim (pid {facts.shim_pid}) is {facts.shim_state} without a child"
           if facts.shim_pid else "no shim is alive for it")
    logged = f"; runc's log.json says: {quoted(rec.runtime_error)}" if rec.runtime_error is not None else ""
    return Decision("not-started", findings=(finding(
        "L005", f"no usable pid file and {why}: the start never finished{logged}", rec.rel),))


def _pid_gone(rec: ProcessRecord, facts: ProcessFacts, host: HostFacts) -> Decision | None:
    if facts.stat is not None:
        return None
    if rec.exit_held_by_shim and facts.shim_state in ("alive", "stopped"):
        # with no daemon on the root, the shim's memory is the only copy of the status; what the
        # daemon that starts does with it is its predictor's to say (it depends on the version)
        said = facts.shim_reports
        told = said is not None and said.exit_status is not None and said.pid == facts.pid
        status = f"its exit status, {said.exit_status} (the shim says so, asked)" if told else "its exit status"
        held = () if host.daemon_runs else (finding(
            "L011", f"pid {facts.pid} has exited while its shim (pid {facts.shim_pid}) lives: the shim's memory "
            f"holds {status}, the only copy while no daemon is connected to it", rec.rel),)
        if told:
            return Decision("exited", exit_status=said.exit_status, exit_status_source="shim", findings=held)
        return Decision("exited", exit_status_source="shim-memory", findings=held)
    if host.hidepid:
        return Decision("unknown", findings=(finding(
            "L006", f"pid {facts.pid} is not visible, but /proc hides other users' "
            "processes (hidepid): run as root", rec.rel),))
    # a process of a previous boot is gone as surely: say so (L009), so that a whole root left by
    # a previous boot can be told (`recover guard`)
    evidence = previous_boot_evidence(rec, host)
    return Decision("vanished", findings=(finding(
        "L001", f"pid {facts.pid} is gone and no exit status was recorded", rec.rel),)
        + ((finding("L009", evidence, rec.rel),) if evidence is not None else ()))


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
    recorded = rec.start
    observed = facts.stat.starttime
    if recorded is not None:
        if recorded == observed:
            return None
        return Decision("pid-reused", "start-time", findings=(finding(
            "L002", f"pid {facts.pid} started at tick {observed}, the recorded process at "
            f"tick {recorded}: it is another process", rec.rel),))
    mtime_ns = rec.pid_mtime_ns if facts.pid_source == "pid-file" else None
    started = host.start_epoch(observed)
    if mtime_ns is not None and started is not None and started > mtime_ns / 1e9 + PID_FILE_MTIME_SLACK_S:
        return Decision("pid-reused", "pid-file-mtime", findings=(finding(
            "L002", f"pid {facts.pid} started {started - mtime_ns / 1e9:.0f} s after the pid "
            "file was written: it is another process", rec.rel),))
    return None


def _zombie(rec: ProcessRecord, facts: ProcessFacts, host: HostFacts) -> Decision | None:
    assert facts.stat is not None
    if not facts.stat.exited:
        return None
    code = facts.stat.exit_code
    status = wait_status_to_exit(code) if code is not None else None
    shown = f"exit status {status}" if status is not None else "exit status unreadable (kernel < 3.5)"
    how = "exited" if facts.stat.state in "ZXx" else "is exiting (killed, held back by an unreaped zombie)"
    shim = (f"its shim (pid {facts.shim_pid}, {facts.shim_state}) does not reap it" if facts.shim_pid is not None
            else "its shim is gone")
    return Decision("zombie", identity_of(rec, facts, host), status, "zombie-stat" if status is not None else None,
                    (finding("L004", f"pid {facts.pid} {how} ({shown}) and {shim}", rec.rel),))


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
    ("an exit status is recorded", _exit_recorded),
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


_CHECKS = tuple(check for _, check in VERDICT_CHECKS)


def decide_verdict(rec: ProcessRecord, facts: ProcessFacts, host: HostFacts) -> Decision:
    for check in _CHECKS:
        decision = check(rec, facts, host)
        if decision is not None:
            return decision
    raise AssertionError("the last check always decides")  # pragma: no cover


def identity_of(rec: ProcessRecord, facts: ProcessFacts, host: HostFacts) -> Identity:
    """How the live pid was shown to be the recorded process (after _identity let it pass)."""
    if rec.start is not None:
        return "start-time"
    if facts.pid_source == "pid-file" and rec.pid_mtime_ns is not None and host.btime is not None:
        return "pid-file-mtime"
    return "assumed"


def _same_start(rec: ProcessRecord, facts: ProcessFacts) -> bool:
    return facts.stat is not None and rec.start == facts.stat.starttime


def recorded_process_lives(rec: ProcessRecord, facts: ProcessFacts) -> bool:
    """The pid is alive, not a zombie, and its start ticks are the recorded ones."""
    return facts.stat is not None and _same_start(rec, facts) and not facts.stat.exited


QUOTE_LIMIT = 160


def quoted(text: str) -> str:
    """Text from a file of the root, for a message: escaped, and cut when long."""
    shown = printable(text)
    return f'"{shown[:QUOTE_LIMIT]}"' + ("..." if len(shown) > QUOTE_LIMIT else "")


def previous_boot_evidence(rec: ProcessRecord, host: HostFacts) -> str | None:
    """Why the process's files belong to a previous boot, or None.  Never on a tmpfs (it cannot
    outlive a boot) and only with a margin, since btime moves when the clock is stepped."""
    mtime_ns = rec.pid_mtime_ns
    if host.root_on_tmpfs is not False or host.btime is None or mtime_ns is None:
        return None
    age = host.btime - mtime_ns / 1e9
    if age <= PREVIOUS_BOOT_MARGIN_S:
        return None
    return f"the pid file was written {age:.0f} s before this boot (btime {host.btime})"
