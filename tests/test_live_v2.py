"""runtime-v2 state dirs with live processes under the stand-in containerd-shim-runc-v2
(recover/generations/runtime_v2/builder.py), scanned through the CLI: every verdict and every restore prediction of
SPEC-v2 §3, for the faults containerd 1.6 was seen handling (§2).  Runs as root or not, without
containerd installed."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import orjson
import pytest
from procs import ticks
from typer.testing import CliRunner
from unprivileged import cli_as_nobody

from recover.builders import become_subreaper
from recover.cli import app
from recover.generations.runtime_v2.builder import TaskBuilder

runner = CliRunner()
NS = "default"
# ids no other test uses: other helpers run stand-in and real shims on this host at the same time
T = "v2live-task"
POD, C = "v2live-pod", "v2live-ctr"


@pytest.fixture(scope="module", autouse=True)
def subreaper():
    become_subreaper()  # like systemd or tini: orphans of killed shims come back here


@pytest.fixture
def builder(tmp_path):
    with TaskBuilder(tmp_path) as b:
        yield b


def scan(b: TaskBuilder, *args: str, state: Path | None = None) -> dict:
    argv = b.scan_args() if state is None else [str(state), "--runc-root", str(b.runc_root)]
    result = runner.invoke(app, ["scan", *argv, "-f", "json", *args])
    assert result.exit_code == 0, result.output
    doc = orjson.loads(result.stdout)
    assert doc["layout"] == "containerd-runtime-v2"
    return doc


def task(doc: dict, tid: str = T, ns: str = NS) -> dict:
    (found,) = [c for c in doc["containers"] if (c["namespace"], c["id"]) == (ns, tid)]
    return found


def procs(c: dict) -> dict[str, dict]:
    return {p["id"]: p for p in c["processes"]}


def codes(c: dict) -> set[str]:
    return {f["code"] for f in c["findings"]} | {f["code"] for p in c["processes"] for f in p["findings"]}


def message(c: dict, code: str) -> str:
    (found,) = [f["message"] for f in c["findings"] if f["code"] == code]
    return found


def test_a_healthy_task_is_reconnected(builder):
    t = builder.start_task(NS, T)
    e1 = t.exec("e1")
    c = task(scan(builder))
    assert c["containerd_would"] == "reconnect"
    p = procs(c)
    assert [x["id"] for x in c["processes"]] == ["init", "e1"]
    assert {k: (x["pid"], x["verdict"], x["ppid"]) for k, x in p.items()} == {
        "init": (t.init, "running", t.shim.pid), "e1": (e1, "running", t.shim.pid)}
    assert p["init"]["identity"] == "start-time"
    assert p["init"]["recorded_start"] == p["init"]["observed_start"] == ticks(t.init)
    assert p["init"]["shim"] == p["e1"]["shim"] == {"pid": t.shim.pid, "state": "alive"}
    assert c["shim"]["pid"] == t.shim.pid
    assert c["shim"]["address"] == f"unix://{t.shim.socket}" and c["shim"]["socket_state"] == "present"
    assert (c["runc_state"]["pid"], c["runc_state"]["start"]) == (t.init, ticks(t.init))
    assert c["cri"] is None and c["sandbox"] is None
    assert codes(c) == set()


def test_a_killed_shim_leaves_orphans_that_containerd_would_kill(builder):
    t = builder.start_task(NS, T)
    e1 = t.exec("e1")
    t.shim.kill()
    c = task(scan(builder))
    assert {k: (x["verdict"], x["shim"]["state"]) for k, x in procs(c).items()} == {
        "init": ("orphaned", "gone"), "e1": ("orphaned", "gone")}
    assert c["containerd_would"] == "kill-live-processes"
    r101 = message(c, "R101")
    assert f"init (pid {t.init})" in r101 and f"e1 (pid {e1})" in r101 and "SIGKILL" in r101
    assert "L003" in codes(c)


def test_an_init_exit_while_containerd_is_down_is_held_by_the_live_shim(builder):
    t = builder.start_task(NS, T, ("sh", "-c", "exit 3"))
    assert t.wait() == 3  # the shim reaped it: its status is in the shim's memory only
    files = sorted(os.listdir(t.bundle))
    c = task(scan(builder))
    (init,) = c["processes"]
    # asked through its task API (State, read-only), the live shim says the status it holds
    assert (init["verdict"], init["exit_status"], init["exit_status_source"]) == ("exited", 3, "shim")
    assert c["shim"]["asked"] == "asked over task API v2"
    assert "L011" in codes(c) and "its exit status, 3 (the shim says so, asked)" in procs(c)["init"]["findings"][0][
        "message"]
    assert c["containerd_would"] == "reconnect" and "re-adopts the task stopped" in c["containerd_would_why"]
    assert t.shim.popen.poll() is None and t.status() == 3  # it lives on, holding the status
    assert sorted(os.listdir(t.bundle)) == files  # and wrote nothing


def test_a_daemon_running_on_the_root_has_the_exit_a_live_shim_holds(builder, tmp_path):
    """Once a daemon runs on the root (it has reconnected the task), the shim's memory is not the
    only copy of the exit: no L011."""
    from procs import fake_containerd

    t = builder.start_task(NS, T, ("sh", "-c", "exit 3"))
    assert t.wait() == 3
    daemon = fake_containerd(tmp_path / "bin", "--state", str(builder.state))
    try:
        doc = scan(builder)
    finally:
        daemon.kill()
        daemon.wait()
    assert "H009" in {f["code"] for f in doc["findings"]}
    (init,) = task(doc)["processes"]
    assert (init["verdict"], init["exit_status"], init["exit_status_source"]) == ("exited", 3, "shim")
    assert "L011" not in codes(task(doc))


def test_an_exec_exit_under_the_live_shim(builder):
    t = builder.start_task(NS, T)
    e1 = t.exec("e1", ("sh", "-c", "exit 5"))
    assert t.wait("e1") == 5
    c = task(scan(builder))
    p = procs(c)
    assert (p["init"]["verdict"], p["e1"]["verdict"], p["e1"]["exit_status"], p["e1"]["exit_status_source"]) == (
        "running", "exited", 5, "shim")
    assert p["e1"]["pid"] == e1 and (t.bundle / "e1.pid").read_bytes() == str(e1).encode()  # it stays
    assert {f["code"] for f in p["e1"]["findings"]} == {"L011"}
    assert c["containerd_would"] == "reconnect"


def test_a_shim_that_cannot_be_asked_still_holds_the_exit(builder):
    """Its socket file gone (the shim still listens, unreachable), or the shim stopped: not asked,
    never waited on; the status is still in its memory, unread."""
    t = builder.start_task(NS, T, ("sh", "-c", "exit 3"))
    assert t.wait() == 3
    t.shim.remove_socket()
    c = task(scan(builder))
    assert c["shim"]["asked"] == "not asked: no socket file it listens on"
    assert [(p["exit_status"], p["exit_status_source"]) for p in c["processes"]] == [(None, "shim-memory")]
    t.shim.stop()
    c = task(scan(builder))
    assert c["shim"]["asked"] == "not asked: the shim is stopped"
    assert [(p["exit_status"], p["exit_status_source"]) for p in c["processes"]] == [(None, "shim-memory")]
    c = task(scan(builder, "--offline"))
    assert c["shim"]["asked"] is None


def test_a_stopped_shim_blocks_the_restart_and_keeps_its_zombie(builder):
    t = builder.start_task(NS, T)
    e1 = t.exec("e1")
    t.shim.stop()
    t.send_signal("init", signal.SIGKILL)
    t.wait_state("init", "Z")
    c = task(scan(builder))
    p = procs(c)
    assert (p["init"]["verdict"], p["init"]["exit_status"], p["init"]["exit_status_source"]) == (
        "zombie", 137, "zombie-stat")
    assert p["init"]["identity"] == "start-time"
    assert p["e1"]["verdict"] == "running"
    assert p["init"]["shim"] == {"pid": t.shim.pid, "state": "stopped"}
    assert c["containerd_would"] == "block-then-kill"
    r105 = message(c, "R105")
    # a live exec keeps the dying init from finishing: the delete times out too
    assert f"kill -CONT {t.shim.pid}" in r105 and f"e1 (pid {e1})" in r105 and "about 10 s" in r105
    assert "not listed after the restart" in r105 and "takes the task back stopped (exit 137)" in r105
    assert {"L004", "H001"} <= codes(c)


def test_an_exec_left_a_zombie_under_a_stopped_shim_keeps_the_delete_from_finishing(builder):
    """An exec that exited while its shim is stopped stays a zombie the shim cannot reap; in the
    task's pid namespace it keeps the killed init from dying, so the delete times out as with a
    live exec (Docker's 1.6.20 blocked 10 s and kept the bundle)."""
    t = builder.start_task(NS, T)
    t.exec("e1")
    t.shim.stop()
    t.send_signal("e1", signal.SIGKILL)
    t.wait_state("e1", "Z")
    c = task(scan(builder))
    assert procs(c)["e1"]["verdict"] == "zombie"
    r105 = message(c, "R105")
    assert "about 10 s" in r105 and "e1 keep the init from dying" in r105, r105


def test_a_missing_address_gets_a_healthy_task_killed_and_recover_says_what_to_write(builder):
    t = builder.start_task(NS, T)
    t.exec("e1")
    t.remove_address()
    c = task(scan(builder))
    assert {x["verdict"] for x in c["processes"]} == {"running"}  # healthy, whatever containerd will do
    assert c["containerd_would"] == "kill-live-processes"
    assert c["shim"]["address_problem"] == "address is missing"
    r101 = message(c, "R101")
    # the name of the shim's socket: sha256 of <grpc address>/<ns>/<id> ...
    name = hashlib.sha256(f"{builder.grpc_address}/{NS}/{T}".encode()).hexdigest()
    assert t.shim.socket.name == name
    # ... in the dir containerd 1.6 hard-codes (the stand-in's socket is elsewhere: see the report)
    assert f"'unix:///run/containerd/s/{name}'" in r101
    assert str(t.bundle / "address") in r101 and "before restarting" in r101
    assert f"its shim (pid {t.shim.pid}) is left running, untracked" in r101  # leaked, whatever is killed


def test_a_missing_socket_gets_a_healthy_task_killed(builder):
    t = builder.start_task(NS, T)
    t.shim.remove_socket()
    c = task(scan(builder))
    assert procs(c)["init"]["verdict"] == "running"
    assert (c["shim"]["socket_state"], c["containerd_would"]) == ("missing", "kill-live-processes")
    r101 = message(c, "R101")
    assert str(t.shim.socket) in r101 and "missing" in r101 and f"init (pid {t.init})" in r101


def test_a_socket_file_nobody_listens_on_gets_a_healthy_task_killed(builder):
    """The file is a socket, but not the one the shim listens on (removed and made again): the
    daemon's dial is refused and it cleans the task up.  The kernel's sock_diag tells."""
    import stat

    t = builder.start_task(NS, T)
    healthy = task(scan(builder))
    assert healthy["shim"]["socket_listened"] is True and healthy["containerd_would"] == "reconnect"
    t.shim.remove_socket()
    os.mknod(t.shim.socket, 0o600 | stat.S_IFSOCK)
    c = task(scan(builder))
    assert c["shim"]["socket_state"] == "present" and c["shim"]["socket_listened"] is False
    assert c["containerd_would"] == "kill-live-processes" and "nobody listens" in message(c, "R101")


def test_an_empty_bundle_is_deleted_and_its_live_shim_and_processes_leaked(builder):
    t = builder.start_task(NS, T)
    e1 = t.exec("e1")
    t.empty_bundle()
    doc = scan(builder)
    c = task(doc)
    # runc's state still names the init: it is listed, its identity checked by start ticks, and counted
    assert [(p["id"], p["pid"], p["verdict"], p["identity"]) for p in c["processes"]] == [
        ("init", t.init, "running", "start-time")]
    assert c["empty"] is True and doc["summary"]["verdicts"] == {"running": 1}
    assert c["containerd_would"] == "delete-silently-and-leak"
    assert c["shim"]["pid"] == t.shim.pid
    r103 = message(c, "R103")
    assert f"its shim (pid {t.shim.pid})" in r103 and f"init (pid {t.init})" in r103 and "untracked" in r103
    assert f"its shim's other children (pid {e1})" in r103


def test_an_empty_bundle_whose_shim_died_leaks_the_init_runcs_state_names(builder):
    t = builder.start_task(NS, T)
    t.shim.kill()  # the init runs on, orphaned; no pid file names it any more
    t.empty_bundle()
    c = task(scan(builder))
    assert (c["containerd_would"], c["shim"]["state"]) == ("delete-silently-and-leak", "gone")
    assert (c["runc_state"]["pid"], c["runc_state"]["start"]) == (t.init, t.starts["init"])
    r103 = message(c, "R103")
    assert f"pid {t.init}" in r103 and "untracked" in r103 and "R104" not in codes(c)


def test_an_empty_bundle_of_a_dead_task_is_deleted_with_nothing_to_leak(builder):
    t = builder.start_task(NS, T)
    t.shim.kill()
    t.send_signal("init", signal.SIGKILL)
    t.reap("init")
    t.empty_bundle()
    c = task(scan(builder))
    assert (c["containerd_would"], c["shim"]["state"]) == ("delete-silently-and-leak", "gone")
    assert "nothing of it runs" in message(c, "R104") and "R103" not in codes(c)


def test_a_hidden_bundle_is_skipped_and_its_live_shim_and_processes_leaked(builder):
    t = builder.start_task(NS, T)
    e1 = t.exec("e1")
    t.hide_bundle()
    c = task(scan(builder), "." + T)
    assert {k: (x["verdict"], x["shim"]["pid"]) for k, x in procs(c).items()} == {
        "init": ("running", t.shim.pid), "e1": ("running", t.shim.pid)}
    assert (c["hidden"], c["containerd_would"]) == (True, "skip-and-leak")
    r103 = message(c, "R103")
    assert f"init (pid {t.init})" in r103 and f"e1 (pid {e1})" in r103 and f"shim (pid {t.shim.pid})" in r103


def test_a_hidden_namespace_is_skipped_and_its_tasks_live_on_under_their_shims(builder):
    t = builder.start_task(NS, T)
    e1 = t.exec("e1")
    builder.hide_namespace(NS)
    doc = scan(builder)
    c = task(doc, T, "." + NS)
    # the shim and runc know the namespace by its name: the dir was renamed under them
    assert {k: (x["verdict"], x["shim"]["pid"]) for k, x in procs(c).items()} == {
        "init": ("running", t.shim.pid), "e1": ("running", t.shim.pid)}
    assert (c["runc_state"]["pid"], c["runc_state"]["start"]) == (t.init, t.starts["init"])
    assert c["work_dir_exists"] is True
    assert (c["hidden"], c["containerd_would"]) == (True, "skip-and-leak")
    r103 = message(c, "R103")
    assert "namespace" in r103 and f"init (pid {t.init})" in r103 and f"e1 (pid {e1})" in r103
    assert not {"H014", "L003"} & codes(c) and doc["orphan_shims"] == []


@pytest.mark.parametrize("shim_alive, would", [(True, "reconnect"), (False, "clean-up-and-leak")])
def test_runc_state_missing_while_the_init_runs(builder, shim_alive, would):
    t = builder.start_task(NS, T)
    t.remove_runc_state()
    if not shim_alive:
        t.shim.kill()
    c = task(scan(builder))
    assert procs(c)["init"]["verdict"] == ("running" if shim_alive else "orphaned")
    assert c["runc_state"]["problem"] == "missing"
    assert str(t.runc_state) in message(c, "H014")
    assert c["containerd_would"] == would
    if not shim_alive:
        # runc cannot kill what its state does not name (predicted from runc's source, not yet seen)
        r103 = message(c, "R103")
        assert "nothing is killed" in r103 and f"init (pid {t.init})" in r103


def test_an_init_pid_naming_a_stranger_after_shim_and_init_died(builder):
    t = builder.start_task(NS, T)
    t.shim.kill()
    t.send_signal("init", signal.SIGKILL)
    assert t.reap("init") == 137
    stranger = builder.reuse_init_pid(t)
    doc = scan(builder)
    c = task(doc)
    (init,) = c["processes"]
    assert (init["verdict"], init["pid"], init["identity"]) == ("pid-reused", stranger.pid, "start-time")
    assert (init["recorded_start"], init["observed_start"]) == (t.starts["init"], ticks(stranger.pid))
    assert c["containerd_would"] == "clean-up"
    assert "nothing runs" in message(c, "R102")
    said = [f["message"] for f in c["findings"] if f["code"].startswith("R")]
    assert said and not any(str(stranger.pid) in m for m in said)  # never named as what will be killed
    assert stranger.poll() is None


def test_garbage_in_init_pid_under_a_live_shim(builder):
    t = builder.start_task(NS, T)
    t.write_pid_file("init", b"abc")
    c = task(scan(builder))
    (init,) = c["processes"]
    # runc's state names the init: it is found, and runs; containerd asks the shim, not the file
    assert (init["verdict"], init["pid"]) == ("running", t.init)
    assert "F101" in codes(c) and c["containerd_would"] == "reconnect"


@pytest.mark.parametrize("shim_alive", [True, False])
def test_cri_containers_of_a_pod_share_its_shim(builder, shim_alive):
    pod = builder.start_task("k8s.io", POD, sandbox=True)
    running = builder.start_task("k8s.io", C + "-run", pod=pod)
    builder.cri_checkpoint(running.id, "running", pid=running.init)
    recorded = builder.start_task("k8s.io", C + "-rec", pod=pod)
    builder.cri_checkpoint(recorded.id, "exited", pid=recorded.init, exit_code=recorded.kill())
    unrecorded = builder.start_task("k8s.io", C + "-unrec", pod=pod)  # exits while CRI is down
    builder.cri_checkpoint(unrecorded.id, "running", pid=unrecorded.init)
    assert unrecorded.kill("init", signal.SIGTERM) == 143
    if not shim_alive:
        pod.shim.kill()
    doc = scan(builder)
    sandbox = task(doc, POD, "k8s.io")
    assert (sandbox["container_type"], sandbox["cri"]) == ("sandbox", None)
    got = {x.id: task(doc, x.id, "k8s.io") for x in (running, recorded, unrecorded)}
    for c in got.values():
        assert c["sandbox"] == POD and c["container_type"] == "container"
        assert c["shim"]["pid"] == (pod.shim.pid if shim_alive else None)  # found by the sandbox id
    assert procs(got[running.id])["init"]["ppid"] == (pod.shim.pid if shim_alive else os.getpid())
    cri = {k: (c["cri"]["state"], c["cri"]["cri_would"]) for k, c in got.items()}
    if shim_alive:
        assert cri == {running.id: ("running", "keep-running"), recorded.id: ("exited", "record-exit"),
                       unrecorded.id: ("running", "record-exit")}  # the true code, from the shim
        assert not any("R106" in codes(c) for c in got.values())
    else:
        assert cri == {running.id: ("running", "record-255-unknown"), recorded.id: ("exited", "record-exit"),
                       unrecorded.id: ("running", "record-255-unknown")}  # the shim took it along
        assert "255" in message(got[running.id], "R106") and "R106" in codes(got[unrecorded.id])
        assert "R106" not in codes(got[recorded.id])
    (rec,) = got[recorded.id]["processes"]
    assert (rec["exit_status"], rec["exit_status_source"]) == (143, "cri-checkpoint")


def test_a_copy_of_a_live_state_dir_judges_its_processes_running_and_says_so(builder, tmp_path):
    t = builder.start_task(NS, T)
    t.exec("e1")
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(builder.state), str(copy)], check=True)
    c = task(scan(builder, state=copy))
    assert {x["verdict"] for x in c["processes"]} == {"running"}
    for p in c["processes"]:
        h012 = [f["message"] for f in p["findings"] if f["code"] == "H012"]
        assert h012 and str(builder.state) in h012[0]  # its shim works in the original


