"""What dockerd 20.10 does to each container on its own restart, after containerd's restore
(moby v20.10.24 daemon/daemon.go restore(), restartmanager; SPEC-v2 §2b):

- containerd's task still runs (`alive`): kept with live-restore; else stopped (`shutdownContainer`:
  the stop signal, then SIGKILL after the stop timeout), then started again if its restart
  policy says so;
- the task is stopped (its init exited under a live shim that 1.6 re-adopted): the exit code the
  shim held is recorded; the task is gone (containerd cleaned it up, or never loaded it): 255;
- a container Docker shows exited is started if its policy says so (`always`; `unless-stopped`
  unless stopped by hand; `on-failure` after a non-zero exit, within its retries), once started
  before; else an `--rm` container is removed.

A container's init is its pid namespace's init: the kernel drops a signal it has no handler for
(SIGKILL aside), so a stop it does not catch waits out the whole timeout and ends in SIGKILL (137)."""

from __future__ import annotations

import os
import signal
from typing import Any

import msgspec

from ....fsread import printable
from ....host import read_proc_file
from ....rules import Finding, finding
from ....value import Value
from . import DockerRecord, DockerView

LIVE = ("running", "orphaned")
GONE_WOULD = ("clean-up", "kill-live-processes", "block-then-kill", "clean-up-and-leak", "delete-silently-and-leak",
              "skip-and-leak")
LEAKS = ("clean-up-and-leak", "delete-silently-and-leak", "skip-and-leak")
LOST = 255  # moby's restoredProcess.Delete of a task containerd no longer has


class DockerPrediction(Value):
    would: str | None
    exit_code: int | None  # what `docker inspect` shows after dockerd's restart (None: it runs, or unknown)
    why: str
    stale: bool  # Docker's record contradicts /proc: `docker ps` says what is not so
    findings: tuple[Finding, ...] = ()


def restarts(rec: DockerRecord, exit_code: int | None) -> bool | None:
    """moby's restartmanager.ShouldRestart for the container, once started before; None: it
    depends on an exit code not known yet."""
    if not rec.started_before:
        return False
    policy = rec.restart_policy
    if policy == "always":
        return True
    if policy == "unless-stopped":
        return not rec.manually_stopped
    if policy == "on-failure":
        if rec.max_retries and rec.restart_count >= rec.max_retries:
            return False
        return None if exit_code is None else exit_code != 0
    return False


class SignalFacts(Value):
    """What a stop signal does to a process: whether it has a handler for it, and whether it is
    its pid namespace's init (which the kernel shields from signals it has no handler for)."""

    caught: bool | None
    namespace_init: bool | None


def signal_facts(host: Any, pid: int | None, signame: str) -> SignalFacts:
    """From /proc/<pid>/status: SigCgt (the signals it handles) and NSpid (its pid in each pid
    namespace, the innermost last: 1 for a namespace's init)."""
    if host is None or pid is None or signame not in signal.Signals.__members__:
        return SignalFacts(None, None)
    caught = namespace_init = None
    for line in (read_proc_file(os.path.join(host.proc_root, str(pid), "status")) or b"").splitlines():
        if line.startswith(b"SigCgt:"):
            caught = bool(int(line.split()[1], 16) >> (signal.Signals[signame].value - 1) & 1)
        elif line.startswith(b"NSpid:"):
            namespace_init = line.split()[-1] == b"1"
    return SignalFacts(caught, namespace_init)


def stop_outcome(rec: DockerRecord, facts: SignalFacts) -> tuple[int | None, str]:
    """The exit code a stop ends in (None: its handler decides), and how the stop goes."""
    sig, timeout = rec.stop_signal, rec.stop_timeout
    if sig == "SIGKILL":
        return 137, "SIGKILL"
    if facts.caught:
        return None, (f"{sig}, which its init handles (it exits as its handler decides; SIGKILL after "
                      f"{timeout} s if it has not)")
    if facts.caught is False and facts.namespace_init:
        return 137, (f"{sig}, which its init never gets (a pid namespace's init gets no signal it has no handler "
                     f"for): SIGKILL after the whole stop timeout, {timeout} s")
    if facts.caught is False and facts.namespace_init is False and sig in signal.Signals.__members__:
        return 128 + signal.Signals[sig].value, f"{sig}, which ends it (it has no handler, and no pid namespace shields it)"
    return None, f"{sig}, then SIGKILL after {timeout} s if it has not exited"


