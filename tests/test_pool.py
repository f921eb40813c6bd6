"""A large root is judged by forked workers (recover/pool.py): the output must be the one a single
process writes, byte for byte, whatever the layout, the selection or the proc root."""

from __future__ import annotations

import orjson
import psutil
import pytest
from typer.testing import CliRunner

import recover.scan
from recover.cli import app
from recover.pool import WorkerFailed
from recover.render import render_json
from recover.scan import Scan
from reference import CRON, WEB
from reference_v2 import extract, scan_args

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
    """An orphan shim's age is counted from now: the one field two runs cannot share."""
    lines = []
    for line in output.splitlines():
        doc = orjson.loads(line)
        for o in doc.get("orphan_shims", []):
            o.pop("age_s")
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
