"""What a real containerd 0.2.9 did on crash scenarios recover once got wrong (SPEC §2 rules 1-5),
each on a built root with real processes under the stand-in shim, through the CLI."""

from __future__ import annotations

import json
import os

import orjson
import pytest
from procs import dead_pid, ticks
from typer.testing import CliRunner

from recover.builders import become_subreaper
from recover.cli import app
from recover.generations.containerd_0_2.builder import RootBuilder

runner = CliRunner()
C = "c0ffee" + "0" * 58
D = "d00d" + "0" * 60  # sorted after C


@pytest.fixture(scope="module", autouse=True)
def subreaper():
    become_subreaper()


@pytest.fixture
def builder(tmp_path):
    with RootBuilder(tmp_path / "root") as b:
        yield b


def run(*args) -> dict:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return orjson.loads(result.stdout)


def scan(root, *args) -> dict:
    return run("scan", root, "-f", "json", *args)


def container(doc, cid=C) -> dict:
    return next(c for c in doc["containers"] if c["id"] == cid)


def proc(doc, cid=C, pid_id="init") -> dict:
    return next(p for p in container(doc, cid)["processes"] if p["id"] == pid_id)


def found(item, code) -> list[dict]:
    return [f for f in item["findings"] if f["code"] == code]


def plan_for(root, cid=C, pid_id="init", *args) -> list[dict]:
    doc = run("repair", root, "-f", "json", *args)
    return [a for a in doc["actions"] if a["container"] == cid and a["process"] == pid_id]


# --- 1. an exitStatus above 255 ------------------------------------------------------------

def test_an_exit_status_above_255_is_no_status(builder):
    builder.container(C)
    pdir = builder.write_process(C, "init", pid=dead_pid(), starttime=12345, exit_status=256)
    p = proc(scan(builder.root))
    assert (p["verdict"], p["exit_status"], p["exit_status_source"]) == ("vanished", None, None)
    assert p["containerd_would"] == "use-exit-status"  # the daemon reports 256 (seen)
    (bad,) = found(p, "F039")
    assert bad["severity"] == "error" and "256" in bad["message"] and "lost" in bad["message"]
    assert found(p, "L001")

    # a valid exitStatus is never overwritten (SPEC §4): the plan says so, and --apply leaves it
    (action,) = plan_for(builder.root)
    assert action["action"] == "none" and "never overwritten" in action["reason"]
    run("repair", builder.root, "-f", "json", "--apply", "--journal", builder.root.parent / "journal")
    assert (pdir / "exitStatus").read_bytes() == b"256"


def test_an_exit_status_above_255_beside_a_live_process_under_its_shim(builder):
    live = builder.start_process(C, "init")
    (live.dir / "exitStatus").write_bytes(b"256")
    p = proc(scan(builder.root))
    assert (p["verdict"], p["pid"], p["exit_status"]) == ("running", live.pid, None)
    assert p["containerd_would"] == "use-exit-status"
    assert found(p, "F039") and "256" in found(p, "R010")[0]["message"]


# --- 2. a stray valid exitStatus beside a live process and its live shim -------------------

def test_a_stray_exit_status_beside_a_live_process_under_its_shim_is_running(builder):
    live = builder.start_process(C, "init")
    (live.dir / "exitStatus").write_bytes(b"0")
    doc = scan(builder.root)
    p = proc(doc)
    assert (p["verdict"], p["pid"], p["identity"]) == ("running", live.pid, "start-time")
    assert (p["exit_status"], p["shim"]) == (None, {"pid": live.shim.pid, "state": "alive"})
    assert p["containerd_would"] == "use-exit-status"  # the daemon takes the exit (seen)
    (leak,) = found(p, "R010")
    assert leak["severity"] == "error"
    assert all(w in leak["message"] for w in ("exitStatus says 0", "alive", "drop the state of the container", "leak"))
    # its own shim watches a live process: not an orphan shim, and nothing says it has exited
    assert doc["orphan_shims"] == []
    assert not any("exited" in f["message"] for f in doc["findings"])
    (action,) = plan_for(builder.root)
    assert action["action"] == "none" and "running" in action["reason"]


def test_a_stray_exit_status_of_an_exec_drops_that_process(builder):
    builder.start_process(C, "init")
    live = builder.start_process(C, "exec1", exec_=True)
    (live.dir / "exitStatus").write_bytes(b"0")
    p = proc(scan(builder.root), pid_id="exec1")
    assert p["verdict"] == "running"
    assert "drop the state of this process" in found(p, "R010")[0]["message"]


# --- 3. an `exit` that is a regular file on a process the daemon would watch ---------------

def test_an_exit_that_is_a_regular_file_crashes_the_daemon(builder):
    live = builder.start_process(C, "init")
    os.unlink(live.dir / "exit")
    (live.dir / "exit").write_bytes(b"")
    builder.start_process(D, "init")  # a healthy container beside it
    doc = scan(builder.root)
    p = proc(doc)
    assert (p["verdict"], p["containerd_would"]) == ("running", "crash-daemon")
    assert container(doc)["containerd_would"] == "crash-daemon"
    (crash,) = found(p, "R007")
    assert f"{C}/init/exit is a regular file, not a FIFO" in crash["message"]
    assert "operation not permitted" in crash["message"] and "level=fatal" in crash["message"]
    assert proc(doc, D)["containerd_would"] == "keep-running"


