"""The lab runs each containerd version (recover/generations/runtime_v2/lab/versions.py): a task with an exec outlives a
crash and is re-adopted, RUNNING, with the same init (and a task whose init exited while the
daemon was down is kept by 1.6 only); a CRI pod runs and keeps its checkpoint.
And a task 1.6.20 started is reconnected by 2.3.4 after an upgrade.  The cycles of all versions
run at once (tests/lab_fixtures.py), two labs per version (one plain, one with the CRI plugin)
and the upgrade's."""

from __future__ import annotations

import functools
import json
import os
import signal

import pytest
from lab_fixtures import run_concurrently, skip_unless_usable, unique

from recover.generations.runtime_v2.lab import (
    CRI_NAMESPACE,
    VERSIONS,
    Containerd,
    HarnessError,
    alive,
    proc_stat,
    wait_until,
)
from recover.generations.runtime_v2.lab.proc import SHIM

VERSION_NAMES = list(VERSIONS)


def task_cycle(version: str) -> dict:
    """Start, run a task with an exec, SIGKILL the daemon, restart it: what was seen."""
    ns = unique("smoke")
    with Containerd.create(version=version, namespace=ns) as d:
        seen: dict = {"first_start": d.start()}
        task = d.run("t1")
        bundle = d.paths.bundle(ns, "t1")
        seen["bundle"] = sorted(p.name for p in bundle.iterdir())
        seen["bootstrap"] = (bundle / "bootstrap.json").read_text() if (bundle / "bootstrap.json").exists() else None
        seen["socket"] = d.paths.shim_socket(ns, "t1") == d.paths.socket(ns, "t1") and d.paths.socket(ns, "t1").exists()
        seen["shim_exe"] = os.readlink(f"/proc/{task.shim}/exe")
        exits = d.run("t2-exits", exec_id=None)
        seen["before"] = d.task_list()
        d.crash()
        os.kill(exits.init, signal.SIGTERM)  # its shell exits 42 under its live shim
        wait_until(lambda: not alive(exits.init, exits.init_start), 10, "the init to exit")
        seen["restart"] = d.start()
        seen["after"] = d.task_list()
        if not version.startswith("1.6"):  # 1.7 and 2.x shut the shim down: give it time to exit
            try:
                wait_until(lambda: not alive(exits.shim), 10, "the shim to exit")
            except HarnessError:
                pass
        seen["exited_shim_after"] = alive(exits.shim)
        seen["exited_bundle_after"] = d.paths.bundle(ns, "t2-exits").exists()
        seen["exits"] = exits
        seen["exec_alive"] = all(alive(pid) for pid in task.execs.values())
        seen["shim_after"] = d.shim_pid("t1")
        seen["task"] = task
    return seen


def pod_cycle(version: str) -> dict:
    """Start with CRI, run a pod, SIGKILL the daemon, restart it: CRI's view and checkpoint."""
    from cri import Cri  # grpcio: the test extra

    with Containerd.create(version=version, cri=True) as d:
        d.start()
        seen: dict = {}
        with Cri(d) as cri:
            pod = cri.run_pod("smoke")
            seen["status"] = cri.status(pod.container)
        seen["checkpoint"] = d.cri_checkpoint(pod.container)
        bundle = d.paths.bundle(CRI_NAMESPACE, pod.container)
        seen["bundle"] = sorted(p.name for p in bundle.iterdir())
        seen["shim_socket"] = d.paths.shim_socket(CRI_NAMESPACE, pod.container)
        d.crash()
        d.start()
        with Cri(d) as cri:  # waits for CRI's recovery
            seen["status_after"] = cri.status(pod.container)
            seen["sandboxes_after"] = cri.sandboxes()
        seen["checkpoint_after"] = d.cri_checkpoint(pod.container)
        seen["init_alive"] = alive(pod.init, pod.init_start)
        seen["pod"] = pod
        seen["socket_is_the_sandboxes"] = seen["shim_socket"] == d.paths.socket(CRI_NAMESPACE, pod.sandbox)
    return seen


def upgrade_cycle() -> dict:
    """A task started by 1.6.20, the daemon SIGKILLed, 2.3.4 started over the same dirs."""
    skip_unless_usable("2.3.4")
    ns = unique("upgrade")
    with Containerd.create(version="1.6.20", namespace=ns) as d:
        d.start()
        task = d.run("t1")
        d.crash()
        d.upgrade("2.3.4")
        d.start()
        bundle = d.paths.bundle(ns, "t1")
        return {"task": task, "after": d.task_list(), "shim": d.shim_pid("t1"),
                "files": {n: (bundle / n).read_text() for n in ("address", "bootstrap.json") if (bundle / n).exists()},
                "socket": d.paths.socket(ns, "t1")}


@pytest.fixture(scope="module")
def cycles():
    work = {}
    for v in VERSION_NAMES:
        work[(v, "task")] = functools.partial(task_cycle, v)
        work[(v, "pod")] = functools.partial(pod_cycle, v)
    work[("1.6.20", "upgrade")] = upgrade_cycle
    return run_concurrently(work)


