"""explain: one container or process, with the evidence, logs, events and a timeline.

On the reference capture (a real containerd 0.2.9 crashed on purpose) and on built roots with
real processes under the stand-in shim, for every verdict."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import signal
import sys
import time

import orjson
import pytest
from fuzzing import snapshot
from procs import dead_pid, ticks
from reference import CACHE, CRON, WEB, WORKER
from typer.testing import CliRunner

from recover.builders import become_subreaper
from recover.cli import app
from recover.explain import parse_log_objects, rfc3339, timeline
from recover.generations.containerd_0_2.builder import RootBuilder
from recover.generations.containerd_0_2.explain import EVENTS_TAIL

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


def ref_text(reference, target):
    return explain(reference / "root", target, "--proc-root", str(reference / "proc")).stdout


def files_of(doc, d):
    return {e["name"]: e for e in next(x for x in doc["files"] if x["dir"] == d)["entries"]}


def steps(p):
    return {s["check"]: s for s in p["evidence"]["steps"]}


def boot():
    """When this host booted, to a tick, as recover reckons start ticks on a live host (/proc/stat's
    btime is floored to the second)."""
    return time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)


def rfc(epoch):
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- the reference capture -----------------------------------------------------------------

def test_reference_cron_orphan(reference):
    doc = ref(reference, CRON[:6])
    assert doc["schema"] == "recover.explain/1" and doc["container"] == CRON and doc["process"] is None
    (p,) = doc["processes"]
    assert p["verdict"] == "orphaned" and p["containerd_would"] == "kill-record-137"
    assert "shim died" in p["containerd_why"]
    ev = p["evidence"]
    st = steps(p)
    assert len(ev["steps"]) == 10 and all(s["reached"] for s in ev["steps"])
    assert [s["decided"] for s in ev["steps"]] == [None] * 9 + ["orphaned"]
    assert st["an exit status is recorded"]["why"] == ["file absent"]
    assert st["pid not in /proc"]["why"] == ["/proc/30965/stat exists (state S, comm 'sleep')"]
    assert st["start ticks differ, or started after the pid file"]["why"] == [
        "start ticks: recorded 194222, observed 194222: same"]
    assert "is not its shim" in st["parent is its own shim"]["why"][0]
    assert ev["recorded"] == {"pid": 30965, "pid_containerd": 30965, "start_ticks": 194222,
                              "started_if_this_boot": ev["proc_now"]["started"]}
    now = ev["proc_now"]
    assert (now["state"], now["ppid"], now["comm"], now["start_ticks"]) == ("S", 1, "sleep", 194222)
    assert now["started_epoch"] == pytest.approx(doc["host"]["btime"] + 194222 / doc["host"]["clock_ticks"])
    assert ev["identity"] == "start-time"
    assert ev["parent"]["pid"] == 1 and ev["parent"]["is_its_shim"] is False
    assert ev["parent"]["argv"] == ["/sbin/init"]
    assert ev["shim"] == {"pid": None, "state": "gone"}
    files = files_of(doc, f"{CRON}/init")
    assert {files[n]["type"] for n in ("exit", "control")} == {"fifo"}
    assert files["exit"]["parsed"] == "FIFO: never opened"
    assert files["pid"]["parsed"] == "pid 30965" and files["pid"]["size"] == 5
    assert files["starttime"]["parsed"].startswith("starttime 194222")
    assert files["exitStatus"]["type"] == "missing"
    assert "capabilities an object" in files["process.json"]["parsed"]
    assert files["pid"]["mtime"].endswith("+00:00")
    assert "docker-runc" in files_of(doc, CRON)["state.json"]["parsed"]
    assert [e["type"] for e in doc["events"]] == ["start-container"]
    assert doc["repair_would"][0]["action"] == "none" and "SIGKILL" in doc["repair_would"][0]["reason"]
    times = [t["epoch"] for t in doc["timeline"]]
    assert times == sorted(times) and doc["timeline"][-1]["what"] == "now"
    whats = [t["what"] for t in doc["timeline"]]
    assert whats.index("state.json written") < whats.index("pid written") < whats.index("event start-container")
    assert whats[0].startswith("process started (pid 30965")

    text = ref_text(reference, CRON[:6])
    for line in ("process init: orphaned",
                 "- an exit status is recorded: no (file absent)",
                 "- pid not in /proc: no (/proc/30965/stat exists (state S, comm 'sleep'))",
                 "start ticks: recorded 194222, observed 194222: same",
                 "- otherwise: the shim is gone: YES -> orphaned",
                 "parent:    pid 1 ('systemd'), NOT its shim; argv '/sbin/init'",
                 "containerd 0.2.9 would: kill-record-137: ppid is 1",
                 "init: none - left running (no --kill-orphans)",
                 "type=start-container"):
        assert line in text, line


def test_reference_worker_shows_the_shim_log(reference):
    doc = ref(reference, WORKER)
    (p,) = doc["processes"]
    assert p["verdict"] == "exited" and p["exit_status"] == 0
    assert p["logs"]["shim-log.json"] == {"entries": [{"level": "warn", "msg": "close |1: file already closed"}],
                                          "error": None}
    assert steps(p)["an exit status is recorded"]["decided"] == "exited"
    assert [s["reached"] for s in p["evidence"]["steps"]].count(True) == 1
    assert files_of(doc, f"{WORKER}/init")["exitStatus"]["parsed"] == 'exitStatus 0 from "exitStatus"'
    assert files_of(doc, f"{WORKER}/init")["shim-log.json"]["parsed"] == "1 entry"
    assert p["containerd_would"] == "use-exit-status"
    text = ref_text(reference, WORKER)
    assert "level=warn msg=close |1: file already closed" in text
    assert "- /proc not read: not reached" in text


def test_one_process_of_a_container(reference):
    doc = ref(reference, f"{WEB[:8]}/debug-shell")
    assert doc["process"] == "debug-shell"
    assert [p["id"] for p in doc["processes"]] == ["debug-shell"]
    ev = doc["processes"][0]["evidence"]
    assert doc["processes"][0]["verdict"] == "running"
    assert ev["parent"]["is_its_shim"] is True and ev["shim"]["pid"] == ev["parent"]["pid"]
    assert "docker-containerd-shim" in ev["shim"]["argv"][0] and ev["shim"]["argv"][1] == WEB
    assert [d["dir"] for d in doc["files"]] == [f"{WEB}/debug-shell"]
    assert all(a["process"] in (None, "debug-shell") for a in doc["repair_would"])


def test_vanished_and_offline(reference):
    doc = ref(reference, CACHE)
    p = doc["processes"][0]
    assert p["verdict"] == "vanished" and p["containerd_would"] == "record-255"
    vanished = steps(p)["pid not in /proc"]
    assert vanished["decided"] == "vanished" and "stat does not exist" in vanished["why"][0]
    assert p["evidence"]["proc_now"] is None
    offline = explain_json(reference / "root", CACHE, "--offline")
    p = offline["processes"][0]
    assert p["verdict"] == "unknown" and p["containerd_would"] is None
    reached = [s for s in p["evidence"]["steps"] if s["reached"]]
    assert reached[-1]["check"] == "/proc not read" and reached[-1]["why"][0] == "offline: /proc was not read"
    assert "cannot be told without /proc" in p["containerd_why"]
    assert "offline: /proc not read" in explain(reference / "root", CACHE, "--offline").stdout


@pytest.mark.parametrize("target, message", [("zzz", "no container matches"), ("4", "ambiguous"),
                                             (f"{WEB}/nope", "has no process"), ("/init", "no container id")])
def test_bad_targets_are_usage_errors(reference, target, message):
    (reference / "root" / "4x").mkdir()
    result = runner.invoke(app, ["explain", target, "--root", str(reference / "root")])
    assert result.exit_code == 2 and message in result.stderr and result.stdout == ""


def test_a_root_given_as_the_target_is_said_to_be_a_path(reference):
    result = runner.invoke(app, ["explain", str(reference / "root")])
    assert result.exit_code == 2 and result.stdout == ""
    assert "is a path, not a container" in result.stderr and "--root" in result.stderr


def test_explain_never_writes(reference):
    before = snapshot(reference / "root")
    for target in (WEB, CRON, CACHE, WORKER, f"{WEB}/debug-shell"):
        for fmt in ("text", "json"):
            explain(reference / "root", target, "--proc-root", str(reference / "proc"), "-f", fmt)
    assert snapshot(reference / "root") == before


# --- every verdict on real processes -------------------------------------------------------

def test_live_verdicts(tmp_path):
    with RootBuilder(tmp_path / "root") as b:
        run = b.start_process(C, "init")
        orphan = b.start_process(C, "orphan")
        orphan.kill_shim()
        z = b.start_process(C, "zed")
        z.stop_shim()
        z.kill_child(signal.SIGTERM)
        z.wait_state("Z")
        done = b.start_process(C, "done", ["sh", "-c", "exit 3"])
        assert done.wait_exit_status() == b"3"
        other = b.spawn_unrelated()
        b.write_process(C, "reused", pid=other.pid, starttime=ticks(other.pid) - 500)
        b.write_process(C, "gone", pid=dead_pid(), starttime=12345, exit_status=b"")
        b.write_process(C, "never")
        before = snapshot(b.root)
        doc = explain_json(b.root, C)
        text = explain(b.root, C).stdout
        assert snapshot(b.root) == before
        got = {p["id"]: p for p in doc["processes"]}
        assert {k: v["verdict"] for k, v in got.items()} == {
            "done": "exited", "gone": "vanished", "init": "running", "never": "not-started",
            "orphan": "orphaned", "reused": "pid-reused", "zed": "zombie"}

        init = got["init"]["evidence"]
        assert steps(got["init"])["parent is its own shim"]["decided"] == "running"
        assert init["parent"]["pid"] == run.shim.pid == init["shim"]["pid"]
        assert init["parent"]["cwd"] == str(run.dir) and "containerd-shim" in " ".join(init["parent"]["argv"])
        assert init["identity"] == "start-time" and init["proc_now"]["start_ticks"] == ticks(run.pid)
        assert got["init"]["containerd_would"] == "keep-running"

        assert got["orphan"]["evidence"]["parent"]["pid"] == os.getpid()  # the subreaper, not pid 1
        assert got["orphan"]["containerd_would"] == "keep-running"
        assert "R009" in {f["code"] for f in got["orphan"]["findings"]}

        assert got["zed"]["exit_status"] == 143 and got["zed"]["evidence"]["shim"]["state"] == "stopped"
        assert steps(got["zed"])["process is a zombie"]["why"][0] == "state Z"

        assert got["done"]["exit_status"] == 3
        assert files_of(doc, f"{C}/done")["exitStatus"]["parsed"] == 'exitStatus 3 from "exitStatus"'

        reused = steps(got["reused"])["start ticks differ, or started after the pid file"]
        assert reused["decided"] == "pid-reused" and reused["why"][0].endswith(": differ")
        assert got["reused"]["containerd_would"] == "record-255"
        whats = [t["what"] for t in doc["timeline"]]
        assert any(w.startswith(f"another process started under pid {other.pid}") for w in whats)

        assert steps(got["gone"])["an exit status is recorded"]["why"] == ["empty file"]
        assert files_of(doc, f"{C}/gone")["exitStatus"]["parsed"] == "no exit status: not exited, to containerd"

        never = steps(got["never"])["no pid (pid file and shim child)"]
        assert never["decided"] == "not-started" and "no live shim" in never["why"][0]
        assert files_of(doc, f"{C}/never")["pid"]["type"] == "missing"
        assert doc["containerd_would"] == "keep"

        assert "process zed: zombie (exit status 143, from zombie-stat)" in text
        assert "process never: not-started" in text
        assert "process reused: pid-reused" in text

        one = explain_json(b.root, f"{C}/zed")
        assert [p["id"] for p in one["processes"]] == ["zed"]


# --- logs ----------------------------------------------------------------------------------

@pytest.mark.parametrize("data, expected", [
    # the reference capture's shim-log.json
    (b'{"level": "warn","msg": "close |1: file already closed"}', [{"level": "warn", "msg": "close |1: file already closed"}]),
    # back to back, no newline
    (b'{"level":"error","msg":"a"}{"level":"error","msg":"b"}', [{"level": "error", "msg": "a"}, {"level": "error", "msg": "b"}]),
    # the shim does not escape its message
    (b'{"level":"error","msg":"he said "no""}{"level":"info","msg":"ok"}',
     [{"raw": '{"level":"error","msg":"he said "no""}'}, {"level": "info", "msg": "ok"}]),
    # truncated
    (b'{"level":"error","msg":"a"}{"level":"error","msg":"trunc', [{"level": "error", "msg": "a"},
                                                                   {"raw": '{"level":"error","msg":"trunc'}]),
    # NUL bytes: alone, after a power loss, inside a broken object
    (b"\0\0\0", []),
    (b'{"level":"info","msg":"x"}\0\0\0\0', [{"level": "info", "msg": "x"}]),
    (b'{"level":"info","ms\0\0g":', [{"raw": '{"level":"info","ms\x00\x00g":'}]),
    (b"", []),
    # log.json: one a line, with time; extra fields kept
    (b'{"level":"info","msg":"x","time":"2026-11-28T14:18:19Z"}\n{"msg":"y","level":"error","err":1}\n',
     [{"level": "info", "msg": "x", "time": "2026-11-28T14:18:19Z"}, {"level": "error", "msg": "y", "err": 1}]),
    # not JSON at all, not UTF-8, a value JSON cannot carry out
    (b"panic: boom\n", [{"raw": "panic: boom"}]),
    (b'\xff{"msg":"\xfe"}', [{"raw": "\\xff"}, {"msg": "\\xfe"}]),
    (b'{"msg":"\\ud800","time":123456789012345678901234567890}', [{"msg": "\\ud800", "time": "123456789012345678901234567890"}]),
])
def test_log_objects(data, expected):
    assert parse_log_objects(data) == expected


def test_a_log_time_in_whole_seconds_is_shown_to_the_second(tmp_path):
    """runc's log.json says whole seconds: the timeline shows no milliseconds it does not know."""
    entries = [{"level": "error", "msg": "whole", "time": "2026-12-07T19:31:02Z"},
               {"level": "info", "msg": "fine", "time": "2026-12-07T19:31:02.288Z"}]
    process = {"dir": "p", "verdict": "exited", "evidence": {"proc_now": None, "recorded": {"start_ticks": None}},
               "logs": {"log.json": {"entries": entries}}}
    shown = {t["what"]: t["time"] for t in timeline([], None, [process], [], 1.8e9, {})}
    assert shown["log.json: error whole"] == "2026-12-07T19:31:02+00:00"
    assert shown["log.json: info fine"] == "2026-12-07T19:31:02.288+00:00"