def test_an_exit_that_is_a_regular_file_matters_only_when_the_daemon_would_watch(builder):
    builder.container(C)
    pdir = builder.write_process(C, "init", pid=dead_pid(), starttime=12345, fifos=False)
    (pdir / "exit").write_bytes(b"")  # the daemon records 255 and never opens it
    p = proc(scan(builder.root))
    assert (p["verdict"], p["containerd_would"]) == ("vanished", "record-255")
    assert not found(p, "R007")


# --- 4. a pid file "+123" ------------------------------------------------------------------

def test_a_pid_file_with_a_plus_sign_is_read_as_containerd_reads_it(builder):
    live = builder.start_process(C, "init")
    (live.dir / "pid").write_bytes(b"+%d" % live.pid)
    p = proc(scan(builder.root))
    assert (p["verdict"], p["pid"], p["containerd_would"]) == ("running", live.pid, "keep-running")
    assert {f["severity"] for f in p["findings"]} == {"info"}
    assert f"read as pid {live.pid}" in found(p, "F044")[0]["message"]


# --- 5. runc's state dir missing while the init runs -----------------------------------------

def test_runc_state_missing_while_the_init_runs(builder, tmp_path):
    runc_root = tmp_path / "runc"
    live = builder.start_process(C, "init")
    other = builder.start_process(D, "init")
    (runc_root / D).mkdir(parents=True)
    (runc_root / D / "state.json").write_text(json.dumps(
        {"init_process_pid": other.pid, "init_process_start": ticks(other.pid)}))
    doc = scan(builder.root, "--runc-root", runc_root)
    (missing,) = found(container(doc), "H014")
    assert f"{runc_root}/{C} is missing" in missing["message"] and f"pid {live.pid}" in missing["message"]
    assert not found(container(doc, D), "H014") and not found(container(doc, D), "H011")
    # a --runc-root that is not there is a usage error (a typo never silences H014)
    result = runner.invoke(app, ["scan", str(builder.root), "--runc-root", str(tmp_path / "no-runc")])
    assert result.exit_code == 2 and "is no directory" in result.stderr


def test_runc_state_missing_for_a_dead_init_says_nothing(builder, tmp_path):
    (tmp_path / "runc").mkdir()
    builder.container(C)
    builder.write_process(C, "init", pid=dead_pid(), starttime=12345)
    assert not found(container(scan(builder.root, "--runc-root", tmp_path / "runc")), "H014")


# --- 6. a failed exec: runc's log.json says why ----------------------------------------------

def test_a_failed_exec_quotes_runcs_log(builder):
    builder.start_process(C, "init")
    with pytest.raises(RuntimeError):  # the runtime fails: no pid file, the shim exits
        builder.start_process(C, "exec1", ["/nonexistent/tool"], exec_=True)
    pdir = builder.root / C / "exec1"
    assert not (pdir / "pid").exists() and (pdir / "process.json").exists()
    doc = scan(builder.root)
    p = proc(doc, pid_id="exec1")
    assert (p["verdict"], p["containerd_would"]) == ("not-started", "skip-process")
    assert container(doc)["containerd_would"] == "keep"
    (never,) = found(p, "L005")
    assert "runc's log.json says" in never["message"]
    assert 'exec failed: unable to start container process: exec: "/nonexistent/tool"' in never["message"]
    assert "No such file or directory" in never["message"]


def test_runcs_log_is_quoted_escaped_and_short(builder):
    builder.container(C)
    log = b"\n".join([
        b'{"level":"error","msg":"first failure","time":"2024-01-01T00:00:00Z"}',
        b'{"level":"error","msg":"\\u001b[31mred ' + b"x" * 500 + b'","time":"2024-01-01T00:00:01Z"}',
        b'{"level":"info","msg":"not an error"}',
        b'{"level":"error", torn',
        b"\0\0\0\0",
    ])
    builder.write_process(C, "init", extra={"log.json": log})
    (never,) = found(proc(scan(builder.root)), "L005")
    message = never["message"]
    assert "\x1b" not in message and "\\x1b[31mred xxx" in message
    assert "first failure" not in message  # the last error is quoted
    assert len(message) < 400 and message.endswith('"...')


# --- 7. say what is seen -------------------------------------------------------------------

def test_a_missing_process_json_and_pid_are_said_missing(builder):
    builder.container(C)
    builder.write_process(C, "init", process=False)
    doc = scan(builder.root)
    (dropped,) = found(container(doc), "R001")
    assert dropped["message"].startswith("init/process.json is missing:")
    (no_pid,) = found(proc(doc), "F030")
    assert no_pid["message"] == "pid is missing"


def test_a_missing_state_json_is_said_missing(builder):
    (builder.root / C).mkdir()
    builder.write_process(C, "init", pid=dead_pid())
    (dropped,) = found(container(scan(builder.root)), "R001")
    assert dropped["message"].startswith("state.json is missing:")
