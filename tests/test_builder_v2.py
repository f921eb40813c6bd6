"""The stand-in containerd-shim-runc-v2 and the runtime-v2 builder, with real processes: what they
write and run is what containerd 1.6, its shim and runc leave (SPEC-v2 §1)."""

from __future__ import annotations

import json
import os
import signal
import stat
import time
from pathlib import Path

import pytest
from procs import field, our_children, same_process_alive, session_members, ticks

from recover.builders import become_subreaper
from recover.generations.runtime_v2.builder import SHIM_V2_PATH, TaskBuilder

NS = "default"
T = "v2builder-task"


@pytest.fixture(scope="module", autouse=True)
def subreaper():
    become_subreaper()


@pytest.fixture
def builder(tmp_path):
    with TaskBuilder(tmp_path) as b:
        yield b


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_a_task_is_laid_out_as_containerd_16_lays_it_out(builder, tmp_path):
    t = builder.start_task(NS, T)
    b = t.bundle
    assert b == tmp_path / "state" / "io.containerd.runtime.v2.task" / NS / T
    assert sorted(os.listdir(b)) == ["address", "config.json", "init.pid", "log", "log.json", "options.json",
                                     "rootfs", "runtime", "shim-binary-path", "work"]
    assert {n: mode(b / n) for n in os.listdir(b) if n != "work"} == {
        "address": 0o644, "config.json": 0o644, "init.pid": 0o644, "log": 0o700, "log.json": 0o644,
        "options.json": 0o600, "rootfs": 0o711, "runtime": 0o600, "shim-binary-path": 0o600}
    assert (mode(b), mode(b.parent), mode(builder.state)) == (0o700, 0o711, 0o711)
    assert stat.S_ISFIFO(os.lstat(b / "log").st_mode)
    assert os.readlink(b / "work") == str(tmp_path / "root" / "io.containerd.runtime.v2.task" / NS / T)
    assert (b / "work").is_dir()
    assert (b / "options.json").read_bytes() == b"{}" and (b / "runtime").read_bytes() == b""
    assert (b / "shim-binary-path").read_bytes() == str(SHIM_V2_PATH).encode()
    assert json.loads((b / "config.json").read_bytes())["process"]["args"] == ["sleep", "1000"]
    # the shim wrote the address, runc the pid file: decimal, no newline
    assert (b / "address").read_bytes() == f"unix://{t.shim.socket}".encode()
    assert stat.S_ISSOCK(os.lstat(t.shim.socket).st_mode) and t.shim.socket.parent == tmp_path / "s"
    assert (b / "init.pid").read_bytes() == str(t.init).encode()
    state = json.loads(t.runc_state.read_bytes())
    assert t.runc_state == tmp_path / "runc" / NS / T / "state.json" and mode(t.runc_state) == 0o600
    assert (state["id"], state["init_process_pid"], state["init_process_start"]) == (T, t.init, ticks(t.init))
    assert state["created"].endswith("Z") and len(state["created"].split(".")[1]) == 10  # RFC 3339, nanos


def test_the_shim_looks_like_the_real_one(builder):
    t = builder.start_task(NS, T)
    shim = t.shim.pid
    argv = Path(f"/proc/{shim}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    assert argv == [str(SHIM_V2_PATH).encode(), b"-namespace", NS.encode(), b"-id", T.encode(),
                    b"-address", builder.grpc_address.encode()]
    assert Path(f"/proc/{shim}/comm").read_text() == "containerd-shim\n"
    assert os.readlink(f"/proc/{shim}/cwd") == str(t.bundle)
    assert int(field(shim, 5)) == shim  # its own process group
    # its child: the init, in its own session, exec done
    assert (int(field(t.init, 4)), int(field(t.init, 6))) == (shim, t.init)
    assert Path(f"/proc/{t.init}/cmdline").read_bytes() == b"sleep\x001000\x00"
    assert not any(n.startswith("socket:") for n in _fd_targets(t.init))  # holds none of the shim's sockets