def test_offline_judges_nothing_alive(builder):
    builder.start_task(NS, T)
    doc = scan(builder, "--offline")
    c = task(doc)
    assert procs(c)["init"]["verdict"] == "unknown" and c["containerd_would"] is None
    assert "L006" in codes(c) and "H004" in {f["code"] for f in doc["findings"]}


def test_selection_by_namespace_and_id_or_a_prefix(builder):
    for ns, tid in ((NS, T + "-a"), (NS, T + "-b"), ("other", T + "-a")):
        builder.start_task(ns, tid)

    def keys(*sel):
        return [(c["namespace"], c["id"]) for c in scan(builder, *sel)["containers"]]

    assert keys("--container", f"{NS}/{T}-a") == [(NS, T + "-a")]
    assert keys("--container", T + "-b") == [(NS, T + "-b")]
    assert keys("--container", "other/v2live") == [("other", T + "-a")]
    result = runner.invoke(app, ["scan", *builder.scan_args(), "--container", T + "-a"])
    assert result.exit_code == 2 and "ambiguous" in result.stderr and "other/" + T + "-a" in result.stderr


def test_runc_root_from_options_json(builder, tmp_path):
    t = builder.start_task(NS, T, options={"root": str(tmp_path / "runc-elsewhere")})
    assert t.runc_state == tmp_path / "runc-elsewhere" / NS / T / "state.json"
    result = runner.invoke(app, ["scan", str(builder.state), "-f", "json"])  # no --runc-root
    c = task(orjson.loads(result.stdout))
    assert c["runc_state"]["path"] == str(t.runc_state) and c["runc_state"]["start"] == ticks(t.init)
    # the shim's runc uses options.json's root whatever --runc-root says: so does recover (trial 3:
    # a --runc-root elsewhere had turned "runc SIGKILLs it" into "nothing is killed")
    result = runner.invoke(app, ["scan", *builder.scan_args(), "-f", "json"])
    assert task(orjson.loads(result.stdout))["runc_state"]["path"] == str(t.runc_state)
    # a --runc-root or --containerd-root that is not there is a usage error, never silently empty
    for flag in ("--runc-root", "--containerd-root"):
        result = runner.invoke(app, ["scan", str(builder.state), flag, str(tmp_path / "nonexistent")])
        assert result.exit_code == 2 and "is no directory" in result.stderr, flag


