"""`recover repair` on runtime-v2 state dirs with live processes under the stand-in shim
(recover/generations/runtime_v2/builder.py; it answers the task API's State as a real shim does):
each action planned, carried out, re-verified and undone, and `guard --policy repair`.  The same
actions are checked against the real daemons' restarts in tests/test_repair_versions.py."""

from __future__ import annotations

import json

import orjson
import pytest
from procs import same_process_alive, ticks
from typer.testing import CliRunner

from recover.builders import become_subreaper
from recover.cli import app
from recover.generations.runtime_v2.builder import TaskBuilder

runner = CliRunner()
NS = "default"
T, POD, C = "v2repair-task", "v2repair-pod", "v2repair-ctr"


@pytest.fixture(scope="module", autouse=True)
def subreaper():
    become_subreaper()


@pytest.fixture
def builder(tmp_path):
    with TaskBuilder(tmp_path) as b:
        yield b


def repair(b: TaskBuilder, *args: str) -> tuple[int, dict]:
    result = runner.invoke(app, ["repair", *b.scan_args(), "-f", "json", "--journal",
                                 str(b.top / "journal.jsonl"), *args])
    return result.exit_code, orjson.loads(result.stdout) if result.stdout.strip() else {"stderr": result.stderr}


def acts(doc: dict) -> list[tuple[str | None, str, str]]:
    return [(a["process"], a["action"], a["result"]) for a in doc["actions"]]


def state_of(pid: int) -> str:
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    return data[data.rindex(b")") + 2:].split()[0].decode()


def test_a_stopped_shim_is_resumed(builder):
    t = builder.start_task(NS, T)
    t.shim.stop()
    code, plan = repair(builder)
    assert code == 0 and acts(plan) == [(None, "resume-shim", "planned")]
    assert state_of(t.shim.pid) == "T"  # a dry run changes nothing
    code, done = repair(builder, "--apply")
    assert code == 0 and acts(done) == [(None, "resume-shim", "applied")]
    assert state_of(t.shim.pid) != "T" and t.status() is None  # it answers again, its init runs
    journal = [json.loads(line) for line in (builder.top / "journal.jsonl").read_text().splitlines()]
    assert [(e.get("action"), e["phase"]) for e in journal] == [("resume-shim", "intent"), (None, "done")]


def test_a_resume_is_skipped_when_the_shim_is_no_longer_the_one_planned(builder):
    """Re-verified through a pidfd just before the signal: a shim that runs again is not stopped,
    and is left alone."""
    t = builder.start_task(NS, T)
    t.shim.stop()
    code, plan = repair(builder)
    t.shim.resume()
    code, done = repair(builder, "--apply")
    assert code == 0 and acts(done) == []  # planned again: nothing to do now


@pytest.mark.parametrize("version", ["1.7.34", "2.3.4"])
def test_an_exit_only_the_pods_shim_holds_goes_into_cris_checkpoint(builder, version):
    pod = builder.start_task("k8s.io", POD, sandbox=True)
    ctr = builder.start_task("k8s.io", C, ("sh", "-c", "exit 42"), pod=pod)
    assert ctr.wait() == 42
    path = builder.cri_checkpoint(C, "running", pid=ctr.init)
    before = path.read_bytes()
    code, done = repair(builder, "--containerd-version", version, "--apply")
    assert code == 0, done
    (write,) = [a for a in done["actions"] if a["action"] == "write-cri-exit"]
    assert (write["process"], write["value"], write["result"], write["target"]) == ("init", "42", "applied", str(path))
    after = orjson.loads(path.read_bytes())
    assert (after["ExitCode"], after["Pid"], after["Reason"]) == (42, 0, "") and after["FinishedAt"] > 0
    assert path.stat().st_mode & 0o777 == 0o600
    assert {k: v for k, v in after.items() if k not in ("ExitCode", "Pid", "FinishedAt")} == {
        k: v for k, v in orjson.loads(before).items() if k not in ("ExitCode", "Pid", "FinishedAt")}
    # the scan now reads CRI's record as the exit, as CRI will
    result = runner.invoke(app, ["scan", *builder.scan_args(), "-f", "json", "--containerd-version", version])
    (c,) = [c for c in orjson.loads(result.stdout)["containers"] if c["id"] == C]
    assert c["cri"]["cri_would"] == "record-exit"
    # undone: the checkpoint is back, byte for byte
    undo = runner.invoke(app, ["repair", "--undo", str(builder.top / "journal.jsonl")])
    assert undo.exit_code == 0, undo.output
    assert path.read_bytes() == before


