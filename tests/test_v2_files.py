"""runtime-v2 state dirs made of files alone (no live process): every file problem is a finding,
nothing is opened that could block, and what containerd would do with dead tasks."""

from __future__ import annotations

import hashlib
import os
import resource
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from procs import dead_pid
from typer.testing import CliRunner

from recover.cli import app

runner = CliRunner()
TASKS = "io.containerd.runtime.v2.task"


def task(state: Path, ns: str, tid: str, *, init: bytes | None = b"", files: dict[str, bytes] | None = None) -> Path:
    d = state / TASKS / ns / tid
    d.mkdir(parents=True)
    if init is not None:
        (d / "init.pid").write_bytes(init or str(dead_pid()).encode())
    (d / "config.json").write_bytes(b'{"ociVersion": "1.0.2"}')
    (d / "options.json").write_bytes(b"{}")
    (d / "runtime").write_bytes(b"")
    (d / "shim-binary-path").write_bytes(b"/usr/bin/containerd-shim-runc-v2")
    os.mkfifo(d / "log")
    for name, data in (files or {}).items():
        (d / name).write_bytes(data)
    return d


def scan(state: Path, *args: str) -> dict:
    (state / "runc").mkdir(parents=True, exist_ok=True)  # a runc root of its own, never the host's
    result = runner.invoke(app, ["scan", str(state), "-f", "json", "--runc-root", str(state / "runc"), *args])
    assert result.exit_code == 0, result.output
    return orjson.loads(result.stdout)


def by_key(doc: dict) -> dict[str, dict]:
    return {f"{c['namespace']}/{c['id']}": c for c in doc["containers"]}


def codes(c: dict) -> set[str]:
    return {f["code"] for f in c["findings"]} | {f["code"] for p in c["processes"] for f in p["findings"]}


@pytest.fixture
def state(tmp_path: Path) -> Path:
    s = tmp_path / "state"
    (s / TASKS).mkdir(parents=True)
    return s


def test_dead_tasks_hidden_empty_and_gone(state):
    task(state, "default", "gone")  # its init is dead, its shim is gone: cleaned up, nothing to kill
    task(state, "default", ".hidden")
    (state / TASKS / "default" / "empty").mkdir()
    task(state, ".hiddenns", "t1")
    got = by_key(scan(state))
    assert got["default/gone"]["containerd_would"] == "clean-up" and "R102" in codes(got["default/gone"])
    assert [p["verdict"] for p in got["default/gone"]["processes"]] == ["vanished"]
    for key in ("default/.hidden", ".hiddenns/t1"):
        assert got[key]["containerd_would"] == "skip-and-leak" and "R104" in codes(got[key]), key
    assert got["default/empty"]["containerd_would"] == "delete-silently-and-leak"
    assert got["default/empty"]["processes"] == [] and "R104" in codes(got["default/empty"])


def test_file_problems_are_findings_and_nothing_blocks(state):
    d = task(state, "default", "bad", init=b"12\n", files={"options.json": b"{not json", "config.json": b"[1]"})
    os.mkfifo(d / "address")  # a FIFO where a file belongs: never opened
    (d / "e1.pid").symlink_to("/etc/passwd")  # a link: never followed
    with open(d / "log.json", "wb") as f:
        f.truncate((1 << 20) + 1)
    c = by_key(scan(state))["default/bad"]
    found = codes(c)
    assert {"F101", "F102", "F007", "F009"} <= found
    assert c["shim"]["address_problem"] == "address is not a regular file"
    assert [p["id"] for p in c["processes"]] == ["init", "e1"]


