"""`recover demo`: build a root with real processes, scan it, explain each row, remove it all.

Every verdict is produced the way tests/test_live.py produces it: real processes under the
stand-in shim, judged against the live /proc.  The demo process makes itself a child subreaper
(as systemd or tini would be), so the orphans of the shims it kills come back to it, and it
reaps them when it cleans up.

Progress goes to the `progress` callback (the CLI's stderr); `out` (stdout) gets only the table,
the explanations and the hint.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from ...builders import become_subreaper
from ...host import read_stat
from ...judge import ProcessJudgement
from ...render import PLAIN, RENDERERS, Display, ScanFormat, prose
from ...scan import Scan
from ...stop import run_whole
from .builder import RootBuilder

# Test hook: with RECOVER_DEMO_PAUSE set, run_demo waits after the root is built and before it
# is scanned until its stdin is closed, so that a test can signal it while every process lives,
# or close its stdout or stderr before it writes again.
PAUSE_ENV = "RECOVER_DEMO_PAUSE"

NAMES = ("web", "batch", "cron", "cache", "queue", "old", "broken")

# What happened, from the verdict.  Formatted with the judged values (see _values).
VERDICT_SAYS = {
    "running": "pid {pid} is alive, is the recorded process (same start time) and its parent is "
               "its own shim, pid {shim_pid}",
    "exited": "the process exited with status {exit_status} and its shim recorded it in exitStatus",
    "orphaned": "pid {pid} is alive and is the recorded process, but its shim is gone and it was "
                "re-parented to {parent}: nobody is left to record its exit",
    "zombie": "the process died (exit status {exit_status}, read from /proc stat field 52) but its "
              "shim, pid {shim_pid}, is {shim_state} and never reaped it, so pid {pid} still looks alive",
    "pid-reused": "pid {pid} is alive but is another process: it started at tick {observed_start}, "
                  "the recorded process at tick {recorded_start}",
    "vanished": "pid {pid} is gone and no exit status was recorded",
    "not-started": "there is a process.json but no pid file and no live shim: the start never finished",
    "unknown": "liveness cannot be decided: /proc was not read",
}

# What containerd 0.2.9 would do on restart, from containerd_would.
CONTAINERD_SAYS = {
    "keep-running": "containerd 0.2.9 would keep it as running and wait on its exit FIFO",
    "use-exit-status": "containerd 0.2.9 would report exit status {exit_status}",
    "record-255": "containerd 0.2.9 would record exit status 255 (it cannot know the real one)",
    "kill-record-137": "containerd 0.2.9 would SIGKILL pid {pid} and record exit status 137",
    "skip-process": "containerd 0.2.9 would skip this process: its pid file is not usable",
    "drop-container": "containerd 0.2.9 would delete the whole container dir, and leak whatever "
                      "of it still runs",
    "crash-daemon": "containerd 0.2.9 would panic while reading this pid's stat, and fail to "
                    "start at all",
    "hang-daemon": "containerd 0.2.9 would hang at start, killing a frozen process that cannot die",
    None: "what containerd 0.2.9 would do cannot be predicted",
}


def container_id(name: str) -> str:
    """A Docker-like 64-hex container id, readable back through the names dict."""
    return hashlib.sha256(name.encode()).hexdigest()


def _ticks(pid: int) -> int:
    data = Path(f"/proc/{pid}/stat").read_bytes()
    return int(data[data.rindex(b")") + 2:].split()[19])  # field 22


def _dead_pid() -> tuple[int, int]:
    """A pid that existed a moment ago, and its start ticks: fork, exit, reap."""
    child = os.fork()
    if child == 0:
        os._exit(0)
    try:
        ticks = _ticks(child)  # not reaped yet: its stat is still there
    finally:
        os.waitpid(child, 0)
    return child, ticks


def build(b: RootBuilder) -> dict[str, str]:
    """Write one container per verdict into b's root, with real processes; return id -> name."""
    ids = {name: container_id(name) for name in NAMES}

    # running: an init and an exec, both under their own live shims.
    b.start_process(ids["web"], "init")
    b.start_process(ids["web"], "debug-shell", exec_=True)

    # exited: the process exits 3, its shim writes exitStatus and exits.
    batch = b.start_process(ids["batch"], "init", ["sh", "-c", "exit 3"])
    batch.wait_exit_status()
    batch.shim.wait(5)

    # orphaned: the shim is killed; the process comes back to us (a subreaper).
    b.start_process(ids["cron"], "init").kill_shim()

    # zombie: the shim hangs (SIGSTOP), then its child dies and nobody reaps it.
    cache = b.start_process(ids["cache"], "init")
    cache.stop_shim()
    cache.kill_child(signal.SIGKILL)
    cache.wait_state("Z")

    # pid-reused: the pid file names an unrelated live process; the recorded start differs.
    other = b.spawn_unrelated()
    real = _ticks(other.pid)
    b.container(ids["queue"])
    b.write_process(ids["queue"], "init", pid=other.pid, starttime=real - 500 if real > 500 else real + 500)

    # vanished: the pid of a process that is dead and reaped, with its start time recorded.
    pid, ticks = _dead_pid()
    b.container(ids["old"])
    b.write_process(ids["old"], "init", pid=pid, starttime=ticks)

    # not-started: process.json, but no pid file and no shim.
    b.container(ids["broken"])
    b.write_process(ids["broken"], "init")

    return {cid: name for name, cid in ids.items()}