def test_an_exit_no_file_keeps_is_said_in_the_report(builder):
    t = builder.start_task(NS, T, ("sh", "-c", "exit 3"))
    assert t.wait() == 3
    code, plan = repair(builder, "--containerd-version", "2.3.4")
    assert code == 0
    (said,) = plan["actions"]
    assert (said["process"], said["action"], said["value"], said["result"]) == ("init", "none", "3", "info")
    assert "only its live shim holds" in said["reason"]
    code, plan = repair(builder, "--containerd-version", "1.6.20")  # 1.6 re-adopts it stopped: nothing lost
    assert code == 0 and plan["actions"] == []


def test_what_the_restart_would_sigkill_is_stopped_cleanly_with_stop_orphans(builder):
    t = builder.start_task(NS, T, ("sh", "-c", "trap 'exit 42' TERM; sleep 1000 & wait"))
    e1 = t.exec("e1", ("sh", "-c", "trap 'exit 43' TERM; sleep 1000 & wait"))
    started = {p: ticks(p) for p in (t.init, e1)}
    t.shim.kill()
    code, plan = repair(builder)
    assert code == 0 and acts(plan) == [("e1", "none", "info"), ("init", "none", "info")]
    assert all("--stop-orphans" in a["reason"] for a in plan["actions"])
    # no live shim works in this (non-default) root: which root is live cannot be told, no signal
    code, refused = repair(builder, "--stop-orphans", "--apply")
    assert code == 4 and "cannot tell" in refused["refused"] and all(same_process_alive(p, s) for p, s in started.items())
    code, done = repair(builder, "--stop-orphans", "--grace", "5", "--apply", "--force")
    assert code == 0, done
    assert acts(done) == [("e1", "stop-orphan", "applied"), ("init", "stop-orphan", "applied")]
    assert [a["detail"] for a in done["actions"]] == ["exited on SIGTERM"] * 2
    # exited (zombies of this subreaper until reaped), not running
    assert all(not same_process_alive(p, s) or state_of(p) == "Z" for p, s in started.items())


def test_options_of_the_other_generation_are_usage_errors(builder):
    builder.start_task(NS, T)
    for option in (["--kill-orphans"], ["--quarantine", str(builder.top / "q")]):
        result = runner.invoke(app, ["repair", *builder.scan_args(), *option])
        assert result.exit_code == 2 and "does not apply to a containerd-runtime-v2 root" in result.stderr
    result = runner.invoke(app, ["repair", *builder.scan_args(), "--grace", "-1"])
    assert result.exit_code == 2 and "--grace" in result.stderr


def test_guard_policy_repair_resumes_a_stopped_shim_before_the_start(builder, tmp_path):
    t = builder.start_task(NS, T)
    t.shim.stop()
    result = runner.invoke(app, ["guard", *builder.scan_args()[:1], "--policy", "repair", "--report-dir",
                                 str(tmp_path / "reports"), "--run-dir", str(tmp_path / "run")])
    assert "repair: applied resume-shim" in result.stderr, result.output
    assert state_of(t.shim.pid) != "T"
    (report,) = (tmp_path / "reports").glob("guard-*.json")
    doc = orjson.loads(report.read_bytes())
    assert [(a["action"], a["result"]) for a in doc["guard"]["repairs"]] == [("resume-shim", "applied")]