def test_the_address_holds_the_shims_socket(state, tmp_path):
    sockets = tmp_path / "s"
    sockets.mkdir()
    name = hashlib.sha256(b"/run/containerd/containerd.sock/default/t").hexdigest()
    task(state, "default", "t", files={"address": f"unix://{sockets}/{name}".encode()})
    c = by_key(scan(state))["default/t"]
    assert c["shim"]["socket_state"] == "missing" and c["shim"]["socket"] == f"{sockets}/{name}"
    os.mknod(sockets / name, 0o600 | 0o140000)  # S_IFSOCK
    assert by_key(scan(state))["default/t"]["shim"]["socket_state"] == "present"
    d = state / TASKS / "default" / "t"
    (d / "address").unlink()
    (d / "bootstrap.json").write_bytes(orjson.dumps({"version": 2, "address": f"unix://{sockets}/{name}",
                                                     "protocol": "ttrpc"}))
    c = by_key(scan(state, "--containerd-version", "2.3.4"))["default/t"]  # 2.x reads bootstrap.json
    assert c["shim"]["address"] == f"unix://{sockets}/{name}" and c["shim"]["socket_state"] == "present"
    assert c["shim"]["address_file"] == "bootstrap.json"
    c = by_key(scan(state, "--containerd-version", "1.7.34"))["default/t"]  # 1.7 reads only `address`
    assert (c["shim"]["address"], c["shim"]["address_problem"]) == (
        None, "address is missing (containerd 1.7 reads no bootstrap.json)")


def test_a_cri_container_whose_task_is_gone_loses_its_exit(state, tmp_path):
    root = tmp_path / "root"
    sandbox, cid = "5a" * 32, "c0" * 32
    annotations = {"io.kubernetes.cri.container-type": "container", "io.kubernetes.cri.sandbox-id": sandbox}
    d = task(state, "k8s.io", cid, files={"config.json": orjson.dumps({"annotations": annotations})})
    status = root / "io.containerd.grpc.v1.cri" / "containers" / cid / "status"
    status.parent.mkdir(parents=True)
    status.write_bytes(orjson.dumps({"Version": "v1", "Pid": 4242, "CreatedAt": 1, "StartedAt": 2, "FinishedAt": 0,
                                     "ExitCode": 0, "Reason": "", "Message": ""}))
    (d / "work").symlink_to(root / TASKS / "k8s.io" / cid)
    c = by_key(scan(state))[f"k8s.io/{cid}"]
    assert c["sandbox"] == sandbox and c["container_type"] == "container"
    assert c["cri"]["state"] == "running" and c["cri"]["cri_would"] == "record-255-unknown"
    assert "R106" in codes(c)
    status.write_bytes(orjson.dumps({"Version": "v1", "Pid": 4242, "CreatedAt": 1, "StartedAt": 2,
                                     "FinishedAt": 3, "ExitCode": 7}))
    c = by_key(scan(state))[f"k8s.io/{cid}"]
    (init,) = c["processes"]
    assert (init["verdict"], init["exit_status"], init["exit_status_source"]) == ("exited", 7, "cri-checkpoint")
    assert c["cri"]["cri_would"] == "record-exit"


def test_legacy_v1_tasks_are_said_and_not_judged(state):
    (state / "io.containerd.runtime.v1.linux" / "moby" / "abc").mkdir(parents=True)
    assert "H015" in {f["code"] for f in scan(state)["findings"]}


def test_layout_forced_on_a_dir_that_looks_otherwise(state, tmp_path):
    task(state, "default", "t")
    doc = scan(state, "--layout", "containerd-0.2")
    assert doc["layout"] == "containerd-0.2" and doc["classified_as"]["kind"] == "containerd-runtime-v2"
    assert "F045" in {f["code"] for f in doc["findings"]}
    other = tmp_path / "other"
    (other / "x").mkdir(parents=True)
    assert runner.invoke(app, ["scan", str(other)]).exit_code == 2
    assert scan(other, "--layout", "containerd-runtime-v2")["containers"] == []
    assert runner.invoke(app, ["scan", str(other), "--layout", "nope"]).exit_code == 2


def test_repair_of_a_v2_state_dir_with_nothing_to_save_writes_nothing_in_it(state):
    """A task whose processes and shim are gone: nothing a repair could save (the exit is lost);
    the plan says nothing, and --apply writes nothing in the state dir."""
    task(state, "default", "gone")
    before = sorted((str(p), p.lstat().st_mtime_ns) for p in state.rglob("*"))
    result = runner.invoke(app, ["repair", str(state), "--apply", "--force"])
    assert result.exit_code == 0 and "nothing to do" in result.stdout, result.output
    assert sorted((str(p), p.lstat().st_mtime_ns) for p in state.rglob("*")) == before