@pytest.mark.parametrize("version", VERSION_NAMES)
def test_a_task_is_readopted_running_after_a_crash(cycles, version):
    seen = cycles[(version, "task")]
    task = seen["task"]
    assert seen["before"] == {"t1": (task.init, "RUNNING"), "t2-exits": (seen["exits"].init, "RUNNING")}
    assert seen["after"]["t1"] == (task.init, "RUNNING"), "re-adopted, same init"
    assert seen["exec_alive"] and seen["shim_after"] == task.shim
    assert seen["socket"], "the shim listens where the bundle says (sha256 of address/ns/id)"
    # the daemon ran its own version's shim (its dir comes first on its PATH)
    assert seen["shim_exe"] == VERSIONS[version].binary(SHIM)


@pytest.mark.parametrize("version", VERSION_NAMES)
def test_an_init_that_exited_under_its_live_shim_is_kept_by_16_only(cycles, version):
    """SPEC-v2 §2.3 and §2a.1: 1.6 re-adopts the task STOPPED (its shim holds the status); 1.7
    and 2.x delete it (bundle gone, shim shut down): the exit status is lost."""
    seen = cycles[(version, "task")]
    if version.startswith("1.6"):
        assert seen["after"]["t2-exits"] == (seen["exits"].init, "STOPPED")
        assert seen["exited_bundle_after"] and seen["exited_shim_after"]
    else:
        assert "t2-exits" not in seen["after"]
        assert not seen["exited_bundle_after"] and not seen["exited_shim_after"]


@pytest.mark.parametrize("version", VERSION_NAMES)
def test_the_bundle_names_its_shim_as_the_version_writes_it(cycles, version):
    seen = cycles[(version, "task")]
    if VERSIONS[version].writes_bootstrap_json:
        assert "address" not in seen["bundle"] and "bootstrap.json" in seen["bundle"]
        doc = json.loads(seen["bootstrap"])
        assert doc["version"] == 3 and doc["protocol"] == "ttrpc"
        assert doc["address"].startswith("unix:///run/containerd/s/")
        assert not seen["bootstrap"].endswith("\n")
    else:
        assert "address" in seen["bundle"] and seen["bootstrap"] is None


@pytest.mark.parametrize("version", VERSION_NAMES)
def test_a_cri_pod_runs_and_keeps_its_checkpoint_across_a_crash(cycles, version):
    seen = cycles[(version, "pod")]
    pod = seen["pod"]
    assert seen["status"]["state"] == "CONTAINER_RUNNING"
    checkpoint = seen["checkpoint"]
    assert checkpoint["Pid"] == pod.init and checkpoint["StartedAt"] > 0 and checkpoint["FinishedAt"] == 0
    assert (checkpoint["ExitCode"], checkpoint["Reason"]) == (0, "")
    assert seen["socket_is_the_sandboxes"], "a pod's containers share its sandbox's shim"
    if VERSIONS[version].writes_bootstrap_json:
        assert "sandbox" in seen["bundle"] and "bootstrap.json" in seen["bundle"]
    # after the crash and restart: re-adopted, running, the checkpoint as it was
    assert seen["init_alive"]
    assert seen["status_after"]["state"] == "CONTAINER_RUNNING"
    assert seen["sandboxes_after"] == {pod.sandbox: "SANDBOX_READY"}
    assert seen["checkpoint_after"]["Pid"] == pod.init and seen["checkpoint_after"]["FinishedAt"] == 0
    assert proc_stat(pod.init) is None or not alive(pod.init, pod.init_start), "close() killed it"


def test_an_upgrade_to_2x_reconnects_a_task_a_16_shim_runs(cycles):
    """2.3.4 reads the `address` 1.6.20 wrote, writes bootstrap.json version 2 beside it (the
    1.6 shim serves task API v2), and reconnects: the shim and init are the same."""
    seen = cycles[("1.6.20", "upgrade")]
    task = seen["task"]
    assert seen["after"] == {"t1": (task.init, "RUNNING")} and seen["shim"] == task.shim
    address = f"unix:///run/containerd/s/{seen['socket'].name}"
    assert seen["files"]["address"] == address
    assert json.loads(seen["files"]["bootstrap.json"]) == {"version": 2, "address": address, "protocol": "ttrpc"}


def test_missing_names_what_a_version_lacks(tmp_path, monkeypatch):
    """Per version: root first, then what is not installed or not extracted, where it looks."""
    from recover.generations.runtime_v2.lab.versions import BINARIES_ENV
    from recover.generations.runtime_v2.lab.versions import missing as cached

    monkeypatch.setenv(BINARIES_ENV, str(tmp_path))  # a dir with no containerd-<version>/ in it
    reason = cached.__wrapped__("2.3.4")  # missing() keeps its first answer per version
    if os.geteuid() != 0:
        assert reason.startswith("needs root")
    elif "not extracted" in reason:
        assert str(tmp_path / "containerd-2.3.4") in reason and "containerd-2.3.4-linux-amd64.tar.xz" in reason
    else:  # the host lacks more basic things (Debian packages): said first
        assert reason.startswith(("not installed", "no static busybox"))
    with pytest.raises(ValueError, match="1.6.20, 1.7.34, 2.3.4"):
        Containerd.create(version="1.5.0")