def _fd_targets(pid: int) -> list[str]:
    return [os.readlink(f"/proc/{pid}/fd/{n}") for n in os.listdir(f"/proc/{pid}/fd")]


def test_the_shim_is_a_child_subreaper(builder):
    t = builder.start_task(NS, T, ("sh", "-c", "sleep 1000 & wait"))
    deadline = time.monotonic() + 5
    while len(family := session_members(t.init)) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    (grandchild,) = [p for p in family if p != t.init]
    assert t.kill("init", signal.SIGKILL) == 137
    assert int(field(grandchild, 4)) == t.shim.pid  # the init's orphan came back to its shim


def test_the_shim_keeps_exit_statuses_in_memory_and_lives_on(builder):
    t = builder.start_task(NS, T)
    e1 = t.exec("e1", ("sh", "-c", "exit 5"))
    assert (t.bundle / "e1.pid").read_bytes() == str(e1).encode()
    assert t.wait("e1") == 5
    assert t.kill("init", signal.SIGTERM) == 143
    assert not os.path.exists(f"/proc/{t.init}") and not os.path.exists(f"/proc/{e1}")  # reaped
    assert t.shim.popen.poll() is None
    assert sorted(os.listdir(t.bundle)) == ["address", "config.json", "e1.pid", "init.pid", "log", "log.json",
                                            "options.json", "rootfs", "runtime", "shim-binary-path", "work"]
    assert (t.status("init"), t.status("e1")) == (143, 5)


def test_a_pod_runs_its_containers_under_the_sandbox_shim(builder):
    pod = builder.start_task("k8s.io", "pod", sandbox=True)
    ctr = builder.start_task("k8s.io", "ctr", pod=pod)
    assert ctr.shim is pod.shim and int(field(ctr.init, 4)) == pod.shim.pid
    assert (ctr.bundle / "address").read_bytes() == (pod.bundle / "address").read_bytes()
    annotations = {n: json.loads((x.bundle / "config.json").read_bytes())["annotations"] for n, x in
                   (("pod", pod), ("ctr", ctr))}
    assert annotations == {
        "pod": {"io.kubernetes.cri.container-type": "sandbox", "io.kubernetes.cri.sandbox-id": "pod"},
        "ctr": {"io.kubernetes.cri.container-type": "container", "io.kubernetes.cri.sandbox-id": "pod"}}
    assert json.loads(ctr.runc_state.read_bytes())["init_process_pid"] == ctr.init


def test_a_cri_checkpoint_as_cri_writes_it(builder):
    path = builder.cri_checkpoint("ctr", "exited", pid=42, exit_code=3)
    assert path == builder.root_dir / "io.containerd.grpc.v1.cri" / "containers" / "ctr" / "status"
    doc = json.loads(path.read_bytes())
    assert list(doc) == ["Version", "Pid", "CreatedAt", "StartedAt", "FinishedAt", "ExitCode", "Reason",
                         "Message", "Resources"]
    assert (doc["Pid"], doc["ExitCode"], mode(path)) == (42, 3, 0o600)
    assert 0 < doc["CreatedAt"] < doc["StartedAt"] < doc["FinishedAt"]
    running = json.loads(builder.cri_checkpoint("ctr", "running").read_bytes())
    assert running["StartedAt"] and not running["FinishedAt"]


def test_a_killed_shim_leaves_its_children_to_the_subreaper(builder):
    t = builder.start_task(NS, T)
    t.shim.kill()
    assert t.shim.popen.returncode == -signal.SIGKILL
    assert int(field(t.init, 4)) == os.getpid()
    assert stat.S_ISSOCK(os.lstat(t.shim.socket).st_mode)  # a killed shim leaves its socket
    t.send_signal("init", signal.SIGKILL)
    assert t.reap("init") == 137


def test_a_stopped_shim_leaves_a_zombie_until_it_resumes(builder):
    t = builder.start_task(NS, T)
    t.shim.stop()
    t.send_signal("init", signal.SIGKILL)
    assert t.wait_state("init", "Z") == "Z"
    assert int(field(t.init, 52)) == signal.SIGKILL and int(field(t.init, 4)) == t.shim.pid
    t.shim.resume()
    assert t.wait() == 137