def _then(rec: DockerRecord, restart: bool | None) -> str:
    if restart:
        return f"then starts it again (restart policy {rec.restart_policy})"
    if restart is None:
        return f"then starts it again only if it exited non-zero (restart policy {rec.restart_policy})"
    if rec.auto_remove:
        return "then removes it (--rm)"
    return f"then leaves it exited (restart policy {rec.restart_policy}{', stopped by hand' if rec.manually_stopped else ''})"


def predict_dockerd(rec: DockerRecord, view: DockerView, containerd_would: str | None, init: Any | None,
                    host: Any, rel: str, daemon: str, shim_stopped: int | None = None,
                    containerd_runs: bool = False) -> DockerPrediction:
    """dockerd's restore of one container, after `containerd_would` (None: no task at all).
    `init`: the task's init judgement (verdict, pid, exit_status), if there is a task;
    `shim_stopped`: the pid of its task's shim when that is stopped (SIGSTOP); `containerd_runs`:
    containerd runs on the root already (docker.service starts after containerd.service), so the
    task is judged as it is now, not after a restore of containerd's."""
    where = f"{printable(rec.name or rec.id[:12])}"
    if rec.problem is not None:
        return DockerPrediction(None, None, f"Docker's record cannot be read: {rec.problem}", False,
                                (finding("F202", f"Docker's record of {where}: {rec.problem}: what dockerd does to "
                                         "it on its restart is not judged", rel),))
    verdict = init.verdict if init is not None else None
    runs = verdict in LIVE
    stale = (rec.running and not rec.paused and init is not None and not runs and verdict not in (None, "unknown")) \
        or (rec.running and init is None) or (not rec.running and runs)
    found: list[Finding] = []
    if stale and rec.running:
        shown = "Up" if rec.pid else "running"
        found.append(finding("R203", f"Docker's record says {where} is running (pid {rec.pid}), but "
                             + (f"its init is {verdict}" if init is not None else "containerd has no task for it")
                             + f": Docker shows it {shown} while nothing of it runs"
                             + (" (dockerd runs: it missed the exit while containerd was down; `docker stop` it, or "
                                "restart dockerd, to make Docker see it)" if view.dockerd is not None else ""), rel))
    if not rec.running:
        if runs:
            found.append(finding("R203", f"Docker's record says {where} is {rec.status}, but its init (pid "
                                 f"{init.pid}) runs: Docker neither stops nor tracks it", rel))
        restart = restarts(rec, rec.exit_code)
        if restart:
            return DockerPrediction("start", None, f"Docker shows it {rec.status} (exit {rec.exit_code}); its restart "
                                    f"policy ({rec.restart_policy}) starts it when dockerd starts", stale, tuple(found))
        if rec.auto_remove:  # restore removes every --rm container it does not start
            return DockerPrediction("remove", None, f"Docker shows it {rec.status}; dockerd's restore removes it "
                                    "(--rm)", stale, tuple(found))
        return DockerPrediction("keep-exited", rec.exit_code, f"Docker shows it {rec.status}: nothing changes",
                                stale, tuple(found))
    # Docker shows it running: what containerd's restore left decides (or, containerd running
    # already, what is there now: a live shim keeps its task, whatever its files say)
    if containerd_runs:
        containerd_would = "reconnect" if shim_stopped is None and verdict in LIVE + ("exited",) else "clean-up"
    outcome = _running_outcome(rec, view, containerd_would, init, host, where, rel)
    if outcome is None:
        return DockerPrediction(None, None, f"what {daemon} does to the task ({containerd_would or 'unknown'}) leaves "
                                "dockerd's decision open", stale, tuple(found))
    would, exit_code, why, more = outcome
    found += more
    if shim_stopped is not None and (containerd_runs or (would or "").endswith("restart")):
        # containerd up: restore's kill goes to the stopped shim; containerd restarted: it gave up on
        # the shim and removed the task, but the shim still holds the socket of that name, and a
        # restart's new shim reaches it.  Either way the call never returns
        how = "its restore's call to the stopped shim never returns" if containerd_runs else \
            "its restart policy starts it again and the new shim reaches the stopped one's socket"
        found.append(finding("R204", f"dockerd's start hangs on {where}'s stopped shim (pid {shim_stopped}): {how}, "
                             f"and dockerd's API never answers; resume it first: kill -CONT {shim_stopped}", rel))
        return DockerPrediction("hang", exit_code, f"dockerd hangs on the stopped shim (pid {shim_stopped}) until it "
                                f"is resumed; then: {why}", stale, tuple(found))
    if view.dockerd is not None and not containerd_runs and containerd_would in GONE_WOULD:
        found.append(finding("R203", f"dockerd runs (pid {view.dockerd.pid}): when containerd's restore removes the "
                             f"task of {where}, dockerd, not yet reconnected, misses the exit and `docker ps` keeps "
                             "showing it Up until `docker stop` or dockerd's restart", rel))
    return DockerPrediction(would, exit_code, why, stale, tuple(found))


