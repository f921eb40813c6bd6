"""Acceptance on the real containerd 0.2.9 capture, checked against what the real daemon did."""

import json
import os
import threading

import orjson
from reference import CACHE, CRON, WEB, WORKER
from typer.testing import CliRunner

from recover.cli import app

runner = CliRunner()


def scan_json(capture, *args):
    result = runner.invoke(app, ["scan", str(capture / "root"), "--proc-root", str(capture / "proc"),
                                 "--format", "json", *args])
    assert result.exit_code == 0, result.output
    return orjson.loads(result.stdout)


def processes(doc):
    return {(c["id"], p["id"]): p for c in doc["containers"] for p in c["processes"]}


def test_reference_verdicts(reference):
    got = processes(scan_json(reference))
    assert {k: v["verdict"] for k, v in got.items()} == {
        (WEB, "init"): "running", (WEB, "debug-shell"): "running", (WORKER, "init"): "exited",
        (CRON, "init"): "orphaned", (CACHE, "init"): "vanished"}
    assert got[(WORKER, "init")]["exit_status"] == 0
    assert got[(WORKER, "init")]["exit_status_source"] == "exitStatus"
    web = got[(WEB, "init")]
    assert (web["pid"], web["recorded_start"], web["observed_start"], web["identity"]) == (30857, 194198, 194198, "start-time")
    assert web["ppid"] == 30840 and web["shim"] == {"pid": 30840, "state": "alive"}
    assert got[(WEB, "debug-shell")]["exec"] is True and web["exec"] is False
    assert got[(CRON, "init")]["shim"]["state"] == "gone"
    assert got[(CRON, "init")]["ppid"] == 1


def test_reference_predictions_match_the_real_daemon(reference):
    doc = scan_json(reference)
    would = {k: v["containerd_would"] for k, v in processes(doc).items()}
    assert would == {
        (WEB, "init"): "keep-running", (WEB, "debug-shell"): "keep-running",
        (WORKER, "init"): "use-exit-status", (CRON, "init"): "kill-record-137",
        (CACHE, "init"): "record-255"}
    # What the restarted daemon logged, per process: the same decisions.
    warnings = "\n".join(json.loads((reference / "truth.json").read_text())["warnings"])
    assert f"{CACHE}:init (pid 31003) does not exist" in warnings
    assert f"{CRON}:init shim died, killing associated process" in warnings
    # Containers whose init containerd would not keep running are gone after its restore.
    kept = {c["id"] for c in doc["containers"]
            if all(p["containerd_would"] == "keep-running" for p in c["processes"])}
    after = {p.name for p in (reference / "root-after-restore").iterdir() if p.is_dir()}
    assert kept == after == {WEB}


def test_reference_json_contract(reference):
    doc = scan_json(reference)
    assert doc["schema"] == "recover.scan/1"
    assert doc["host"] == {"live": False, "proc_root": str(reference / "proc"),
                           "boot_id": "81026294-d097-426e-882f-4fe85bac1382", "btime": 1795873557,
                           "clock_ticks": os.sysconf("SC_CLK_TCK")}
    ids = [c["id"] for c in doc["containers"]]
    assert ids == sorted(ids) == sorted([WEB, WORKER, CRON, CACHE])
    web = doc["containers"][ids.index(WEB)]
    assert [p["id"] for p in web["processes"]] == ["debug-shell", "init"]
    assert web["bundle"] == f"/var/run/docker/libcontainerd/{WEB}"
    assert (web["runtime"], web["shim"], web["labels"], web["containerd_would"]) == (
        "docker-runc", "docker-containerd-shim", [], "keep")
    for c in doc["containers"]:
        for p in c["processes"]:
            assert set(p) >= {"id", "exec", "verdict", "pid", "recorded_start", "observed_start", "identity",
                              "ppid", "shim", "exit_status", "exit_status_source", "containerd_would", "findings"}
            for f in p["findings"]:
                assert set(f) >= {"code", "severity", "message"}
    assert doc["summary"]["containers"] == 4 and doc["summary"]["processes"] == 5
    assert doc["summary"]["verdicts"] == {"running": 2, "exited": 1, "orphaned": 1, "vanished": 1}
    assert doc["orphan_shims"] == []


def test_reference_jsonl_is_one_line_per_container_then_summary(reference):
    result = runner.invoke(app, ["scan", str(reference / "root"), "--proc-root", str(reference / "proc"),
                                 "-f", "jsonl"])
    lines = [orjson.loads(x) for x in result.stdout.splitlines()]
    assert [x["id"] for x in lines[:-1]] == sorted([WEB, WORKER, CRON, CACHE])
    assert lines[-1]["summary"]["processes"] == 5
    assert lines[0] == scan_json(reference)["containers"][0]


def test_reference_table(reference):
    result = runner.invoke(app, ["scan", str(reference / "root"), "--proc-root", str(reference / "proc")])
    assert result.exit_code == 0
    rows = [line.split() for line in result.stdout.splitlines()[2:7]]
    assert rows[0][:4] == ["4b5e57f6eb2f", "debug-shell", "30894", "running"]
    assert [r[3] for r in rows] == ["running", "running", "vanished", "exited", "orphaned"]
    assert "5 process(es) in 4 container(s): running 2, exited 1, orphaned 1, vanished 1" in result.stdout
    assert "L003 error" in result.stdout


def test_offline_leaves_liveness_unknown(reference):
    result = runner.invoke(app, ["scan", str(reference / "root"), "--offline", "--format", "json"])
    assert result.exit_code == 0, result.output
    got = processes(orjson.loads(result.stdout))
    assert got[(WORKER, "init")]["verdict"] == "exited"
    assert {got[k]["verdict"] for k in got if k != (WORKER, "init")} == {"unknown"}
    assert got[(CRON, "init")]["containerd_would"] is None


def _snapshot(top):
    out = {}
    for d, dirs, files in os.walk(top):
        for n in dirs + files:
            p = os.path.join(d, n)
            st = os.lstat(p)
            data = open(p, "rb").read() if os.path.isfile(p) and not os.path.islink(p) else None
            out[os.path.relpath(p, top)] = (st.st_mode, st.st_mtime_ns, st.st_size, data)
    return out


def test_scan_never_writes_and_never_opens_a_fifo(reference):
    root = reference / "root"
    before = _snapshot(root)
    # A writer's open() of a FIFO blocks until a reader opens it: if recover opened any FIFO,
    # one of these writers would get through.
    fifos = [os.path.join(d, n) for d, _, files in os.walk(root) for n in files
             if n in ("exit", "control")]
    os.replace(fifos[0], root / WEB / "init" / "exitStatus")  # a FIFO where a file is read
    os.mkfifo(fifos[0])
    fifos.append(str(root / WEB / "init" / "exitStatus"))
    before = _snapshot(root)
    opened = []

    def writer(path):
        fd = os.open(path, os.O_WRONLY)
        opened.append(path)
        os.close(fd)

    threads = [threading.Thread(target=writer, args=(f,), daemon=True) for f in fifos]
    for t in threads:
        t.start()
    for fmt in ("table", "json", "jsonl"):
        result = runner.invoke(app, ["scan", str(root), "--proc-root", str(reference / "proc"), "-f", fmt])
        assert result.exit_code == 0
    got = processes(scan_json(reference))
    assert got[(WEB, "init")]["containerd_would"] == "hang-daemon"
    assert opened == []
    assert _snapshot(root) == before
    for f in fifos:  # release the writers
        fd = os.open(f, os.O_RDONLY | os.O_NONBLOCK)
        os.close(fd)