@pytest.mark.parametrize("how", ["sigterm", "builder-gone"])
def test_the_shim_shuts_down_with_its_children(builder, how):
    t = builder.start_task(NS, T, ("sh", "-c", "sleep 1000 & sleep 1000 & wait"))
    e1 = t.exec("e1")
    deadline = time.monotonic() + 5
    while len(family := session_members(t.init)) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    procs = [(pid, ticks(pid)) for pid in family + [e1]]
    assert len(procs) == 4
    if how == "sigterm":
        t.shim.popen.send_signal(signal.SIGTERM)
    else:
        t.shim._control.close()  # the builder's process died: nothing must be left behind
    assert t.shim.popen.wait(5) == 0
    assert not os.path.lexists(t.shim.socket)
    # killed and reaped by the shim, the init's own children too
    assert [pid for pid, start in procs if same_process_alive(pid, start)] == []


def test_faults_on_the_files(builder):
    t = builder.start_task(NS, T)
    t.remove_address()
    assert not (t.bundle / "address").exists()
    t.write_pid_file("init", b"abc")
    assert (t.bundle / "init.pid").read_bytes() == b"abc"
    stranger = builder.reuse_init_pid(t)
    assert (t.bundle / "init.pid").read_bytes() == str(stranger.pid).encode()
    assert int(field(stranger.pid, 4)) == os.getpid() and ticks(stranger.pid) != t.starts["init"]
    t.remove_runc_state()
    assert not t.runc_state.parent.exists()
    old = t.bundle
    assert t.hide_bundle() == old.with_name("." + T) == t.bundle and not old.exists()
    assert os.readlink(f"/proc/{t.shim.pid}/cwd") == str(t.bundle)  # the shim's cwd follows
    t.empty_bundle()
    assert t.bundle.is_dir() and os.listdir(t.bundle) == []
    t.shim.remove_socket()
    assert not os.path.lexists(t.shim.socket) and t.shim.popen.poll() is None


def test_a_socket_path_too_long_for_a_unix_address(tmp_path):
    with TaskBuilder(tmp_path / ("x" * 120)) as b:
        t = b.start_task(NS, T)
        assert len(str(t.shim.socket)) > 108 and stat.S_ISSOCK(os.lstat(t.shim.socket).st_mode)


def test_a_start_that_fails_says_why(builder):
    with pytest.raises(RuntimeError, match="executable file not found"):
        builder.start_task(NS, T, ("recover-no-such-binary",))


def test_cleanup_leaves_nothing(tmp_path):
    before = our_children()
    procs: list[tuple[int, int]] = []  # (pid, start ticks)

    def track(*pids: int) -> None:
        procs.extend((pid, ticks(pid)) for pid in pids)

    with TaskBuilder(tmp_path) as b:
        live = b.start_task(NS, "live")
        track(live.init, live.exec("e1"), live.shim.pid)
        orphan = b.start_task(NS, "orphan")
        track(orphan.init, orphan.shim.pid)
        zombie = b.start_task(NS, "zombie")
        track(zombie.init, zombie.shim.pid)
        family = b.start_task(NS, "family", ("sh", "-c", "sleep 1000 & sleep 1000 & wait"))
        track(family.init, family.shim.pid)
        deadline = time.monotonic() + 5
        while len(session_members(family.init)) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        track(*(p for p in session_members(family.init) if p != family.init))
        pod = b.start_task("k8s.io", "pod", sandbox=True)
        track(pod.init, pod.shim.pid, b.start_task("k8s.io", "ctr", pod=pod).init)
        orphan.shim.kill()
        zombie.shim.stop()
        zombie.send_signal("init")
        zombie.wait_state("init", "Z")
        track(b.spawn_unrelated().pid)
        assert len(procs) == 15

        b.cleanup()
        b.cleanup()  # idempotent
    assert [pid for pid, start in procs if same_process_alive(pid, start)] == []
    assert our_children() == before
