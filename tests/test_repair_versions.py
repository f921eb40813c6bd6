"""`recover repair --apply` on real containerd 1.6.20, 1.7.34 and 2.3.4 state dirs, each checked by
restarting the real daemon after it (issue 21's "done when").

Per version, one lab with CRI: tasks started, containerd SIGKILLed; while it is down
  t1: the file that names its shim's socket removed (1.x `address`, 2.x `bootstrap.json`),
  t2: its shim SIGSTOPped,
  t3: a CRI pod whose container's init exits 42 while the pod's shim lives,
  t4: its shim SIGKILLed (its init and exec orphaned: the restart would SIGKILL them),
  t5: its bundle emptied (the restart would delete it silently and leak the task),
  t6: its bundle renamed `.t6` (the restart would skip it and leak the task);
`recover repair ROOT --containerd-root DIR --containerd-version V --stop-orphans --apply` inside the
daemon's mount namespace, its journal undone and the repair applied again; then containerd
restarted: t1, t2, t5 and t6 RUNNING with their init pids (nothing killed), t3's checkpoint ExitCode 42
(1.7 and 2.x write 255 "Unknown" without the repair: test_restart_versions), t4's processes
stopped by SIGTERM (their trap's exit), not SIGKILLed by the restart.  Every refusal is tried on
the same lab: a copy of the state dir, a captured proc dir, the root through /proc/<pid>/root from
outside its mount namespace, and the running daemon after the restart.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
from lab_fixtures import run_concurrently, unique

from recover.builders import capture_proc
from recover.generations.runtime_v2.lab import VERSIONS, Containerd, alive, proc_stat, wait_until

VERSION_NAMES = list(VERSIONS)


def recover(d: Containerd, *args: str, inside: bool = True) -> tuple[int, dict | None, str]:
    argv = [sys.executable, "-m", "recover", *args]
    result = d.in_ns(argv) if inside else subprocess.run(argv, capture_output=True, text=True,
                                                         stdin=subprocess.DEVNULL)
    try:
        doc = json.loads(result.stdout) if result.stdout.strip() else None
    except json.JSONDecodeError:
        doc = None
    return result.returncode, doc, result.stderr


def actions(doc: dict) -> dict[tuple[str, str | None], dict]:
    return {(a["container"].rpartition("/")[2], a["process"]): a for a in doc["actions"]}


def repair_cycle(version: str) -> dict:
    from cri import Cri  # grpcio: the test extra

    ns = unique("repair")
    seen: dict = {}
    with Containerd.create(version=version, namespace=ns, cri=True) as d:
        d.start()
        tasks = {cid: d.run(cid, exec_id="e1" if cid == "t4" else None) for cid in ("t1", "t2", "t4", "t5", "t6")}
        with Cri(d) as cri:
            pod = cri.run_pod("t3")
        starts = {cid: {"init": (t.init, t.init_start),
                        **{e: (pid, proc_stat(pid).start) for e, pid in t.execs.items()}} for cid, t in tasks.items()}
        d.crash()
        name = "bootstrap.json" if d.version.writes_bootstrap_json else "address"
        (d.paths.bundle(ns, "t1") / name).unlink()
        os.kill(tasks["t2"].shim, signal.SIGSTOP)
        wait_until(lambda: proc_stat(tasks["t2"].shim).state == "T", 10, "the shim to stop")
        os.kill(pod.init, signal.SIGTERM)
        wait_until(lambda: not alive(pod.init), 10, "the pod's init to exit")
        os.kill(tasks["t4"].shim, signal.SIGKILL)
        wait_until(lambda: not alive(tasks["t4"].shim), 10, "the shim to die")
        for entry in d.paths.bundle(ns, "t5").iterdir():
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        d.paths.bundle(ns, "t6").rename(d.paths.bundle(ns, ".t6"))

        root = ["--containerd-root", str(d.paths.root), "--containerd-version", version]
        state = d.paths.ns_state
        # refused: a copy, a captured proc, the root through another mount namespace
        copy = d.paths.base / "copy" / "state"
        shutil.copytree(d.paths.state, copy, symlinks=True, ignore_dangling_symlinks=True,
                        copy_function=lambda s, t: shutil.copy2(s, t) if os.path.isfile(s) else None)
        seen["copy"] = recover(d, "repair", str(copy), *root, "--apply", "-f", "json", inside=False)
        captured = capture_proc(d.paths.base / "proc", [tasks["t1"].shim, tasks["t1"].init])
        seen["captured"] = recover(d, "repair", state, *root, "--apply", "--proc-root", str(captured), "-f", "json")
        seen["other_ns"] = recover(d, "repair", f"/proc/{d.holder.pid}/root{state}", *root, "--apply", "-f", "json",
                                   inside=False)
        seen["untouched"] = not (d.paths.bundle(ns, "t1") / name).exists()

        seen["plan"] = recover(d, "repair", state, *root, "--stop-orphans", "--grace", "5", "-f", "json")
        journal = str(d.paths.base / "journal.jsonl")
        checkpoint_before = d.paths.cri_status(pod.container).read_bytes()
        seen["applied"] = recover(d, "repair", state, *root, "--stop-orphans", "--grace", "5", "--apply",
                                  "--journal", journal, "-f", "json")
        written = d.paths.bundle(ns, "t1") / name
        seen["written"] = (written.read_text() if written.exists() else None, d.cri_checkpoint(pod.container))
        seen["undone"] = recover(d, "repair", "--undo", journal, "-f", "json")
        seen["after_undo"] = ((d.paths.bundle(ns, "t1") / name).exists(),
                              d.paths.cri_status(pod.container).read_bytes() == checkpoint_before,
                              sorted(os.listdir(d.paths.bundle(ns, "t5"))), d.paths.bundle(ns, ".t6").is_dir())
        seen["again"] = recover(d, "repair", state, *root, "--apply", "--journal", journal, "-f", "json")
        seen["t4_alive"] = {p: alive(*ps) for p, ps in starts["t4"].items()}

        d.start()
        seen["daemon_runs"] = recover(d, "repair", state, *root, "--apply", "-f", "json")
        seen["listed"] = d.task_list(ns)
        seen["running"] = {cid: {p: alive(*ps) for p, ps in starts[cid].items()} for cid in ("t1", "t2", "t5", "t6")}
        with Cri(d) as cri:
            seen["status"] = cri.status(pod.container)
        seen["checkpoint"] = d.cri_checkpoint(pod.container)
        seen.update(tasks=tasks, pod=pod, name=name, log=d.log())
    return seen


@pytest.fixture(scope="module")
def cycles():
    return run_concurrently({v: functools.partial(repair_cycle, v) for v in VERSION_NAMES})


@pytest.mark.parametrize("version", VERSION_NAMES)
def test_repair_saves_what_the_restart_would_kill_or_lose(cycles, version):
    seen = cycles[version]
    tasks, pod, name = seen["tasks"], seen["pod"], seen["name"]
    code, plan, err = seen["plan"]
    assert code == 0, err
    planned = actions(plan)
    write = "write-bootstrap-json" if name == "bootstrap.json" else "write-address"
    assert planned[("t1", None)]["action"] == write
    assert planned[("t2", None)]["action"] == "resume-shim" and planned[("t2", None)]["pid"] == tasks["t2"].shim
    assert {planned[("t4", p)]["action"] for p in ("init", "e1")} == {"stop-orphan"}
    assert (planned[("t5", None)]["action"], planned[("t5", "init")]["action"]) == (write, "write-pid")
    assert planned[("t5", "init")]["value"] == str(tasks["t5"].init)
    assert (planned[(".t6", None)]["action"], planned[(".t6", None)]["value"]) == ("unhide-bundle", "t6")
    cri_write = planned.get((pod.container, "init"))
    if version.startswith("1.6"):  # 1.6 re-adopts the task stopped and CRI records 42 itself
        assert cri_write is None
    else:
        assert (cri_write["action"], cri_write["value"]) == ("write-cri-exit", "42")

    code, applied, err = seen["applied"]
    assert code == 0, err
    assert {a["result"] for a in applied["actions"] if a["action"] != "none"} == {"applied"}, applied
    content, checkpoint = seen["written"]
    if name == "bootstrap.json":
        assert json.loads(content) == {"version": 3, "address": json.loads(content)["address"], "protocol": "ttrpc"}
    else:
        assert content.startswith("unix:///run/containerd/s/") and "\n" not in content
    if not version.startswith("1.6"):
        assert (checkpoint["ExitCode"], checkpoint["Pid"]) == (42, 0) and checkpoint["FinishedAt"] > 0
    # t4's processes were stopped cleanly (their SIGTERM trap), before any restart
    assert seen["t4_alive"] == {"init": False, "e1": False}

    # undo reverts the files; the signals it cannot undo it says so; applied again, the files are back
    code, undone, err = seen["undone"]
    assert code in (0, 1), err  # 1: what cannot be undone (a signal) is said, not reverted
    assert seen["after_undo"] == (False, True, [], True)
    code, again, err = seen["again"]
    assert code == 0, err
    assert {a["action"] for a in again["actions"] if a["result"] == "applied"} >= {write}

    # the restart: t1 and t2 re-adopted, running, nothing killed; t3's true exit in CRI
    saved = ("t1", "t2", "t5", "t6")
    assert {cid: seen["listed"].get(cid) for cid in saved} == {
        cid: (tasks[cid].init, "RUNNING") for cid in saved}, seen["log"]
    assert seen["running"] == {cid: {"init": True} for cid in saved}
    assert (seen["checkpoint"]["ExitCode"], seen["status"]["exit_code"]) == (42, 42), seen["checkpoint"]
    assert "cleaning up after shim disconnected\" id=t1" not in seen["log"]


@pytest.mark.parametrize("version", VERSION_NAMES)
def test_repair_refuses_where_it_cannot_verify_or_the_daemon_reads_another_root(cycles, version):
    seen = cycles[version]
    for key, words in (("copy", "is a copy"), ("captured", "captured proc dir"), ("other_ns", "is read inside"),
                       ("daemon_runs", "a containerd daemon runs on")):
        code, doc, err = seen[key]
        assert code == 4 and words in err, (key, err)
        assert doc["refused"] and doc["actions"] == [], key
    assert seen["untouched"]  # nothing was written by a refused run
