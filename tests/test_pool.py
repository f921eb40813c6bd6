"""A large root is judged by forked workers (recover/pool.py): the output must be the one a single
process writes, byte for byte, whatever the layout, the selection or the proc root."""

from __future__ import annotations

import shutil

import orjson
import psutil
import pytest
from reference import CRON, WEB
from reference_v2 import extract, scan_args
from typer.testing import CliRunner

import recover.scan
from recover.builders import become_subreaper
from recover.cli import app
from recover.generations.containerd_0_2.builder import RootBuilder
from recover.pool import WorkerFailed
from recover.render import render_json
from recover.scan import Scan

runner = CliRunner()


@pytest.fixture
def pooled(monkeypatch):
    """Every scan forks workers: one container a shard, three workers whatever the CPUs."""

    def pool() -> None:
        monkeypatch.setattr(recover.scan, "POOL_MIN_CONTAINERS", 1)
        monkeypatch.setattr(recover.scan, "POOL_SHARD", 1)
        monkeypatch.setattr(recover.scan, "usable_cpus", lambda: 3)

    return pool


def invoke(args: list[str]) -> bytes:
    result = runner.invoke(app, ["scan", *args])
    assert result.exit_code == 0, result.output
    return result.stdout_bytes


def without_ages(output: bytes) -> bytes:
    """An orphan shim's age is counted from now, and its start from when the host booted as the
    clock says now (to a tick, which two reads of the clock may round apart): the fields two runs
    cannot share."""
    lines = []
    for line in output.splitlines():
        doc = orjson.loads(line)
        for o in doc.get("orphan_shims", []):
            o.pop("age_s")
            o.pop("started")
        lines.append(orjson.dumps(doc))
    return b"\n".join(lines)


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_workers_write_what_one_process_writes_on_a_02_root(reference, pooled, fmt):
    args = [str(reference / "root"), "--proc-root", str(reference / "proc"), "-f", fmt]
    selected = args + ["-c", WEB[:8], "-c", CRON]
    alone, alone_selected = invoke(args), invoke(selected)
    pooled()
    assert invoke(args) == alone
    assert invoke(selected) == alone_selected
    assert orjson.loads(alone_selected.splitlines()[-1])["summary"]["containers"] == 2


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_workers_write_what_one_process_writes_on_a_runtime_v2_dir(tmp_path, pooled, fmt):
    """ctrd16-multi has an orphan shim: only the merged view of every worker's shims tells it."""
    top = extract("multi", tmp_path)
    args = [*scan_args(top), "-f", fmt]
    alone = invoke(args)
    assert b'"orphan_shims":[{' in alone or b'{"orphan_shims":[{' in alone
    pooled()
    assert without_ages(invoke(args)) == without_ages(alone)


def test_a_failing_worker_is_an_internal_error_and_leaves_no_process(reference, pooled, monkeypatch):
    pooled()
    judge = Scan.judge

    def failing(self, key):
        if key == CRON:
            raise ZeroDivisionError("a bug")
        return judge(self, key)

    monkeypatch.setattr(Scan, "judge", failing)
    before = {p.pid for p in psutil.Process().children()}
    result = runner.invoke(app, ["scan", str(reference / "root"), "--proc-root", str(reference / "proc"),
                                 "-f", "json"])
    assert isinstance(result.exception, WorkerFailed) and "ZeroDivisionError: a bug" in str(result.exception)
    assert {p.pid for p in psutil.Process().children()} == before


def test_output_closed_early_ends_the_workers(reference, pooled):
    """`recover scan | head`: the scan is closed with its stream; no worker is left behind."""
    pooled()
    before = {p.pid for p in psutil.Process().children()}

    class Closed:
        written = 0

        def write(self, data: bytes) -> None:
            self.written += 1
            if self.written == 3:
                raise BrokenPipeError

    with Scan(str(reference / "root"), proc_root=str(reference / "proc")) as s, pytest.raises(BrokenPipeError):
        render_json(s, Closed())
    assert {p.pid for p in psutil.Process().children()} == before