def _running_outcome(rec: DockerRecord, view: DockerView, containerd_would: str | None, init: Any | None, host: Any,
                     where: str, rel: str) -> tuple[str, int | None, str, list[Finding]] | None:
    """What dockerd's restore does to a container Docker shows running: (would, the exit code it
    then shows, why, findings); None when containerd's outcome leaves it open."""
    verdict = init.verdict if init is not None else None
    if containerd_would == "reconnect" and verdict in LIVE:
        if rec.auto_remove:  # never restarted (--rm has no policy): restore force-removes it
            how = "SIGKILLs it (restore force-removes an --rm container, live-restore or not)" if view.live_restore \
                else "stops it, then removes it (--rm)"
            return "remove", None, f"containerd keeps the task; dockerd {how}", []
        if view.live_restore:
            return "keep-running", None, (f"containerd keeps the task and live-restore is on "
                                          f"({view.live_restore_from}): dockerd keeps it running"), []
        facts = signal_facts(host, init.pid, rec.stop_signal)
        if rec.stop_timeout < 0 and not facts.caught:  # a stop with no timeout waits for an exit that never comes
            why = (f"live-restore is off: dockerd stops it with {rec.stop_signal} and no timeout (StopTimeout "
                   f"{rec.stop_timeout}), which its init does not act on: the restore waits forever")
            return "hang", None, why, [finding("R204", f"dockerd's start hangs on {where}: {why}", rel)]
        ec, how = stop_outcome(rec, facts)
        # restore's stop marks it stopped by hand: unless-stopped stays down, on-failure goes by the code
        restart = restarts(msgspec.structs.replace(rec, manually_stopped=True), ec)
        why = (f"containerd keeps the task but live-restore is off ({view.live_restore_from}): dockerd stops it "
               f"(`shutting down container considered alive by containerd`) with {how}, {_then(rec, restart)}")
        finding_ = finding("R201", f"dockerd stops {where} when it restarts, although containerd keeps it running "
                           f"(live-restore is off): the stop sends {how}; {_then(rec, restart)}. To keep it "
                           "running, set \"live-restore\": true in daemon.json before dockerd starts", rel)
        # on-failure after a code only the handler decides: started again or not, that cannot be told
        would = "stop-then-restart" if restart else None if restart is None else "stop"
        return would, None if restart else ec, why, [finding_]
    if containerd_would == "reconnect" and verdict == "exited":
        ec = init.exit_status
        restart = restarts(rec, ec)
        code = f"its exit code, {ec}" if ec is not None else "the exit code its shim holds (unknown here)"
        would = "record-exit-then-restart" if restart else "remove" if rec.auto_remove else "record-exit"
        return would, None if restart or rec.auto_remove else ec, (f"containerd re-adopts the stopped task: dockerd "
                                                                    f"records {code}, {_then(rec, restart)}"), []
    if containerd_would in GONE_WOULD or init is None:
        restart = restarts(rec, LOST)
        would = "record-exit-then-restart" if restart else "remove" if rec.auto_remove else "record-exit"
        what = "containerd has no task for it" if init is None else \
            f"containerd's restore removes the task ({containerd_would})"
        lost = finding("R202", f"dockerd records exit code 255 for {where} ({what}: its true exit is lost)"
                       + (f", then starts it again (restart policy {rec.restart_policy})" if restart else "")
                       + (" while its processes, leaked, still run: two instances at once"
                          if restart and containerd_would in LEAKS else ""), rel)
        return would, None if restart or rec.auto_remove else LOST, (f"{what}: dockerd records exit code 255, "
                                                                      f"{_then(rec, restart)}"), [lost]
    return None