def test_a_shim_of_another_daemon_with_the_same_namespace_and_id_is_not_the_tasks(state, tmp_path):
    """Two daemons may each run a task default/t: the shim whose -address hashes to the socket
    this task's address names is its shim; the other daemon's is not."""
    import socket
    import tempfile

    from procs import named_process

    sockets = Path(tempfile.mkdtemp(prefix="s", dir="/tmp"))  # short: a unix socket path has 108 bytes
    ours, theirs = "/run/containerd/containerd.sock", "/run/other/containerd.sock"
    name = hashlib.sha256(f"{ours}/default/t".encode()).hexdigest()
    d = task(state, "default", "t", files={"address": f"unix://{sockets}/{name}".encode()})
    listening = socket.socket(socket.AF_UNIX)
    listening.bind(str(sockets / name))
    listening.listen()
    shim_args = ("-namespace", "default", "-id", "t", "-address")
    other = named_process(tmp_path / "bin", "containerd-shim-runc-v2", *shim_args, theirs, cwd=d)
    try:
        c = by_key(scan(state))["default/t"]
        assert c["shim"]["pid"] is None and c["containerd_would"] == "clean-up"
        own = named_process(tmp_path / "bin", "containerd-shim-runc-v2", *shim_args, ours, cwd=d)
        try:
            c = by_key(scan(state))["default/t"]
            assert c["shim"]["pid"] == own.pid and c["containerd_would"] == "reconnect"
        finally:
            own.kill()
            own.wait()
    finally:
        other.kill()
        other.wait()
        listening.close()
        import shutil

        shutil.rmtree(sockets)


def test_runc_state_in_the_state_dir_is_read_without_runc_root(state):
    """A default state dir (/run/containerd) holds runc's root: <ROOT>/runc/<ns>/<id>/state.json is
    read without --runc-root; elsewhere containerd 1.6 keeps it in /run/containerd/runc."""
    task(state, "default", "t", init=b"4194304")
    runc = state / "runc" / "default" / "t"
    runc.mkdir(parents=True)
    (runc / "state.json").write_bytes(orjson.dumps({"id": "t", "init_process_pid": 4194304,
                                                    "init_process_start": 12345}))
    result = runner.invoke(app, ["scan", str(state), "-f", "json"])
    (c,) = orjson.loads(result.stdout)["containers"]
    assert c["runc_state"]["path"] == str(runc / "state.json") and c["runc_state"]["start"] == 12345
    assert c["processes"][0]["recorded_start"] == 12345
    (runc / "state.json").unlink()
    (c,) = orjson.loads(runner.invoke(app, ["scan", str(state), "-f", "json"]).stdout)["containers"]
    assert c["runc_state"]["problem"] == "missing"


def test_a_task_name_that_is_not_utf8_is_escaped_in_every_field(state):
    """The layout's own fields (runc's state path, the work link) carry the name: JSON cannot hold
    its byte, so it is shown escaped there too, and the scan goes on."""
    tid = os.fsdecode(b"t-\xff")
    d = task(state, "default", tid)
    os.symlink(f"/var/lib/containerd/{TASKS}/default/{tid}", d / "work")
    task(state, "default", "plain")
    got = by_key(scan(state))
    bad = got["default/t-\\xff"]
    assert bad["runc_state"]["path"].endswith("/default/t-\\xff/state.json")
    assert bad["work_dir"] == f"/var/lib/containerd/{TASKS}/default/t-\\xff"
    assert got["default/plain"]["runc_state"]["path"].endswith("/default/plain/state.json")


def test_thousands_of_namespaces_do_not_exhaust_file_descriptors(state):
    """The reader keeps a namespace's dir open for its tasks, one namespace at a time: under a
    low fd limit, more namespaces than fds are read like any other (no F042 "cannot be listed")."""
    for i in range(300):
        task(state, f"ns{i:03d}", f"t{i:03d}")

    def few_fds():
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    ran = subprocess.run([sys.executable, "-m", "recover", "scan", str(state), "--offline", "-f", "json"],
                         capture_output=True, preexec_fn=few_fds, check=False)
    assert ran.returncode == 0, ran.stderr
    doc = orjson.loads(ran.stdout)
    assert len(doc["containers"]) == 300
    assert not [f for c in doc["containers"] for f in c["findings"] if f["code"] == "F042"]
