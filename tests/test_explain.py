"""explain: one container or process, with the evidence, logs, events and a timeline."""

from __future__ import annotations

import os
import shutil
import signal

import orjson
import pytest
from typer.testing import CliRunner

from fuzzing import snapshot
from recover.builder import RootBuilder, become_subreaper
from recover.cli import app
from recover.explain import parse_log_objects, rfc3339
from reference import CACHE, CRON, WEB, WORKER

runner = CliRunner()
C = "e" * 64


@pytest.fixture(scope="module", autouse=True)
def subreaper():
    become_subreaper()


def explain(root, target, *args):
    result = runner.invoke(app, ["explain", target, "--root", str(root), *args])
    assert result.exit_code == 0, result.output
    return result


def explain_json(root, target, *args):
    return orjson.loads(explain(root, target, "-f", "json", *args).stdout)


def ref(reference, target, *args):
    return explain_json(reference / "root", target, "--proc-root", str(reference / "proc"), *args)


def test_reference_cron_orphan(reference):
    doc = ref(reference, CRON[:6])
    assert doc["schema"] == "recover.explain/1" and doc["container"] == CRON
    (p,) = doc["processes"]
    assert p["verdict"] == "orphaned" and p["containerd_would"] == "kill-record-137"
    assert "shim died" in p["containerd_why"]
    ev = p["evidence"]
    assert [s["decided"] for s in ev["steps"]][-1] == "orphaned" and len(ev["steps"]) == 10
    assert ev["parent"]["pid"] == 1 and ev["parent"]["is_its_shim"] is False
    assert ev["proc_now"]["start_ticks"] == ev["recorded"]["start_ticks"] == 194222
    assert ev["identity"] == "start-time"
    assert {e["name"] for e in doc["files"][f"{CRON}/init"]} >= {"pid", "starttime", "process.json", "exit", "control"}
    assert {e["type"] for e in doc["files"][f"{CRON}/init"] if e["name"] in ("exit", "control")} == {"fifo"}
    assert [e["type"] for e in doc["events"]] == ["start-container"]
    assert doc["repair_would"][0]["action"] == "none"
    times = [t["epoch"] for t in doc["timeline"]]
    assert times == sorted(times) and doc["timeline"][-1]["what"] == "now"


def test_reference_worker_shows_the_shim_log(reference):
    doc = ref(reference, WORKER)
    (p,) = doc["processes"]
    assert p["verdict"] == "exited" and p["exit_status"] == 0
    assert p["logs"]["shim-log.json"] == [{"level": "warn", "msg": "close |1: file already closed"}]
    text = explain(reference / "root", WORKER, "--proc-root", str(reference / "proc")).stdout
    assert "msg=close |1: file already closed" in text


def test_one_process_of_a_container(reference):
    doc = ref(reference, f"{WEB[:8]}/debug-shell")
    assert [p["id"] for p in doc["processes"]] == ["debug-shell"]
    assert doc["processes"][0]["evidence"]["parent"]["is_its_shim"] is True
    assert list(doc["files"]) == [f"{WEB}/debug-shell"]


def test_vanished_and_offline(reference):
    assert ref(reference, CACHE)["processes"][0]["verdict"] == "vanished"
    offline = explain_json(reference / "root", CACHE, "--offline")
    steps = offline["processes"][0]["evidence"]["steps"]
    assert offline["processes"][0]["verdict"] == "unknown" and steps[-1]["check"] == "/proc not read"


@pytest.mark.parametrize("target, message", [("zzz", "no container matches"), ("4", "ambiguous"),
                                             (f"{WEB}/nope", "has no process")])
def test_bad_targets_are_usage_errors(reference, target, message):
    (reference / "root" / "4x").mkdir()
    result = runner.invoke(app, ["explain", target, "--root", str(reference / "root")])
    assert result.exit_code == 2 and message in result.stderr and result.stdout == ""


def test_live_verdicts(tmp_path):
    with RootBuilder(tmp_path / "root") as b:
        run = b.start_process(C, "init")
        z = b.start_process(C, "zed")
        z.stop_shim()
        z.kill_child(signal.SIGTERM)
        z.wait_state("Z")
        other = b.spawn_unrelated()
        b.write_process(C, "reused", pid=other.pid, starttime=1)
        b.write_process(C, "never")
        doc = explain_json(b.root, C)
        got = {p["id"]: p for p in doc["processes"]}
        assert {k: v["verdict"] for k, v in got.items()} == {
            "init": "running", "zed": "zombie", "reused": "pid-reused", "never": "not-started"}
        assert got["zed"]["exit_status"] == 143 and got["zed"]["evidence"]["shim"]["state"] == "stopped"
        assert got["init"]["evidence"]["parent"]["pid"] == run.shim.pid
        assert "containerd-shim" in " ".join(got["init"]["evidence"]["parent"]["argv"])
        reused = got["reused"]["evidence"]
        assert reused["steps"][-1]["decided"] == "pid-reused"
        assert reused["proc_now"]["start_ticks"] != reused["recorded"]["start_ticks"]


def test_hostile_names_escaped_in_text_exact_in_json(reference):
    evil = "evil\x1b[31m\nname"
    shutil.copytree(reference / "root" / CACHE, reference / "root" / evil, ignore=shutil.ignore_patterns("exit", "control"))
    text = runner.invoke(app, ["explain", "evil", "--root", str(reference / "root")]).stdout
    assert "\x1b" not in text and "evil\\x1b[31m\\nname" in text
    assert explain_json(reference / "root", "evil")["container"] == evil


def test_explain_never_writes(reference):
    before = snapshot(reference / "root")
    for target in (WEB, CRON, CACHE, WORKER):
        explain(reference / "root", target, "--proc-root", str(reference / "proc"))
    assert snapshot(reference / "root") == before


@pytest.mark.parametrize("data, expected", [
    (b'{"level": "warn","msg": "close |1: file already closed"}', [{"level": "warn", "msg": "close |1: file already closed"}]),
    (b'{"level":"error","msg":"a"}{"level":"error","msg":"b"}', [{"level": "error", "msg": "a"}, {"level": "error", "msg": "b"}]),
    (b'{"level":"error","msg":"he said "no""}{"level":"info","msg":"ok"}',
     [{"raw": '{"level":"error","msg":"he said "no""}'}, {"level": "info", "msg": "ok"}]),
    (b'{"level":"error","msg":"trunc', [{"raw": '{"level":"error","msg":"trunc'}]),
    (b"\0\0\0", []),
    (b"", []),
    (b'{"level":"info","msg":"x","time":"2026-11-28T14:18:19Z"}\n{"level":"error","msg":"y"}\n',
     [{"level": "info", "msg": "x", "time": "2026-11-28T14:18:19Z"}, {"level": "error", "msg": "y"}]),
])
def test_log_objects(data, expected):
    assert parse_log_objects(data) == expected


def test_rfc3339_with_nanoseconds():
    assert rfc3339("2026-11-28T14:18:19.443104628Z") == pytest.approx(1795875499.443104628)
    assert rfc3339("2026-11-28T15:18:19+01:00") == rfc3339("2026-11-28T14:18:19Z")
    assert rfc3339("yesterday") is None
