"""`recover demo`: build a root with real processes, scan it, explain each row, remove it all.

Every verdict is produced the way tests/test_live.py produces it: real processes under the
stand-in shim, judged against the live /proc.  The demo process makes itself a child subreaper
(as systemd or tini would be), so the orphans of the shims it kills come back to it, and it
reaps them when it cleans up.

Progress goes to stderr; `out` (stdout) gets only the table, the explanations and the hint.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from .builder import RootBuilder, become_subreaper
from .judge import ProcessJudgement
from .render import RENDERERS, ScanFormat
from .scan import Scan

# Test hook: RECOVER_DEMO_PAUSE=<seconds> makes run_demo sleep after the root is built and
# before it is scanned, so a test can interrupt it (SIGINT) while every process is alive.
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


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


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


@contextmanager
def _no_sigint() -> Iterator[None]:
    """Cleanup must finish: a second Ctrl-C during it would leave processes behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def run_demo(out: BinaryIO, *, keep: bool = False) -> None:
    """Build a demo root with real processes, scan it to `out`, explain each row, remove it all."""
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="recover-demo-"))
    builder: RootBuilder | None = None
    try:
        _progress(f"building demo root in {tmp} ...")
        become_subreaper()  # like systemd or tini: orphans of killed shims come back here
        root = tmp / "root"
        builder = RootBuilder(root, tmp / "bundles")
        names = build(builder)
        _progress(f"built {len(names)} containers with real processes under stand-in shims "
                  f"({time.monotonic() - started:.1f}s)")
        pause = os.environ.get(PAUSE_ENV)
        if pause:
            time.sleep(float(pause))
        _progress(f"scanning {root} against /proc ...")
        with Scan(str(root)) as scan:
            RENDERERS[ScanFormat.table](scan, out)
        lines = explanations(root, names)
        text = "\n".join([
            "", "What each row means:", *lines, "",
            "To scan your own host, run `recover scan` BEFORE restarting the daemon "
            "(`recover scan --format json` gives the same report as JSON).",
        ]) + "\n"
        out.write(text.encode("utf-8", "backslashreplace"))
        out.flush()
    finally:
        with _no_sigint():
            _progress("removing the demo's processes and files ...")
            if builder is not None:
                builder.cleanup()
            if keep:
                _progress(f"kept the demo root (its processes are stopped): {tmp}")
            else:
                shutil.rmtree(tmp, ignore_errors=True)


__all__ = ["run_demo", "build", "explain", "container_id", "VERDICT_SAYS", "CONTAINERD_SAYS", "PAUSE_ENV"]
