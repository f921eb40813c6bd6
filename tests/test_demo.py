"""`recover demo` as a real subprocess: its output, and that it leaves nothing behind."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
VERDICTS = ("running", "exited", "orphaned", "zombie", "pid-reused", "vanished", "not-started")
TAG_VAR = "RECOVER_DEMO_TEST_TAG"  # inherited by every process the demo starts: how we find them

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="real processes, /proc")


def demo_env(tag: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("RECOVER_DEMO_PAUSE", None)
    env.update({TAG_VAR: tag, "NO_COLOR": "1", "TERM": "dumb"}, **extra)
    return env


def tagged_pids(tag: str) -> list[int]:
    """Live processes that inherited our tag, i.e. started by the demo (zombies have no environ)."""
    needle = f"{TAG_VAR}={tag}".encode()
    found = []
    for ent in os.scandir("/proc"):
        if not ent.name.isdigit():
            continue
        try:
            env = Path(ent.path, "environ").read_bytes()
        except OSError:
            continue
        if needle in env.split(b"\0"):
            found.append(int(ent.name))
    return found


def pids_mentioning(text: str) -> list[int]:
    """Processes whose argv mentions `text` (the demo's shims: their bundle is under its temp dir)."""
    found = []
    for ent in os.scandir("/proc"):
        if not ent.name.isdigit() or int(ent.name) == os.getpid():
            continue
        try:
            cmdline = Path(ent.path, "cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in cmdline:
            found.append(int(ent.name))
    return found


def announced_dir(stderr: str) -> Path:
    m = re.search(r"building demo root in (\S+) \.\.\.", stderr)
    assert m, stderr
    return Path(m.group(1))


def table(stdout: str) -> list[dict[str, str]]:
    """The scan table's rows, split by the column spans of tabulate's dashed rule."""
    lines = stdout.splitlines()
    rule = next(i for i, line in enumerate(lines) if line.startswith("----"))
    spans = [m.span() for m in re.finditer(r"-+", lines[rule])]
    spans[-1] = (spans[-1][0], None)  # the last column may be wider than its rule
    headers = [lines[rule - 1][a:b].strip() for a, b in spans]
    rows = []
    for line in lines[rule + 1:]:
        if not line.strip():
            break
        rows.append(dict(zip(headers, (line[a:b].strip() for a, b in spans))))
    return rows


def test_demo_shows_every_verdict_and_cleans_up():
    tag = uuid.uuid4().hex
    started = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "recover", "demo"], cwd=REPO, env=demo_env(tag),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - started < 30

    rows = table(r.stdout)
    assert sorted(row["VERDICT"] for row in rows) == sorted(("running",) + VERDICTS)  # init + exec
    assert all(re.fullmatch(r"[0-9a-f]{12}", row["CONTAINER"]) for row in rows)
    running = [row["PROCESS"] for row in rows if row["VERDICT"] == "running"]
    assert sorted(running) == ["debug-shell", "init"]

    head, sep, section = r.stdout.partition("\nWhat each row means:\n")
    assert sep, r.stdout
    matched = [re.match(r"^([0-9a-f]{12}) ([a-z]+/[a-z-]+: .*)$", line) for line in section.splitlines()]
    matched = [m for m in matched if m]
    # each line names the row's container as the table shows it, then the container's name
    assert [m.group(1) for m in matched] == [row["CONTAINER"] for row in rows]
    explained = [m.group(2) for m in matched]
    assert len(explained) == len(rows) == 8
    # Same order as the table, one line per row, each naming the row's verdict.
    assert [line.split(": ", 1)[1].split(" — ", 1)[0] for line in explained] == [row["VERDICT"] for row in rows]
    assert all(" — " in line and "containerd 0.2.9 would" in line for line in explained)
    assert {line.split(": ", 1)[0] for line in explained} == {
        "web/init", "web/debug-shell", "batch/init", "cron/init", "cache/init", "queue/init",
        "old/init", "broken/init"}
    assert "status 3" in next(line for line in explained if line.startswith("batch/init"))
    assert "137" in next(line for line in explained if line.startswith("cache/init"))
    assert "`recover scan`" in section and "recover scan --format json" in section

    # Progress on stderr only.
    assert "building demo root in" in r.stderr and "scanning" in r.stderr
    assert f"stopped the demo's processes and removed {announced_dir(r.stderr)}" in r.stderr
    assert "building demo root" not in r.stdout and "scanning" not in r.stdout

    # Nothing left: the temp dir, the processes in the table, anything else it started.
    assert not announced_dir(r.stderr).exists()
    pids = [int(row["PID"]) for row in rows if row["PID"] != "-"]
    assert len(pids) == 7
    survivors = set(tagged_pids(tag))
    # Gone, or the number now belongs to a process the demo did not start (pids get reused; the
    # pid-reused row's unrelated process was started, and killed, by the demo too).
    assert not survivors & set(pids)
    zombie = int(next(row["PID"] for row in rows if row["VERDICT"] == "zombie"))
    try:  # a zombie has no environ to tag: it must be reaped, not just dead
        assert Path(f"/proc/{zombie}/stat").read_bytes().rsplit(b")", 1)[1].split()[0] != b"Z"
    except FileNotFoundError:
        pass
    assert survivors == set()
    assert pids_mentioning(str(announced_dir(r.stderr))) == []


def test_the_demo_fits_the_width_columns_gives():
    """COLUMNS=80: the table, the summary and the prose below it wrap to 80 columns (at spaces)."""
    r = subprocess.run([sys.executable, "-m", "recover", "demo"], cwd=REPO,
                       env={**demo_env(uuid.uuid4().hex), "COLUMNS": "80"}, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "What each row means:" in r.stdout
    assert max(len(line) for line in r.stdout.splitlines()) <= 80, r.stdout


def test_demo_keep_leaves_the_root_but_no_process():
    tag = uuid.uuid4().hex
    r = subprocess.run([sys.executable, "-m", "recover", "demo", "--keep"], cwd=REPO,
                       env=demo_env(tag), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    kept = announced_dir(r.stderr)
    try:
        assert f"kept its files in {kept}" in r.stderr
        assert "remov" not in r.stderr  # it removed nothing, and says nothing of the kind
        assert (kept / "root").is_dir() and len(list((kept / "root").iterdir())) == 7
        assert tagged_pids(tag) == []
    finally:
        shutil.rmtree(kept, ignore_errors=True)


class LineReader(threading.Thread):
    """Reads a stream's lines as they come, so that a test can wait for one."""

    def __init__(self, stream):
        super().__init__(daemon=True)
        self.stream = stream
        self.lines: list[str] = []
        self.changed = threading.Condition()
        self.start()

    def run(self):
        for line in self.stream:
            with self.changed:
                self.lines.append(line)
                self.changed.notify_all()

    def wait_for(self, pattern: str, timeout: float = 30) -> re.Match:
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for line in self.lines:
                    if m := re.search(pattern, line):
                        return m
                left = deadline - time.monotonic()
                assert left > 0, f"no {pattern!r} in: {''.join(self.lines)}"
                self.changed.wait(left)

    def text(self) -> str:
        self.join(30)
        return "".join(self.lines)


def default_signals() -> None:
    # A shell starts background jobs (`pytest &`) with SIGINT ignored, and the ignore is
    # inherited (recover keeps an ignored signal ignored, as nohup wants): undo it in the child.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def kill_leftovers(tag: str) -> None:
    """After a failed test only: SIGKILL what the demo started (found by the tag), by pid."""
    for pid in tagged_pids(tag):
        try:
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@contextlib.contextmanager
def reaped(p: subprocess.Popen, tag: str) -> Iterator[None]:
    """Whatever the test asserts, a demo still running at the end is killed with all it started."""
    try:
        yield
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
            kill_leftovers(tag)


def start_demo(tag: str, stdout=subprocess.PIPE, stderr=subprocess.PIPE) -> subprocess.Popen:
    """The demo, paused after the build until its stdin is closed (RECOVER_DEMO_PAUSE)."""
    return subprocess.Popen([sys.executable, "-m", "recover", "demo"], cwd=REPO,
                            env=demo_env(tag, RECOVER_DEMO_PAUSE="1"), preexec_fn=default_signals,
                            stdin=subprocess.PIPE, stdout=stdout, stderr=stderr, text=True)


def assert_nothing_left(tag: str, tmp: Path) -> None:
    assert not tmp.exists()
    assert pids_mentioning(str(tmp)) == []
    assert tagged_pids(tag) == []


@pytest.mark.parametrize("when", ["while it builds", "once every process lives"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_a_signal_mid_demo_removes_everything(sig, when):
    tag = uuid.uuid4().hex
    p = start_demo(tag)
    stderr = LineReader(p.stderr)
    with reaped(p, tag):
        tmp = Path(stderr.wait_for(r"building demo root in (\S+) \.\.\.").group(1))
        if when != "while it builds":
            stderr.wait_for(r"^built ")  # the demo now waits for its stdin to close
            assert (tmp / "root").is_dir()
            shims = pids_mentioning(str(tmp))
            assert len(shims) >= 3  # web/init, web/debug-shell, cache/init (stopped)
            assert len(tagged_pids(tag)) >= len(shims) + 4  # + their children, the orphan, the reuser
        p.send_signal(sig)
        p.wait(timeout=30)
        stdout = p.stdout.read()
    text = stderr.text()
    assert p.returncode == 128 + sig, text
    assert stdout == ""  # stopped before the scan: no partial table
    assert "Traceback" not in text and "Aborted" not in text
    assert_nothing_left(tag, tmp)


def test_a_closed_stdout_ends_the_demo_cleanly():
    tag = uuid.uuid4().hex
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will ever read: the first write of the table fails (EPIPE)
    try:
        p = subprocess.Popen([sys.executable, "-m", "recover", "demo"], cwd=REPO, env=demo_env(tag),
                             stdout=write_end, stderr=subprocess.PIPE, text=True)
    finally:
        os.close(write_end)
    with reaped(p, tag):
        _, stderr = p.communicate(timeout=60)
    assert p.returncode == 0, stderr  # a reader that went away is no error of the demo
    assert "Traceback" not in stderr and "Exception ignored" not in stderr and "Broken pipe" not in stderr
    assert "stopped the demo's processes and removed" in stderr
    assert_nothing_left(tag, announced_dir(stderr))


def test_a_closed_stderr_does_not_stop_the_demo():
    tag = uuid.uuid4().hex
    p = start_demo(tag)
    stdout = LineReader(p.stdout)
    with reaped(p, tag):
        first = p.stderr.readline()
        tmp = announced_dir(first)
        p.stderr.close()  # the next progress line meets a closed pipe
        p.stdin.close()  # and the demo goes on
        p.wait(timeout=60)
    assert p.returncode == 0
    out = stdout.text()
    assert len(table(out)) == 8 and "What each row means:" in out  # the whole report
    assert_nothing_left(tag, tmp)


def test_stdout_and_stderr_on_one_closed_pipe_like_head():
    """`recover demo 2>&1 | head -2`: two lines are read, then every write meets a closed pipe."""
    tag = uuid.uuid4().hex
    read_end, write_end = os.pipe()
    try:
        p = start_demo(tag, stdout=write_end, stderr=write_end)
    finally:
        os.close(write_end)
    with reaped(p, tag):
        with os.fdopen(read_end, "r") as head:
            lines = [head.readline(), head.readline()]
        p.stdin.close()  # the demo goes on, to a pipe nobody reads
        p.wait(timeout=60)
    assert lines[1].startswith("built "), lines
    assert p.returncode == 0
    assert_nothing_left(tag, announced_dir(lines[0]))


def test_the_runtime_v2_demo_crashes_a_real_containerd_and_leaves_nothing():
    """The scene of today's layout: a real containerd (the newest the lab runs here) crashed, its
    tasks broken, scanned and restarted; what it did set against each prediction.  Nothing of the
    lab is left afterwards."""
    from recover.generations import CannotRun
    from recover.generations.runtime_v2.demo import newest_runnable

    argv = [sys.executable, "-m", "recover", "demo", "--layout", "containerd-runtime-v2"]
    try:
        version = newest_runnable()
    except CannotRun as e:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and str(e) in result.stderr and result.stdout == ""
        pytest.skip(str(e))
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                            env={**demo_env(uuid.uuid4().hex), "COLUMNS": "100"})
    assert result.returncode == 0, result.stderr
    # the scan's table (run in the daemon's namespace) and the prose fit COLUMNS, save an unbreakable word
    assert all(len(line) <= 100 or " " not in line.strip() for line in result.stdout.splitlines()), result.stdout
    did = dict(re.findall(r"^  (\w+) +([a-z-]+) \(as recover predicted\)$", result.stdout, re.M))
    # an init that exited under its live shim: 1.6 keeps the task, 1.7 and 2.x clean it up
    assert did == {"web": "reconnect", "batch": "reconnect" if version.startswith("1.6") else "clean-up",
                   "cron": "kill-live-processes", "cache": "kill-live-processes",
                   "queue": "delete-silently-and-leak", "old": "skip-and-leak"}
    assert "6 of 6 as predicted" in result.stdout
    (base,) = re.findall(rf"started a private containerd {re.escape(version)} in (\S+)", result.stderr)
    name = Path(base).name
    assert not Path(base).exists() and not pids_mentioning(name)
    cgroups = [p for p in Path("/sys/fs/cgroup").glob(f"*/{name}")]
    assert not cgroups, cgroups