def test_hostile_logs_in_json_and_text(tmp_path):
    with RootBuilder(tmp_path / "root") as b:
        b.container(C)
        pdir = b.write_process(C, "init", pid=dead_pid(), starttime=1)
        (pdir / "shim-log.json").write_bytes(b'{"level":"error","msg":"\x1b[31mred "quoted" \\ud800\xff"}'
                                             b'{"level":"warn","msg":"\\u001b]0;title\\u0007"}')
        (pdir / "log.json").write_bytes(b'{"level":"error","msg":"container_linux.go:247: starting container '
                                        b'process caused","time":"2026-11-28T14:18:19.5Z"}\n')
        os.mkfifo(pdir / "shim-log.json.fifo")
        os.mkfifo(b.write_process(C, "piped", pid=dead_pid()) / "log.json")  # never opened: it would block
        doc = explain_json(b.root, C)
        logs = doc["processes"][0]["logs"]
        assert logs["shim-log.json"]["entries"][0] == {"raw": '{"level":"error","msg":"\x1b[31mred "quoted" \\ud800\\xff"}'}
        assert logs["shim-log.json"]["entries"][1] == {"level": "warn", "msg": "\x1b]0;title\x07"}
        assert logs["log.json"]["entries"][0]["msg"].startswith("container_linux.go:247")
        assert any(t["what"].startswith("log.json: error container_linux.go") for t in doc["timeline"])
        assert files_of(doc, f"{C}/init")["shim-log.json"]["parsed"] == "2 entries, 1 not decodable (shown raw)"
        assert files_of(doc, f"{C}/init")["shim-log.json.fifo"]["type"] == "fifo"
        piped = next(p for p in doc["processes"] if p["id"] == "piped")["logs"]["log.json"]
        assert piped == {"entries": [], "error": "a fifo, not a regular file: not opened"}
        assert files_of(doc, f"{C}/piped")["log.json"]["parsed"] == "a fifo, not a regular file: not opened"
        text = explain(b.root, C).stdout
        assert "\x1b" not in text and "\x07" not in text
        assert "(not JSON, raw)" in text and "\\x1b]0;title\\x07" in text