def test_an_empty_bundle_is_not_judged_by_another_state_dirs_shim(tmp_path):
    # the same namespace and id in two state dirs (two daemons, or two tests): the other one's shim
    # is started first, so it comes first among the shims that name the id
    with TaskBuilder(tmp_path / "other") as other, TaskBuilder(tmp_path / "ours") as ours:
        other.start_task(NS, T)
        t = ours.start_task(NS, T)
        t.empty_bundle()
        c = task(scan(ours))
        assert c["shim"]["pid"] == t.shim.pid
        assert f"its shim (pid {t.shim.pid})" in message(c, "R103")


@pytest.fixture
def world_top():
    """A dir an unprivileged user may enter (pytest's own tmp dirs are root's only)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to become an unprivileged user")
    top = Path(tempfile.mkdtemp(prefix="recover-v2-unpriv-", dir="/tmp"))
    os.chmod(top, 0o755)
    yield top
    shutil.rmtree(top)


def test_an_unprivileged_scan_of_a_live_tree_says_what_it_could_not_read(world_top):
    with TaskBuilder(world_top) as b:
        t = b.start_task(NS, T)
        t.exec("e1")
        pod = b.start_task("k8s.io", POD, sandbox=True)
        ctr = b.start_task("k8s.io", C, pod=pod)
        b.cri_checkpoint(C, "running", pid=ctr.init)
        args = ["scan", *b.scan_args(), "-f", "json"]

        # as containerd leaves it, the state dir is root's to list (0711)
        code, _, err = cli_as_nobody(args)
        assert code == 2 and err.startswith("recover: ") and "Permission denied" in err

        # the state dir listable, its tasks dir not (0711, as containerd makes it): nothing can be
        # judged, and no command passes (never "0 containers", a gate passed)
        os.chmod(b.state, 0o755)
        os.chmod(b.state / "io.containerd.runtime.v2.task", 0o711)
        for command in (args, ["check", *b.scan_args()], ["guard", str(b.state), "--policy", "block",
                                                          "--report-dir", str(b.top / "r"), "--run-dir", str(b.top / "u")]):
            code, out, err = cli_as_nobody(command)
            assert code not in (0, 1) and "io.containerd.runtime.v2.task: Permission denied" in err, (command, err)

        # its namespaces listable, the bundles root's (0700): nothing is predicted, nothing said missing
        for d in (b.state, b.state / "io.containerd.runtime.v2.task", t.bundle.parent, pod.bundle.parent):
            os.chmod(d, 0o755)
        code, out, _ = cli_as_nobody(args)
        assert code == 0
        doc = orjson.loads(out)
        for c in doc["containers"]:
            assert c["containerd_would"] is None and "may not list" in c["containerd_would_why"]
            assert "F042" in codes(c) and "missing" not in (c["shim"]["address_problem"] or "")
        # a pod's container names its shim in the config.json that cannot be read: not "gone"
        assert task(doc, C, "k8s.io")["shim"]["state"] != "gone"

        # readable bundles: runc's state and CRI's checkpoint stay root's (0600)
        for d in (t.bundle, pod.bundle, ctr.bundle):
            os.chmod(d, 0o755)
        code, out, _ = cli_as_nobody(args)
        assert code == 0
        doc = orjson.loads(out)
        plain, container = task(doc), task(doc, C, "k8s.io")
        assert {x["verdict"] for x in plain["processes"]} == {"running"}  # judged from what was read
        assert plain["runc_state"]["problem"] == "cannot be read (denied)" and "H011" in codes(plain)
        assert (container["cri"]["problem"], container["cri"]["cri_would"]) == ("cannot be read (denied)", None)
        assert container["shim"]["pid"] == pod.shim.pid


def test_exec_ids_are_cut_as_container_ids_in_text_and_explain_takes_their_prefix(builder):
    """Docker's and CRI's exec ids are 64 hex digits: the table cuts them to 12 (it fits 100
    columns), and `explain ID/PREFIX` finds the exec by that prefix."""
    exec_id = hashlib.sha256(b"an exec").hexdigest()
    tid = hashlib.sha256(b"a task").hexdigest()
    t = builder.start_task(NS, tid)
    pid = t.exec(exec_id)
    text = runner.invoke(app, ["scan", *builder.scan_args()], env={"COLUMNS": "100"}).stdout
    table = text.split("\n\n")[0].splitlines()
    assert max(map(len, table)) <= 100 and exec_id not in text
    (row,) = [line for line in table if str(pid) in line]
    assert row.split()[:2] == [f"{NS}/{tid[:12]}", exec_id[:12]]
    result = runner.invoke(app, ["explain", f"{tid[:4]}/{exec_id[:4]}", "--root", str(builder.state),
                                 "--runc-root", str(builder.runc_root), "-f", "json"])
    assert result.exit_code == 0, result.output
    (process,) = orjson.loads(result.stdout)["processes"]
    assert (process["id"], process["verdict"]) == (exec_id, "running")


def test_a_shim_left_in_a_removed_bundle_is_not_the_shim_of_the_bundle_made_again(builder):
    """Docker restarts a container under the same id: its old bundle removed (its shim leaked, its
    cwd a removed dir), a new bundle and a new shim.  The new shim is the task's; the old one is an
    orphan shim that says why, whichever of the two comes first among the shims that name the id."""
    old = builder.start_task(NS, T)
    shutil.rmtree(old.bundle)
    shutil.rmtree(builder.root_dir / "io.containerd.runtime.v2.task" / NS / T)
    new = builder.start_task(NS, T)
    (new.bundle / "init.pid").unlink()  # found through its shim: by argv, which both shims show
    new.remove_runc_state()
    doc = scan(builder)
    c = task(doc)
    assert c["shim"]["pid"] == new.shim.pid
    assert [(p["pid"], p["verdict"]) for p in c["processes"]] == [(new.init, "running")]
    (orphan,) = doc["orphan_shims"]
    assert orphan["pid"] == old.shim.pid and "works in a removed dir" in orphan["reason"]


def test_a_hidden_task_answers_to_its_own_id(builder):
    """Docker's id (or namespace/id) finds a task whose bundle was renamed `.<id>`: for --container
    and explain, a hidden task is still its container."""
    tid = hashlib.sha256(b"a hidden container").hexdigest()
    builder.start_task(NS, "another")
    t = builder.start_task(NS, tid)
    t.hide_bundle()
    for wanted in (tid, f"{NS}/{tid}", tid[:12]):
        doc = scan(builder, "--container", wanted)
        assert [(c["namespace"], c["id"]) for c in doc["containers"]] == [(NS, "." + tid)], wanted
        result = runner.invoke(app, ["explain", wanted, "--root", str(builder.state),
                                     "--runc-root", str(builder.runc_root), "-f", "json"])
        assert result.exit_code == 0, result.output
        assert orjson.loads(result.stdout)["container"] == "." + tid



def test_a_bundle_made_again_beside_its_hidden_twin_reaches_the_live_shim(builder):
    """Docker's failed re-creation of a container whose task dir containerd had hidden (`.<id>`)
    leaves a visible bundle whose `address` names the socket the hidden task's live shim listens
    on: containerd 1.6 dials it and takes the task back with the exit the shim holds (real 1.6.20
    under Docker 20.10: `ctr task ls` said STOPPED through that shim).  The shim works in the
    hidden dir, yet it is the visible task's shim, found by the socket it listens on; the hidden
    dir is skipped, and nothing of it is leaked or lost (tests/test_restart_versions.py: i2-i4)."""
    t = builder.start_task(NS, T)
    t.kill(sig=signal.SIGKILL)  # init exits under its live shim, which holds the status
    visible = t.bundle
    hidden = t.hide_bundle()
    visible.mkdir()
    for name in ("address", "config.json"):
        shutil.copy2(hidden / name, visible / name)
    doc = scan(builder)
    c = task(doc)
    assert c["shim"]["pid"] == t.shim.pid and c["shim"]["socket_listened"] is True
    assert c["containerd_would"] == "reconnect", c.get("containerd_would_why")
    (init,) = c["processes"]
    assert (init["pid"], init["verdict"], init["exit_status_source"]) == (t.init, "exited", "shim")
    # the hidden twin is skipped, and nothing of it is leaked or lost: its shim is the visible task's
    twin = task(doc, "." + T)
    assert twin["containerd_would"] == "skip", twin["containerd_would_why"]
    assert f"{NS}/{T}" in twin["containerd_would_why"]
    assert not codes(twin) & {"R103", "R104", "R107"}
    assert doc["orphan_shims"] == []
    # with no file naming its pid (runc's state gone too), the shim, asked, still says what exited
    t.remove_runc_state()
    (init,) = task(scan(builder))["processes"]
    assert (init["verdict"], init["exit_status"], init["exit_status_source"]) == ("exited", 137, "shim")
    assert [f["code"] for f in init["findings"]] == ["F101", "L011"]
    # Docker's id (whole or cut) names the visible dir; `.<id>` the hidden one; a namespace is no id
    for wanted, key in ((T, T), (T[:8], T), (f"{NS}/{T}", T), ("." + T, "." + T)):
        doc = scan(builder, "--container", wanted)
        assert [c["id"] for c in doc["containers"]] == [key], wanted
        result = runner.invoke(app, ["explain", f"{wanted}/init", "--root", str(builder.state),
                                     "--runc-root", str(builder.runc_root), "-f", "json"])
        assert result.exit_code == 0 and orjson.loads(result.stdout)["container"] == key, result.output
    result = runner.invoke(app, ["explain", f"{NS}/0000000", "--root", str(builder.state)])
    assert result.exit_code == 2 and result.stderr == f"recover: no container matches '{NS}/0000000'\n"


def test_a_bundle_made_again_under_its_live_shim_is_that_shims_task(builder):
    """An operator who copies a bundle aside, removes it and moves the copy back (`cp -a; rm -rf;
    mv`) leaves its live shim working in a removed dir: still the shim that listens on the task's
    socket, which containerd dials and reconnects.  Found by the socket it listens on, it is the
    task's shim and no orphan."""
    t = builder.start_task(NS, T)
    copy = t.bundle.with_name("copy")
    subprocess.run(["cp", "-a", str(t.bundle), str(copy)], check=True)  # its log FIFO too
    shutil.rmtree(t.bundle)
    copy.rename(t.bundle)
    (t.bundle / "init.pid").unlink()  # found through runc's state or the socket the shim listens on
    doc = scan(builder)
    c = task(doc)
    assert c["shim"]["pid"] == t.shim.pid
    assert [(p["pid"], p["verdict"]) for p in c["processes"]] == [(t.init, "running")]
    assert c["containerd_would"] == "reconnect"
    assert doc["orphan_shims"] == []