def test_workers_write_what_one_process_writes_on_a_live_root(tmp_path, pooled):
    """Live processes under the stand-in shim, judged against this host's /proc: each worker has
    its own view of the host, and an orphan shim (its container dir gone) is told once, by the
    parent, from what every worker saw."""
    become_subreaper()  # a killed shim's child comes back here, as to systemd
    ids = [f"{n:02x}" + "0" * 62 for n in range(6)]
    with RootBuilder(tmp_path / "root") as b:
        b.start_process(ids[0], "init")
        b.start_process(ids[0], "debug", exec_=True)
        exited = b.start_process(ids[1], "init", ["sh", "-c", "exit 3"])
        assert exited.wait_exit_status() == b"3"
        exited.shim.wait(5)
        b.start_process(ids[2], "init").kill_shim()  # orphaned
        zombie = b.start_process(ids[3], "init")
        zombie.stop_shim()
        zombie.kill_child()
        zombie.wait_state("Z")
        b.start_process(ids[4], "init")
        gone = b.start_process(ids[5], "init")
        shutil.rmtree(b.root / ids[5])  # its shim is now an orphan of the root
        args = [str(b.root), "-f", "json"]
        alone = invoke(args)
        verdicts = [p["verdict"] for c in orjson.loads(alone)["containers"] for p in c["processes"]]
        assert verdicts == ["running", "running", "exited", "orphaned", "zombie", "running"]
        assert [o["pid"] for o in orjson.loads(alone)["orphan_shims"]] == [gone.shim.pid]
        pooled()
        assert without_ages(invoke(args)) == without_ages(alone)


@pytest.mark.parametrize("workers, shards", [(3, 200), (2, 1), (3, 2), (2, 37)])
def test_every_shard_once_in_order_whichever_worker_takes_it(workers, shards):
    """Shards go to whichever worker asks next: every one is worked once, by some worker, and
    the items come out in shard order with at most a few shards kept before their turn."""
    import os

    from recover.pool import ordered_map

    done: list[int] = []

    def work(shard: int) -> list[bytes]:
        done.append(shard)  # in the worker's own memory: what this worker did
        if shard % 7 == 0:  # an uneven load: some shards cost more, so the workers fall out of step
            sum(range(20000))
        return [f"{shard}:{i}".encode() for i in range(shard % 3)]

    def finish() -> tuple[int, list[int]]:
        return os.getpid(), done

    stream = ordered_map(shards, work, finish, workers)
    items = []
    while True:
        try:
            items.append(next(stream))
        except StopIteration as end:
            finished = end.value
            break
    assert items == [f"{s}:{i}".encode() for s in range(shards) for i in range(s % 3)]
    pids = [pid for pid, _ in finished]
    assert len(set(pids)) == workers and os.getpid() not in pids
    assert sorted(s for _, did in finished for s in did) == list(range(shards))


def test_a_worker_gone_while_shards_are_handed_out_is_an_internal_error_not_a_closed_output(tmp_path):
    """The parent hands the next shard to a worker that was killed (SIGKILL, as the OOM killer
    does) after it sent its second shard: the scan fails as a worker failure, never as a reader
    that went away (which would end the output quietly with exit 0)."""
    import os
    import signal
    import time

    from recover.pool import WorkerFailed, ordered_map

    given: list[int] = []  # in each worker's own memory: the shards it was given

    def work(shard: int) -> list[bytes]:
        given.append(shard)
        if len(given) == 3:  # its first two shards are sent: say so, and wait to be killed
            (tmp_path / str(os.getpid())).touch()
            time.sleep(600)
        return [str(os.getpid()).encode()]

    stream = ordered_map(40, work, lambda: None, 2)
    first = int(next(stream))  # shard 0's item: the pid of the worker given shards 0 and 1
    while not (tmp_path / str(first)).exists():
        pass
    os.kill(first, signal.SIGKILL)
    while _state(first) != "Z":  # dead, not reaped: nothing reads its shard numbers any more
        pass
    with pytest.raises(WorkerFailed):
        for _ in stream:  # shard 1 comes from its pipe; then the parent hands it another shard
            pass


def _state(pid: int) -> str:
    """A process's state letter (R, S, Z...) from its stat line."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    return data[data.rindex(b")") + 2:].split()[0].decode()