# --- events and the timeline ---------------------------------------------------------------

def test_events_lines_and_timeline_order(tmp_path):
    # Every moment is within a few ticks after this boot: in the past however fresh the host (no
    # test may assume an uptime), and after the boot, as a start tick must be.
    hz = os.sysconf("SC_CLK_TCK")
    t = boot() + 2 / hz  # process.json written; the process starts one tick later
    ms = 0.001
    with RootBuilder(tmp_path / "root") as b:
        cdir = b.container(C)
        pdir = b.write_process(C, "init", pid=dead_pid(), starttime=3)
        (pdir / "log.json").write_bytes(json.dumps({"level": "error", "msg": "late", "time": rfc(t + 4 / hz)}).encode())
        other = "f" * 64
        lines = [{"id": C, "type": "start-container", "timestamp": rfc(t + 2 * ms)},
                 {"id": other, "type": "exit", "timestamp": rfc(t + 3 * ms), "pid": "init", "status": 1},
                 "not json {",
                 {"id": C, "type": "exit", "timestamp": rfc(t + 5 / hz), "pid": "init", "status": 137},
                 {"id": C, "type": "oom", "timestamp": "whenever"}]
        (b.root / "events.log").write_bytes(b"".join(
            (x if isinstance(x, str) else json.dumps(x)).encode() + b"\n" for x in lines) + b"\0\0\0\n")
        for path, when in ((cdir / "state.json", t - ms), (pdir / "process.json", t), (pdir / "pid", t + 2 / hz),
                           (pdir / "starttime", t + 3 / hz)):
            os.utime(path, (when, when))
        doc = explain_json(b.root, C)
        assert doc["events"] == [
            {"timestamp": rfc(t + 2 * ms), "type": "start-container"},
            {"timestamp": rfc(t + 5 / hz), "type": "exit", "pid": "init", "status": 137},
            {"timestamp": "whenever", "type": "oom"}]
        assert doc["events_note"] is None
        whats = [x["what"] for x in doc["timeline"]]
        assert whats == ["state.json written", "process.json written", "event start-container",
                         whats[3], "pid written", "starttime written", "log.json: error late",
                         "event exit pid=init status=137", "now"]
        assert whats[3].startswith("process started (recorded start tick 3")
        assert doc["timeline"][3]["epoch"] == pytest.approx(boot() + 3 / hz, abs=ms)
        assert doc["timeline"][0]["path"] == C and doc["timeline"][1]["path"] == f"{C}/init"
        text = explain(b.root, C).stdout
        assert "timestamp=" + rfc(t + 5 / hz) + " type=exit pid=init status=137" in text
        assert text.index("state.json written") < text.index("event exit pid=init status=137") < text.index("  now")


