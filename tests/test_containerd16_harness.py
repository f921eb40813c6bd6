"""The real containerd 1.6 lab (recover/generations/runtime_v2/lab, tests/lab_fixtures.py): a crash cycle, and nothing left behind."""

import os
import signal

import pytest
from lab_fixtures import containerd16, skip_unless_usable  # noqa: F401

from recover.generations.runtime_v2.lab import Containerd, alive, proc_stat

# where a daemon escaping its private namespace would write on the host
HOST_PATHS = ("/run/containerd", "/var/lib/containerd", "/opt/containerd")


def host_view() -> dict:
    """Every entry under the host paths (path, mode, mtime, size), or None when a path is absent."""
    view = {}
    for top in HOST_PATHS:
        if not os.path.lexists(top):
            view[top] = None
            continue
        entries = []
        for dirpath, dirs, files in os.walk(top):
            for name in dirs + files:
                st = os.lstat(os.path.join(dirpath, name))
                entries.append((os.path.join(dirpath, name), st.st_mode, st.st_mtime_ns, st.st_size))
        view[top] = sorted(entries)
    return view


def test_a_task_outlives_a_daemon_crash_and_close_leaves_nothing():
    skip_unless_usable()
    host_before = host_view()
    d = Containerd.create()
    try:
        d.start()
        task = d.run("smoke")
        doomed = d.run("smoke-noaddr", exec_id=None)
        assert d.task_list() == {"smoke": (task.init, "RUNNING"),
                                 "smoke-noaddr": (doomed.init, "RUNNING")}
        assert proc_stat(task.shim).ppid == 1  # a shim re-parents itself at start
        address = (d.paths.bundle("default", "smoke") / "address").read_text()
        assert address == f"unix:///run/containerd/s/{d.paths.socket_name('default', 'smoke')}"
        assert d.paths.socket("default", "smoke").exists()

        d.crash()
        assert alive(task.shim) and alive(task.init, task.init_start)
        (d.paths.bundle("default", "smoke-noaddr") / "address").unlink()
        d.start()

        # the restore is over once the daemon answers: one task re-adopted, the other cleaned up
        assert d.task_list() == {"smoke": (task.init, "RUNNING")}
        assert d.shim_pid("smoke") == task.shim
        assert not d.paths.bundle("default", "smoke-noaddr").exists()
        assert not alive(doomed.init, doomed.init_start)
        assert alive(doomed.shim)  # leaked: containerd no longer knows it
        assert d.containers() == ["smoke", "smoke-noaddr"]  # the metadata stays
        # a command in the namespace sees the paths as containerd does
        seen = d.in_ns(["cat", f"{d.paths.ns_bundle('default', 'smoke')}/init.pid"]).stdout
        assert seen == str(task.init)

        started = d.processes()
        assert {d.daemon.pid, d.holder.pid, task.shim, task.init, *task.execs.values(),
                doomed.shim} <= started.keys()
        cgroups = d.cgroup_dirs()
        assert cgroups
    finally:
        d.close()
    assert [pid for pid, start in started.items() if alive(pid, start)] == []
    assert not any(c.exists() for c in cgroups)
    assert not d.paths.base.exists()
    assert host_view() == host_before


def test_close_after_a_failure_midway_kills_a_stopped_shim_and_its_task():
    skip_unless_usable()
    with pytest.raises(RuntimeError, match="midway"):
        with Containerd.create() as d:
            d.start()
            task = d.run("midway")
            os.kill(task.shim, signal.SIGSTOP)
            started = d.processes()
            raise RuntimeError("a test failed midway")
    assert task.shim in started and task.init in started
    assert [pid for pid, start in started.items() if alive(pid, start)] == []
    assert not d.paths.base.exists()


def test_the_fixture_gives_a_running_daemon(containerd16):  # noqa: F811
    task = containerd16.run("fixture", exec_id=None)
    assert containerd16.task_list()["fixture"] == (task.init, "RUNNING")
    assert containerd16.in_ns(["ls", containerd16.paths.ns_state]).returncode == 0


def test_two_daemons_on_the_default_state_dir_keep_to_their_own_shims():
    """With default_state both daemons' shims run `-address /run/containerd/containerd.sock` with
    the same namespace and id: the harness tells them apart by their mount namespace."""
    skip_unless_usable()
    with Containerd.create(default_state=True) as one, Containerd.create(default_state=True) as two:
        one.start()
        two.start()
        a, b = one.run("same", exec_id=None), two.run("same", exec_id=None)
        assert one.paths.address == two.paths.address == "/run/containerd/containerd.sock"
        assert set(one.shims()) == {a.shim} and set(two.shims()) == {b.shim}
        assert one.task_list() == {"same": (a.init, "RUNNING")} and two.task_list() == {"same": (b.init, "RUNNING")}
        # the state dir holds the tasks, the shim sockets and runc's state, as on a default host
        listing = one.in_ns(["ls", "/run/containerd"], check=True).stdout.split()
        assert {"io.containerd.runtime.v2.task", "s", "runc", "containerd.sock"} <= set(listing)
        assert one.paths.socket("default", "same").exists() and one.paths.runc_state("default", "same").is_dir()
        one.close()
        assert alive(b.shim) and alive(b.init, b.init_start) and not alive(a.init, a.init_start)
