"""The stand-in shim and the root builder, with real processes (Linux only)."""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
import time
from pathlib import Path

import pytest
from procs import field, our_children, same_process_alive, session_members

from recover.builders import become_subreaper, capture_proc
from recover.generations.containerd_0_2.builder import (
    SHIM_NAME,
    SHIM_PATH,
    RootBuilder,
    process_json,
    state_json,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux /proc")


@pytest.fixture(scope="module", autouse=True)
def subreaper():
    # Like systemd/tini: orphans of killed shims come back to this process.
    become_subreaper()


@pytest.fixture
def builder(tmp_path):
    b = RootBuilder(tmp_path / "root")
    try:
        yield b
    finally:
        b.cleanup()


def test_started_process_files_match_proc(builder):
    lp = builder.start_process("c1", "init")
    d = lp.dir
    assert d == builder.root / "c1" / "init"
    assert (d / "pid").read_bytes() == str(lp.pid).encode()
    assert (d / "starttime").read_bytes() == field(lp.pid, 22).encode()
    assert lp.starttime == int(field(lp.pid, 22))
    assert not (d / ".pid").exists()
    assert not (d / "exitStatus").exists()
    for fifo in ("exit", "control"):
        assert stat.S_ISFIFO(os.lstat(d / fifo).st_mode)
    # The container process is the shim's child, in its own session.
    assert int(field(lp.pid, 4)) == lp.shim.pid
    assert int(field(lp.pid, 6)) == lp.pid
    assert Path(f"/proc/{lp.pid}/cmdline").read_bytes() == b"sleep\x001000\x00"
    assert Path(f"/proc/{lp.pid}/comm").read_text() == "sleep\n"  # exec finished
    # The shim: argv as containerd runs it (script form), cwd the process dir.
    argv = Path(f"/proc/{lp.shim.pid}/cmdline").read_bytes().split(b"\0")[:-1]
    assert argv[1:] == [str(SHIM_PATH).encode(), b"c1", str(builder.bundles / "c1").encode(), b"runc"]
    assert os.readlink(f"/proc/{lp.shim.pid}/cwd") == str(d)
    assert Path(f"/proc/{lp.shim.pid}/comm").read_text() == "containerd-shim\n"
    st = json.loads((builder.root / "c1" / "state.json").read_bytes())
    assert st == state_json(str(builder.bundles / "c1"))
    assert st["shim"] == SHIM_NAME and st["labels"] is None
    assert (builder.bundles / "c1" / "config.json").exists()
    pj = json.loads((d / "process.json").read_bytes())
    assert pj["args"] == ["sleep", "1000"] and pj["exec"] is False
    assert set(pj["capabilities"]) == {"bounding", "effective", "permitted", "ambient"}


def test_shim_named_as_state_json_says(builder):
    builder.container("c1", shim="docker-containerd-shim", runtime="docker-runc")
    lp = builder.start_process("c1", "init")
    argv = Path(f"/proc/{lp.shim.pid}/cmdline").read_bytes().split(b"\0")[:-1]
    assert os.path.basename(argv[1]) == b"docker-containerd-shim"
    assert argv[2:] == [b"c1", str(builder.bundles / "c1").encode(), b"docker-runc"]
    assert Path(f"/proc/{lp.shim.pid}/comm").read_text() == "docker-containe\n"


def test_no_starttime_and_exec(builder):
    lp = builder.start_process("c1", "exec1", starttime=False)
    assert (lp.dir / "pid").exists()
    assert not (lp.dir / "starttime").exists()
    pj = json.loads((lp.dir / "process.json").read_bytes())
    assert pj["exec"] is True and pj["capabilities"] == {} and "rlimits" not in pj


def test_kill_child_writes_137_and_shim_exits(builder):
    lp = builder.start_process("c1", "init")
    lp.kill_child()
    assert lp.wait_exit_status() == b"137"
    assert lp.shim.wait(5) == 0
    assert not any(p.name.endswith(".tmp") for p in lp.dir.iterdir())


def test_exit_code_3(builder):
    lp = builder.start_process("c1", "init", ("sh", "-c", "exit 3"))
    assert lp.wait_exit_status() == b"3"
    assert lp.shim.wait(5) == 0
    # Written before the shim reaped it: present even for an instant exit.
    assert (lp.dir / "starttime").read_bytes().isdigit()


def test_sigterm_gives_143(builder):
    lp = builder.start_process("c1", "init")
    lp.kill_child(signal.SIGTERM)  # default disposition, not the shim's
    assert lp.wait_exit_status() == b"143"


def test_kill_shim_reparents_to_subreaper(builder):
    lp = builder.start_process("c1", "init")
    lp.kill_shim()
    assert lp.shim.returncode == -signal.SIGKILL
    assert int(field(lp.pid, 4)) == os.getpid()
    assert field(lp.pid, 3) in "SR"
    assert not (lp.dir / "exitStatus").exists()


def test_stopped_shim_leaves_zombie(builder):
    lp = builder.start_process("c1", "init")
    lp.stop_shim()
    assert field(lp.shim.pid, 3) in "Tt"
    lp.kill_child()
    assert lp.wait_state("Z") == "Z"
    assert int(field(lp.pid, 4)) == lp.shim.pid
    assert int(field(lp.pid, 52)) == signal.SIGKILL  # wait status: killed by 9
    assert int(field(lp.pid, 22)) == lp.starttime  # a zombie keeps its start time
    assert not (lp.dir / "exitStatus").exists()
    assert Path(f"/proc/{lp.pid}/cmdline").read_bytes() == b""


def test_hung_shim_writes_no_pid(builder):
    shim = builder.start_hung_shim("c1", "init")
    d = builder.root / "c1" / "init"
    time.sleep(0.1)
    assert shim.poll() is None
    assert not (d / "pid").exists() and not (d / ".pid").exists()
    assert stat.S_ISFIFO(os.lstat(d / "exit").st_mode)
    assert (d / "process.json").exists()
    assert os.readlink(f"/proc/{shim.pid}/cwd") == str(d)


@pytest.mark.parametrize("comm,expect", [
    ("a) b", "a) b"),
    ("x) y z", "x) y z"),
    ("docker-containerd-shim", "docker-containe"),
])
def test_spawn_unrelated_comm(builder, comm, expect):
    p = builder.spawn_unrelated(comm=comm)
    assert Path(f"/proc/{p.pid}/comm").read_text() == expect + "\n"
    raw = Path(f"/proc/{p.pid}/stat").read_bytes()
    assert raw[raw.index(b"(") + 1:raw.rindex(b")")] == expect.encode()
    assert int(field(p.pid, 4)) == os.getpid()


def test_write_process_static(builder):
    builder.container("c1", state=b'{"bundle":', bundle=False)
    assert (builder.root / "c1" / "state.json").read_bytes() == b'{"bundle":'
    assert not (builder.bundles / "c1").exists()
    d = builder.write_process("c1", "init", pid=123, starttime=b"456\n", exit_status=None,
                              extra={".pid": b"12"})
    assert (d / "pid").read_bytes() == b"123"
    assert (d / "starttime").read_bytes() == b"456\n"
    assert not (d / "exitStatus").exists()
    assert (d / ".pid").read_bytes() == b"12"
    assert json.loads((d / "process.json").read_bytes())["exec"] is False
    d2 = builder.write_process("c1", "x", process=b"\0\0", exit_status=0, fifos=False)
    assert (d2 / "process.json").read_bytes() == b"\0\0"
    assert (d2 / "exitStatus").read_bytes() == b"0"
    assert not (d2 / "exit").exists()
    assert not (builder.write_process("c1", "y", process=False) / "process.json").exists()
    old = process_json(["sleep", "1"], capabilities_as_list=True)
    assert isinstance(old["capabilities"], list) and old["capabilities"]


def test_capture_proc_as_pid(builder, tmp_path):
    lp = builder.start_process("c1", "init")
    other = builder.spawn_unrelated(comm="x) y z")
    dest = capture_proc(tmp_path / "proc", [lp.shim.pid, 999999999], as_pid={other.pid: lp.pid})
    assert (dest / "stat").read_bytes().count(b"\nbtime ") == 1
    assert (dest / "sys/kernel/random/boot_id").read_bytes() == \
        Path("/proc/sys/kernel/random/boot_id").read_bytes()
    assert not (dest / "999999999").exists()
    assert (dest / str(lp.shim.pid) / "cmdline").read_bytes() == \
        Path(f"/proc/{lp.shim.pid}/cmdline").read_bytes()
    assert os.readlink(dest / str(lp.shim.pid) / "cwd") == str(lp.dir)
    # pid lp.pid is now `other`: its comm, its start ticks, its cmdline.
    pd = dest / str(lp.pid)
    raw = (pd / "stat").read_bytes()
    assert raw.startswith(f"{lp.pid} (x) y z) ".encode())
    assert int(raw[raw.rindex(b")") + 2:].split()[19]) == int(field(other.pid, 22))
    status = dict(l.split(":", 1) for l in (pd / "status").read_text().splitlines() if ":" in l)
    assert status["Pid"].strip() == status["Tgid"].strip() == str(lp.pid)
    assert status["NSpid"].split()[0] == str(lp.pid)
    assert status["PPid"].strip() == str(os.getpid())
    assert (pd / "cmdline").read_bytes() == b"sleep\x001000\x00"
    assert (pd / "cgroup").exists()


def test_capture_zombie_has_no_cwd(builder, tmp_path):
    lp = builder.start_process("c1", "init")
    lp.stop_shim()
    lp.kill_child()
    lp.wait_state("Z")
    pd = capture_proc(tmp_path / "proc", [lp.pid]) / str(lp.pid)
    assert not os.path.lexists(pd / "cwd")
    assert (pd / "cmdline").read_bytes() == b""
    assert (pd / "stat").read_bytes().split(b") ")[1][:1] == b"Z"


def test_spawn_at_pid_reuses_a_recorded_pid(builder):
    lp = builder.start_process("c1", "init")
    lp.kill_child()
    lp.wait_exit_status()
    lp.shim.wait(5)
    time.sleep(0.05)  # start ticks count 10 ms: a reuser in the same tick would look identical
    p = builder.spawn_at_pid(lp.pid, comm="a) b")
    if p is None:
        pytest.skip("could not get the pid back (no CAP_SYS_ADMIN, or a busy host)")
    assert p.pid == lp.pid
    assert int(field(p.pid, 22)) != lp.starttime
    assert Path(f"/proc/{p.pid}/comm").read_text() == "a) b\n"


def test_cleanup_leaves_nothing(tmp_path):
    before = our_children()
    b = RootBuilder(tmp_path / "root")
    procs: list[tuple[int, int]] = []  # (pid, start ticks)

    def track(pid: int) -> None:
        procs.append((pid, int(field(pid, 22))))

    live = b.start_process("c1", "init")
    orphan = b.start_process("c2", "init")
    zombie = b.start_process("c3", "init")
    # A container process with its own children (same session).
    family = b.start_process("c4", "init", ("sh", "-c", "sleep 1000 & sleep 1000 & wait"))
    for lp in (live, orphan, zombie, family):
        track(lp.pid)
        track(lp.shim.pid)
    deadline = time.monotonic() + 5
    while len(session_members(family.pid)) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    kids = [p for p in session_members(family.pid) if p != family.pid]
    assert len(kids) == 2
    for k in kids:
        track(k)
    orphan.kill_shim()
    zombie.stop_shim()
    zombie.kill_child()
    zombie.wait_state("Z")
    hung = b.start_hung_shim("c5", "init")
    track(hung.pid)
    track(b.spawn_unrelated(comm="a) b").pid)

    b.cleanup()
    b.cleanup()  # idempotent
    left = [pid for pid, ticks in procs if same_process_alive(pid, ticks)]
    assert left == []
    assert our_children() == before
    for pid, _ in procs:
        with pytest.raises((ChildProcessError, ProcessLookupError)):
            os.waitpid(pid, os.WNOHANG)  # nothing of ours is left unreaped