def test_events_log_is_read_from_its_last_mib(tmp_path):
    with RootBuilder(tmp_path / "root") as b:
        b.container(C)
        b.write_process(C, "init")
        first = json.dumps({"id": C, "type": "start-container", "timestamp": rfc(1)}).encode() + b"\n"
        filler = json.dumps({"id": "x", "type": "exit", "pad": "p" * 200}).encode() + b"\n"
        last = json.dumps({"id": C, "type": "delete", "timestamp": rfc(2)}).encode() + b"\n"
        (b.root / "events.log").write_bytes(first + filler * (EVENTS_TAIL // len(filler) + 2) + last)
        doc = explain_json(b.root, C)
        assert [e["type"] for e in doc["events"]] == ["delete"]
        assert "only its last" in doc["events_note"]


# --- names ---------------------------------------------------------------------------------

def test_hostile_names_escaped_in_text_exact_in_json(reference):
    evil = "evil\x1b[31m\nname"
    shutil.copytree(reference / "root" / CACHE, reference / "root" / evil, ignore=shutil.ignore_patterns("exit", "control"))
    (reference / "root" / evil / "init" / "x\x1b]0;t\x07y").write_bytes(b"")
    (reference / "root" / evil / "init" / os.fsdecode(b"bad-\xff")).write_bytes(b"")
    text = runner.invoke(app, ["explain", "evil", "--root", str(reference / "root")]).stdout
    assert "\x1b" not in text and "\x07" not in text
    assert "evil\\x1b[31m\\nname" in text and "x\\x1b]0;t\\x07y" in text and "bad-\\xff" in text
    doc = explain_json(reference / "root", "evil")
    assert doc["container"] == evil and doc["files"][1]["dir"] == f"{evil}/init"
    assert {"x\x1b]0;t\x07y", "bad-\\xff"} <= set(files_of(doc, f"{evil}/init"))


def test_rfc3339_with_nanoseconds():
    assert rfc3339("2026-11-28T14:18:19.443104628Z") == pytest.approx(1795875499.443104628)
    assert rfc3339("2026-11-28T15:18:19+01:00") == rfc3339("2026-11-28T14:18:19Z")
    assert rfc3339("yesterday") is None and rfc3339(12) is None


def test_text_never_says_none(tmp_path, reference):
    """A value that is not known is said in words, online and offline, never Python's None."""
    with RootBuilder(tmp_path / "root") as b:
        b.start_process(C, "init")
        orphan = b.start_process(C, "orphan", starttime=False)
        orphan.kill_shim()
        b.write_process(C, "gone", pid=dead_pid())
        b.write_process(C, "never")
        b.write_process(C, "garbage", pid=b"x\n", starttime=b"?", exit_status=b"%!u(uint32=9)")
        b.start_hung_shim(C, "hung")
        for args in ((), ("--offline",)):
            text = explain(b.root, C, *args).stdout
            assert "None" not in text, [line for line in text.splitlines() if "None" in line]
    (reference / "proc" / "sys" / "kernel" / "random" / "boot_id").unlink()  # a capture without boot id
    for target in (WEB, CRON, CACHE, WORKER):
        text = ref_text(reference, target)
        assert "None" not in text, [line for line in text.splitlines() if "None" in line]
        text = explain(reference / "root", target, "--offline").stdout
        assert "None" not in text, [line for line in text.splitlines() if "None" in line]


# --- /proc now, read with psutil -------------------------------------------------------------

LISTENER = """
import socket, sys, time
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen()
f = open(sys.argv[1] + ".tmp", "w")
f.write(str(s.getsockname()[1]))
f.flush()
import os; os.rename(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(1000)
"""


def test_resources_of_a_live_process(tmp_path):
    port_file = tmp_path / "port"
    with RootBuilder(tmp_path / "root") as b:
        lp = b.start_process(C, "init", [sys.executable, "-c", LISTENER, str(port_file)])
        deadline = time.monotonic() + 30
        while not port_file.exists():
            assert time.monotonic() < deadline, "the listener never wrote its port"
            time.sleep(0.01)
        port = int(port_file.read_text())
        doc = explain_json(b.root, C)
        r = doc["processes"][0]["evidence"]["proc_now"]["resources"]
        assert r["cannot_tell"] == {}
        status = dict(line.split(":", 1) for line in open(f"/proc/{lp.pid}/status").read().splitlines())
        assert r["threads"] == int(status["Threads"])
        assert abs(r["rss_bytes"] - int(status["VmRSS"].split()[0]) * 1024) < 4 << 20  # it may grow meanwhile
        assert r["cpu_user_s"] >= 0 and r["cpu_system_s"] >= 0
        assert str(port_file) in [f["path"] for f in r["open_files"]]  # still open, under its new name
        assert r["open_files_count"] == len(r["open_files"])
        (sock,) = r["sockets"]
        assert sock == {"fd": sock["fd"], "family": "AF_INET", "type": "SOCK_STREAM", "local": f"127.0.0.1:{port}",
                        "remote": None, "status": "LISTEN"}
        text = explain(b.root, C).stdout
        assert f"AF_INET SOCK_STREAM 127.0.0.1:{port} -> - LISTEN" in text and "sockets: 1" in text


def test_resources_cannot_be_told_of_a_captured_proc_or_a_moved_pid(reference, tmp_path):
    from recover.resources import process_resources

    now = ref(reference, CRON)["processes"][0]["evidence"]["proc_now"]
    assert now["resources"] is None and "live /proc" in now["resources_note"]
    assert "resources: not read" in ref_text(reference, CRON)
    me = os.getpid()
    moved = process_resources(me, ticks(me) + 1)  # the start ticks of another process under this pid
    assert set(moved["cannot_tell"].values()) == {"the process exited, or its pid was reused, while it was read"}
    assert moved["rss_bytes"] is None and moved["sockets"] is None
    gone = process_resources(dead_pid(), 1)
    assert set(gone["cannot_tell"].values()) == {"the process is gone"}


@pytest.mark.skipif(os.stat("/proc/1").st_uid == os.geteuid(), reason="needs a process of another user (run as non-root)")
def test_resources_of_another_users_process_cannot_be_told_without_root(tmp_path):
    from recover.resources import process_resources

    r = process_resources(1, ticks(1))
    assert r["cannot_tell"]["open_files"].startswith("access denied") and r["open_files"] is None
    assert r["sockets"] is None