def test_each_leaked_shim_is_a_finding_of_its_own_place(builder, tmp_path):
    """H003 is placed where its task's bundle was: two leaked shims are two fingerprints, and a
    baseline written with one does not hide a later one."""
    first = builder.start_task(NS, "leak-one")
    shutil.rmtree(first.bundle)
    baseline = tmp_path / "baseline.json"
    written = runner.invoke(app, ["check", *builder.scan_args(), "--write-baseline", str(baseline)])
    assert written.exit_code in (0, 1), written.output
    second = builder.start_task(NS, "leak-two")
    shutil.rmtree(second.bundle)
    result = runner.invoke(app, ["check", *builder.scan_args(), "-f", "json", "--baseline", str(baseline)])
    doc = orjson.loads(result.stdout)
    leaks = {f["path"]: f for f in doc["findings"] if f["code"] == "H003"}
    assert set(leaks) == {f"io.containerd.runtime.v2.task/{NS}/leak-one", f"io.containerd.runtime.v2.task/{NS}/leak-two"}
    assert len({f["fingerprint"] for f in leaks.values()}) == 2
    assert leaks[f"io.containerd.runtime.v2.task/{NS}/leak-one"]["baselined"]
    assert not leaks[f"io.containerd.runtime.v2.task/{NS}/leak-two"]["baselined"] and result.exit_code == 1


def test_a_child_of_the_tasks_shim_that_is_none_of_its_processes(builder):
    """Docker restarted a container under its leaked shim: the earlier run's process still runs
    under that shim, named by no file; containerd never tracks it (trial 3, T5)."""
    t = builder.start_task(NS, T)
    old = t.exec("earlier-run")
    (t.bundle / "earlier-run.pid").unlink()  # no file of the task names it any more
    c = task(scan(builder))
    (h018,) = [f["message"] for f in c["findings"] if f["code"] == "H018"]
    assert f"pid {old} " in h018 and f"its shim (pid {t.shim.pid})" in h018
    assert [p["id"] for p in c["processes"]] == ["init"] and c["containerd_would"] == "reconnect"