def _values(p: ProcessJudgement) -> dict[str, object]:
    """The judged values the sentences are formatted with ("?" where a value is unknown)."""
    parent = None
    if p.ppid == 1:
        parent = "pid 1"
    elif p.ppid is not None:
        parent = f"pid {p.ppid}, a subreaper (not pid 1, the only parent containerd checks for)"
    values = {
        "verdict": p.verdict, "would": p.containerd_would, "pid": p.pid, "ppid": p.ppid,
        "parent": parent, "shim_pid": p.shim_pid, "shim_state": p.shim_state,
        "exit_status": p.exit_status, "recorded_start": p.recorded_start,
        "observed_start": p.observed_start,
    }
    return {k: "?" if v is None else v for k, v in values.items()}


def explain(p: ProcessJudgement) -> str:
    """One line: what happened to the process, then what containerd 0.2.9 would do on restart."""
    values = _values(p)
    happened = VERDICT_SAYS.get(p.verdict, "{verdict}").format_map(values)
    would = CONTAINERD_SAYS.get(p.containerd_would, "containerd 0.2.9 would: {would}").format_map(values)
    return f"{p.verdict} — {happened}; {would}."


def explanations(root: Path, names: dict[str, str]) -> list[str]:
    lines = []
    with Scan(str(root)) as scan:
        for c in scan.containers():
            name = names.get(c.id, c.id[:12])
            lines.extend(f"{c.id[:12]} {name}/{p.id}: {explain(p)}" for p in c.processes)
    return lines


def _children() -> list[int]:
    me = os.getpid()
    found = []
    for ent in os.scandir("/proc"):
        if ent.name.isdigit():
            st = read_stat("/proc", int(ent.name))
            if st is not None and st.ppid == me:
                found.append(int(ent.name))
    return found


def stop_every_child(timeout: float = 5.0) -> None:
    """SIGKILL and reap every child of this process until none is left.

    The demo is a subreaper: the children of each process killed here come back to it, so this
    reaches every process the demo started, even one whose start a signal cut short before the
    builder recorded it.  Only our own children are signalled: until we reap one, its pid cannot
    belong to anyone else.
    """
    deadline = time.monotonic() + timeout
    while (children := _children()) and time.monotonic() < deadline:
        for pid in children:
            for sig in (signal.SIGCONT, signal.SIGKILL):  # a stopped process dies only once resumed
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        for pid in children:
            while time.monotonic() < deadline:
                try:
                    if os.waitpid(pid, os.WNOHANG)[0]:
                        break
                except ChildProcessError:
                    break
                time.sleep(0.005)


def _wait_for_stdin_eof() -> None:
    while sys.stdin.buffer.read(4096):
        pass


def run_demo(out: BinaryIO, progress: Callable[[str], None], *, keep: bool = False,
             display: Display = PLAIN) -> None:
    """Build a demo root with real processes, scan it to `out`, explain each row, remove it all.

    It owns the process: it makes it a subreaper and, on the way out (also on an exception: a
    signal turned into one by recover.stop, a closed stdout), kills and reaps every child it has.
    """
    started = time.monotonic()
    tmp = None
    builder: RootBuilder | None = None

    def clean_up() -> None:  # safe to repeat: run_whole may start it again
        if builder is not None:
            builder.cleanup()
        stop_every_child()
        if tmp is not None and not keep:
            shutil.rmtree(tmp, ignore_errors=True)

    def make_tmp() -> None:  # held from signals: a dir made but not yet named here would be left
        nonlocal tmp
        tmp = tmp or Path(tempfile.mkdtemp(prefix="recover-demo-"))

    try:
        become_subreaper()  # like systemd or tini: orphans of killed shims come back here
        run_whole(make_tmp)
        progress(f"building demo root in {tmp} ...")
        root = tmp / "root"
        builder = RootBuilder(root, tmp / "bundles", work=tmp / "work")  # everything it makes is in tmp
        names = build(builder)
        progress(f"built {len(names)} containers with real processes under stand-in shims "
                 f"({time.monotonic() - started:.1f}s)")
        if os.environ.get(PAUSE_ENV):
            _wait_for_stdin_eof()
        progress(f"scanning {root} against /proc ...")
        with Scan(str(root)) as scan:
            RENDERERS[ScanFormat.text](scan, out, display=display)
        lines = explanations(root, names)
        text = "\n".join([
            "", "What each row means:", *lines, "",
            "To scan your own host, run `recover scan` BEFORE restarting the daemon "
            "(`recover scan --format json` gives the same report as JSON).",
        ]) + "\n"
        out.write(prose(text, display).encode("utf-8", "backslashreplace"))
        out.flush()
    finally:
        run_whole(clean_up)
        if tmp is not None:
            progress(f"stopped the demo's processes; kept its files in {tmp}" if keep else
                     f"stopped the demo's processes and removed {tmp}")


__all__ = ["run_demo", "build", "explain", "container_id", "VERDICT_SAYS", "CONTAINERD_SAYS", "PAUSE_ENV"]
