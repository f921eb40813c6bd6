"""repair on real processes under the stand-in shim (issue 3): plan, apply, refuse, undo, crash."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from fuzzing import snapshot
from procs import dead_pid
from typer.testing import CliRunner

from recover import repair as rp
from recover.builders import become_subreaper
from recover.cli import app
from recover.generations.containerd_0_2.builder import RootBuilder, process_json
from recover.generations.containerd_0_2.repair import REPAIRER
from recover.scan import Scan

runner = CliRunner()
RUNNING, ORPHAN, VANISHED, EXITED, REUSED, ZOMBIE, NOPID, DAEMONFMT = (
    (ch * 64) for ch in "abcdef01")


@pytest.fixture(scope="module", autouse=True)
def subreaper():
    become_subreaper()



def stat_of(pid: int) -> list[str] | None:
    try:
        data = open(f"/proc/{pid}/stat", "rb").read()
    except OSError:
        return None
    return data[data.rindex(b")") + 2:].decode().split()


def alive(pid: int) -> bool:
    st = stat_of(pid)
    return st is not None and st[0] not in "ZX"


@pytest.fixture
def world(tmp_path):
    """One root with a process in every state, all real."""
    with RootBuilder(tmp_path / "root") as b:
        procs = {"running": b.start_process(RUNNING, "init")}
        procs["orphan"] = b.start_process(ORPHAN, "init")
        procs["orphan"].kill_shim()
        b.container(VANISHED)
        b.write_process(VANISHED, "init", pid=dead_pid(), starttime=4242)
        procs["exited"] = b.start_process(EXITED, "init", ["sh", "-c", "exit 3"])
        procs["exited"].wait_exit_status()
        procs["exited"].shim.wait(5)
        procs["other"] = b.spawn_unrelated()
        b.container(REUSED)
        b.write_process(REUSED, "init", pid=procs["other"].pid, starttime=1)
        procs["zombie"] = b.start_process(ZOMBIE, "init")
        procs["zombie"].stop_shim()
        procs["zombie"].kill_child()
        procs["zombie"].wait_state("Z")
        yield b, procs


def status(b, cid, name="exitStatus"):
    path = b.root / cid / "init" / name
    return path.read_bytes() if path.exists() else None


def repair(root, *args):
    return runner.invoke(app, ["repair", str(root), *args])


def test_dry_run_changes_nothing_and_prints_the_plan(world):
    b, _ = world
    before = snapshot(b.root)
    table = repair(b.root)
    assert table.exit_code == 0 and "dry run: nothing was changed" in table.stdout
    doc = orjson.loads(repair(b.root, "-f", "json", "--kill-orphans").stdout)
    assert doc["schema"] == "recover.repair/1" and doc["apply"] is False
    plan = {(a["container"], a["action"]): a for a in doc["actions"]}
    assert plan[(VANISHED, "write-exit-status")]["value"] == "255"
    assert plan[(REUSED, "write-exit-status")]["value"] == "255"
    assert plan[(ZOMBIE, "write-exit-status")]["value"] == "137"
    assert plan[(ORPHAN, "kill-orphan")]["value"] == "137"
    assert not any(a["container"] in (RUNNING, EXITED) for a in doc["actions"])
    assert {a["result"] for a in doc["actions"]} == {"planned"}
    assert snapshot(b.root) == before
    assert not (b.root.parent / "root.recover-journal.jsonl").exists()


def test_apply_writes_exactly_what_the_daemon_should_have(world):
    b, procs = world
    exited_before = status(b, EXITED)
    result = repair(b.root, "--apply", "--kill-orphans")
    assert result.exit_code == 0, result.output
    assert status(b, RUNNING) is None
    assert status(b, ORPHAN) == b"137" and not alive(procs["orphan"].pid)
    assert status(b, VANISHED) == b"255"
    assert status(b, EXITED) == exited_before == b"3"
    assert status(b, REUSED) == b"255"
    assert status(b, ZOMBIE) == b"137"
    assert alive(procs["other"].pid) and alive(procs["running"].pid)  # the pid reuser is never signalled
    assert not list(b.root.rglob(".recover-tmp-*"))
    # what the daemon would now do: use the exit statuses; nothing left to repair
    again = repair(b.root, "--apply", "--kill-orphans")
    assert again.exit_code == 0 and "(nothing to repair)" in again.stdout


def test_without_kill_orphans_the_orphan_is_left_and_the_plan_says_why(world):
    b, procs = world
    result = repair(b.root, "--apply", "-f", "json")
    doc = orjson.loads(result.stdout)
    row = next(a for a in doc["actions"] if a["container"] == ORPHAN)
    assert row["action"] == "none" and "left running" in row["reason"]
    assert "never notice" in row["reason"]  # its parent is this subreaper, not pid 1
    assert alive(procs["orphan"].pid) and status(b, ORPHAN) is None


def test_journal_lines_and_undo(world):
    b, procs = world
    before_exited = status(b, EXITED)
    repair(b.root, "--apply", "--kill-orphans")
    journal = b.root.parent / "root.recover-journal.jsonl"
    lines = [orjson.loads(x) for x in journal.read_bytes().splitlines()]
    intents = [x for x in lines if x["phase"] == "intent"]
    assert intents and all({"time", "action", "path", "before", "after", "reason", "container", "process"} <= set(x)
                           for x in intents)
    assert {x["id"] for x in lines if x["phase"] == "done"} == {x["id"] for x in intents}
    result = runner.invoke(app, ["repair", "--undo", str(journal)])
    assert result.exit_code == 1  # the kill cannot be undone, and says so
    assert "a killed process cannot be revived" in result.stdout
    for cid in (VANISHED, REUSED, ZOMBIE):
        assert status(b, cid) is None
    assert status(b, ORPHAN) == b"137"  # it records a kill that happened
    assert status(b, EXITED) == before_exited


def test_rewrite_pid_from_the_shims_only_child(tmp_path):
    with RootBuilder(tmp_path / "root") as b:
        live = b.start_process(RUNNING, "init")
        pid_bytes, start_bytes = (live.dir / "pid").read_bytes(), (live.dir / "starttime").read_bytes()
        (live.dir / "pid").unlink()
        (live.dir / "starttime").unlink()
        result = repair(b.root, "--apply")
        assert result.exit_code == 0, result.output
        assert (live.dir / "pid").read_bytes() == pid_bytes  # runc's format: decimal, no newline
        assert (live.dir / "starttime").read_bytes() == start_bytes
        doc = orjson.loads(runner.invoke(app, ["scan", str(b.root), "-f", "json"]).stdout)
        p = doc["containers"][0]["processes"][0]
        assert (p["verdict"], p["containerd_would"]) == ("running", "keep-running")


@pytest.mark.parametrize("before, after", [(b"0\n", b"0"), (b"%!u(uint32=255)", b"255")])
def test_rewrite_unparseable_exit_status(tmp_path, before, after):
    with RootBuilder(tmp_path / "root") as b:
        b.container(DAEMONFMT)
        b.write_process(DAEMONFMT, "init", pid=dead_pid(), starttime=1, exit_status=before)
        assert repair(b.root, "--apply").exit_code == 0
        assert status(b, DAEMONFMT) == after


def test_quarantine_moves_doomed_dirs_whole(tmp_path):
    with RootBuilder(tmp_path / "root") as b:
        b.container(VANISHED)
        b.write_process(VANISHED, "init", pid=dead_pid(), starttime=1, process=b"{truncated")
        b.container(NOPID)
        b.write_process(NOPID, "init")  # no pid file: containerd drops it
        b.start_process(RUNNING, "init")
        b.start_process(ORPHAN, "init")
        # dropped (containerd 0.2.9 cannot decode a 0.2.8 process.json), but its process lives
        (b.root / ORPHAN / "init" / "process.json").write_bytes(
            orjson.dumps(process_json(["sleep", "1000"], capabilities_as_list=True)))
        dest = tmp_path / "quarantine"
        doc = orjson.loads(repair(b.root, "--apply", "--quarantine", str(dest), "-f", "json").stdout)
        moved = {a["container"] for a in doc["actions"] if a["action"] == "quarantine" and a["result"] == "applied"}
        assert moved == {VANISHED, NOPID}
        assert (dest / VANISHED / "init" / "process.json").read_bytes() == b"{truncated"
        assert (dest / NOPID / "init" / "exit").is_fifo()  # whole, FIFOs included
        kept = next(a for a in doc["actions"] if a["container"] == ORPHAN and a["process"] is None)
        assert kept["action"] == "none" and "needs --force" in kept["reason"]
        after = orjson.loads(runner.invoke(app, ["scan", str(b.root), "-f", "json"]).stdout)
        assert {c["id"] for c in after["containers"]} == {RUNNING, ORPHAN}
        assert next(c for c in after["containers"] if c["id"] == RUNNING)["containerd_would"] == "keep"


def test_quarantine_across_filesystems_copies_verifies_removes(tmp_path):
    src = tmp_path / "src"
    (src / "init").mkdir(parents=True)
    (src / "init" / "pid").write_bytes(b"12")
    os.mkfifo(src / "init" / "exit")
    os.symlink("pid", src / "init" / "link")
    dest = Path("/dev/shm") / f"recover-q-{os.getpid()}"
    if not Path("/dev/shm").is_dir() or os.stat("/dev/shm").st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second filesystem to move across")
    try:
        rp.move_tree(str(src), str(dest))
        assert not src.exists()
        assert (dest / "init" / "pid").read_bytes() == b"12" and (dest / "init" / "exit").is_fifo()
        assert os.readlink(dest / "init" / "link") == "pid"
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def test_refuses_while_a_daemon_runs_on_the_root(world):
    b, _ = world
    # a stand-in daemon: argv[0] "docker-containerd", and --state-dir naming this root
    daemon = subprocess.Popen(["bash", "-c", 'exec -a docker-containerd "$0" -c "import time; time.sleep(60)" '
                               '--state-dir "$1" --debug', sys.executable, str(b.root)])
    try:
        deadline = time.monotonic() + 5
        while b"docker-containerd" not in open(f"/proc/{daemon.pid}/cmdline", "rb").read():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        before = snapshot(b.root)
        result = repair(b.root, "--apply", "--kill-orphans")
        assert result.exit_code == 4 and "refusing" in result.stderr
        assert snapshot(b.root) == before
        assert "--apply will refuse" in repair(b.root).stderr  # the dry run warns
    finally:
        daemon.kill()
        daemon.wait()


def test_refuses_while_docker_containerd_pid_names_a_live_daemon(world, tmp_path):
    b, _ = world
    link = tmp_path / "docker-containerd"
    os.symlink(shutil.which("sleep"), link)
    daemon = subprocess.Popen([str(link), "1000"])
    try:
        (b.root.parent / "docker-containerd.pid").write_text(str(daemon.pid))
        assert repair(b.root, "--apply").exit_code == 4
        assert repair(b.root, "--apply", "--force").exit_code == 0  # --force overrides
    finally:
        daemon.kill()
        daemon.wait()


def test_refuses_while_another_repair_holds_the_lock(world):
    b, _ = world
    fd = rp.take_lock(os.path.realpath(b.root))
    try:
        result = repair(b.root, "--apply")
        assert result.exit_code == 4 and "another recover repair" in result.stderr
    finally:
        os.close(fd)


def test_apply_needs_the_live_proc(world, tmp_path):
    b, _ = world
    from recover.builders import capture_proc

    proc = capture_proc(tmp_path / "proc", [1])
    assert repair(b.root, "--apply", "--proc-root", str(proc)).exit_code == 4


@pytest.mark.parametrize("step", ["temp-partial", "exitStatus-before-link", "exitStatus-before-unlink"])
def test_killed_at_each_step_of_the_publish_sequence(tmp_path, step):
    with RootBuilder(tmp_path / "root") as b:
        b.container(VANISHED)
        pdir = b.write_process(VANISHED, "init", pid=dead_pid(), starttime=1)
        cmd = [sys.executable, "-m", "recover", "repair", str(b.root), "--apply"]
        crashed = subprocess.run(cmd, env={**os.environ, rp.FAULT_ENV: step}, capture_output=True, timeout=60)
        assert crashed.returncode == -signal.SIGKILL
        written = (pdir / "exitStatus").read_bytes() if (pdir / "exitStatus").exists() else None
        assert written in (None, b"255")  # never a partial file
        leftovers = list(pdir.glob(".recover-tmp-*"))
        assert leftovers or step == "exitStatus-before-unlink" or written is None
        # the next run cleans up and finishes the job
        again = subprocess.run(cmd, capture_output=True, timeout=60)
        assert again.returncode == 0, again.stderr
        assert (pdir / "exitStatus").read_bytes() == b"255"
        assert not list(pdir.glob(".recover-tmp-*"))
        # the journal is consistent with the root: undo restores the state before the first run
        journal = b.root.parent / "root.recover-journal.jsonl"
        undone = runner.invoke(app, ["repair", "--undo", str(journal)])
        assert undone.exit_code == 0, undone.stdout
        assert not (pdir / "exitStatus").exists()


def test_a_file_that_appears_meanwhile_is_never_clobbered(world):
    b, _ = world
    target = b.root / VANISHED / "init"
    with Scan(str(b.root)) as s:
        plan = list((a for c in s.containers() for a in REPAIRER.plan(c, rp.Options())))
    action = next(a for a in plan if a.container == VANISHED and a.kind == "write-exit-status")
    (target / "exitStatus").write_bytes(b"7")  # the shim got there first
    journal = rp.Journal(str(b.root.parent / "j.jsonl"))
    applier = rp.Applier(os.path.realpath(b.root), "/proc", journal)
    try:
        result = applier.apply(REPAIRER, action, rp.Options())
    finally:
        applier.close()
        journal.close()
    assert result.result == "skipped" and "appeared meanwhile" in result.detail
    assert (target / "exitStatus").read_bytes() == b"7"
    assert not list(target.glob(".recover-tmp-*"))


def test_kill_reverifies_and_never_signals_a_changed_pid(world):
    b, procs = world
    with Scan(str(b.root)) as s:
        plan = list((a for c in s.containers() for a in REPAIRER.plan(c, rp.Options(kill_orphans=True))))
    action = next(a for a in plan if a.kind == "kill-orphan")
    forged = replace(action, start_ticks=1)
    journal = rp.Journal(str(b.root.parent / "j.jsonl"))
    applier = rp.Applier(os.path.realpath(b.root), "/proc", journal)
    try:
        result = applier.apply(REPAIRER, forged, rp.Options())  # as if the pid now held a process with other start ticks
    finally:
        applier.close()
        journal.close()
    assert result.result == "skipped" and alive(procs["orphan"].pid)


def test_killed_before_the_rename_of_a_rewritten_status(tmp_path):
    with RootBuilder(tmp_path / "root") as b:
        b.container(DAEMONFMT)
        pdir = b.write_process(DAEMONFMT, "init", pid=dead_pid(), starttime=1, exit_status=b"%!u(uint32=255)")
        cmd = [sys.executable, "-m", "recover", "repair", str(b.root), "--apply"]
        crashed = subprocess.run(cmd, env={**os.environ, rp.FAULT_ENV: "rewrite-before-rename"},
                                 capture_output=True, timeout=60)
        assert crashed.returncode == -signal.SIGKILL
        assert (pdir / "exitStatus").read_bytes() == b"%!u(uint32=255)"  # the old file, whole
        assert subprocess.run(cmd, capture_output=True, timeout=60).returncode == 0
        assert (pdir / "exitStatus").read_bytes() == b"255"
        assert not list(pdir.glob(".recover-tmp-*"))


def test_quarantine_inside_the_root_is_a_usage_error(world):
    b, _ = world
    before = snapshot(b.root)
    result = repair(b.root, "--apply", "--quarantine", str(b.root / "q"))
    assert result.exit_code == 2 and "inside the root" in result.stderr
    assert snapshot(b.root) == before


def test_apply_never_rewrites_a_valid_status_nor_kills_through_a_foreign_proc(world, tmp_path):
    b, procs = world
    target = b.root / EXITED / "init"
    journal = rp.Journal(str(tmp_path / "j.jsonl"))
    applier = rp.Applier(os.path.realpath(b.root), "/proc", journal)
    foreign = rp.Applier(os.path.realpath(b.root), str(tmp_path), journal)  # not our procfs
    try:
        stale = rp.Action(EXITED, "init", "rewrite-exit-status", "255", "test")
        assert applier.apply(REPAIRER, stale, rp.Options()).result == "skipped" and (target / "exitStatus").read_bytes() == b"3"
        with Scan(str(b.root)) as s:
            kill = next(a for a in (a for c in s.containers() for a in REPAIRER.plan(c, rp.Options(kill_orphans=True)))
                        if a.kind == "kill-orphan")
        assert foreign.apply(REPAIRER, kill, rp.Options()).result == "skipped" and alive(procs["orphan"].pid)
    finally:
        applier.close()
        foreign.close()
        journal.close()


def test_undo_never_follows_a_link_in_the_path(world, tmp_path):
    b, _ = world
    repair(b.root, "--apply")
    outside = tmp_path / "outside"
    shutil.move(str(b.root / VANISHED / "init"), outside)
    os.symlink(outside, b.root / VANISHED / "init")
    result = runner.invoke(app, ["repair", "--undo", str(b.root.parent / "root.recover-journal.jsonl")])
    assert "not followed" in result.stdout
    assert (outside / "exitStatus").read_bytes() == b"255"  # the file out of the root is untouched
