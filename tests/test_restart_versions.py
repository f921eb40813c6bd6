"""Real containerd 1.6.20, 1.7.34 and 2.3.4 restarted over the faults of SPEC-v2 §2 and §2a: what
`recover scan --containerd-version V` predicted for each task just before the restart
(`containerd_would`) against what the daemon of that version then did.

Each prediction names consequences anyone can observe after the restart (`expected`); the test
checks them against what it sees: the task's processes alive or not (pid and start ticks taken when
they ran), its shim as it was (or shut down, for a leaked shim 1.7 and 2.x clean up), its bundle,
work dir and runc state present or not, `ctr task ls`, and the daemon's log.  Cycles, all run at
once (tests/lab_fixtures.py), few and broad (each costs a daemon start and a restore; a stopped
shim costs 5 or 10 s of restore):
  faults:  per version, a state dir of its own: one fault per task, including those where the
           versions part (an init that exited under its live shim, JSON in `address`, a removed
           bootstrap.json or one replaced by a plain `address`, a stopped shim with and without a
           live exec), every prediction of the version at least once;
  advice:  per version, the default state dir /run/containerd, read by `recover scan` with no
           argument, with the findings' advice followed before the restart (the address or
           bootstrap.json restored as the version reads it, the stopped shim resumed);
  cri:     per version, a pod whose container's init exits 42 while the pod's shim lives: what CRI
           records after the restart (42, or 255 "Unknown"), as predicted;
  upgrade: tasks of 1.6.20, then 2.3.4 started over them, judged with --containerd-version 2.3.4.
recover runs inside the daemon's mount namespace, where it sees the paths as containerd does.  In the
faults, cri and upgrade cycles, a crash capture is made at the moment of the scan (the daemon's dirs
and a mini proc, lab/capture.py) and scanned with --image-root and --proc-root: its predictions must
come true too, and say what the live scan said (an exit status only a live shim holds is unknown).
Each cycle puts its tasks in namespaces of its own: recover takes a live shim with the task's
namespace and id for the task's, and another run of these tests on the host could lend it one.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest
from conftest import record_emitted
from lab_fixtures import run_concurrently, unique

from recover.generations.runtime_v2.lab import (
    RUNTIME_DIR,
    VERSIONS,
    Containerd,
    Task,
    alive,
    proc_stat,
    wait_until,
)

LIVE = ("running", "orphaned")
VERSION_NAMES = list(VERSIONS)


@dataclass(frozen=True)
class Consequences:
    """What a prediction means, in what can be seen after the restart."""

    listed: bool  # `ctr task ls` lists it: RUNNING, or STOPPED once its init has exited
    kills: bool  # every process of the task that ran before the restart is dead after (else: all still run)
    bundle_kept: bool  # its bundle dir (under the name it had) is still there
    work_kept: bool  # its work dir is still there (a loaded namespace's unloaded tasks lose theirs)
    runc_kept: bool  # runc's state dir is as it was (else: gone)
    cleanup: bool  # the log says "cleaning up after shim disconnected" for it
    cleanup_fails: bool  # ... and "failed to clean up after shim disconnected" (the delete timed out)
    shim_shut_down: bool = False  # its live shim is gone after (a leaked shim 1.7 and 2.x clean up)
    blocks: float = 0  # at least this many seconds of restore (a stopped shim's time-outs)


CONSEQUENCES = {
    "reconnect": Consequences(listed=True, kills=False, bundle_kept=True, work_kept=True, runc_kept=True,
                              cleanup=False, cleanup_fails=False),
    "kill-live-processes": Consequences(listed=False, kills=True, bundle_kept=False, work_kept=False,
                                        runc_kept=False, cleanup=True, cleanup_fails=False),
    "clean-up": Consequences(listed=False, kills=True, bundle_kept=False, work_kept=False, runc_kept=False,
                             cleanup=True, cleanup_fails=False),
    "clean-up-and-leak": Consequences(listed=False, kills=False, bundle_kept=False, work_kept=False,
                                      runc_kept=False, cleanup=True, cleanup_fails=False),
    "delete-silently-and-leak": Consequences(listed=False, kills=False, bundle_kept=False, work_kept=False,
                                             runc_kept=True, cleanup=False, cleanup_fails=False),
    "skip-and-leak": Consequences(listed=False, kills=False, bundle_kept=True, work_kept=False, runc_kept=True,
                                  cleanup=False, cleanup_fails=False),
    # a hidden task whose shim its visible twin reaches: what happens to the task is the twin's
    "skip": Consequences(listed=True, kills=False, bundle_kept=True, work_kept=True, runc_kept=True,
                         cleanup=False, cleanup_fails=False),
    "block-then-kill": Consequences(listed=False, kills=True, bundle_kept=False, work_kept=False, runc_kept=False,
                                    cleanup=True, cleanup_fails=False, blocks=5),
}


def expected(c: dict, version: str) -> Consequences:
    """The consequences of recover's prediction for a task, for the version judged, with each variant
    its reason names (a leaked shim cleaned up; a stopped shim whose live exec makes its delete time
    out; a delete that fails or cannot remove the bundle)."""
    would, why = c["containerd_would"], c["containerd_would_why"]
    e = CONSEQUENCES[would]
    if '"cleaning leaked shim process"' in why and would == "clean-up-and-leak":
        # 1.7 without runc's state: the shim, which still watches live processes, stays; so does the bundle
        e = replace(e, bundle_kept=True, cleanup=False)
    elif '"cleaning leaked shim process"' in why:
        e = replace(e, shim_shut_down="the pod's shim lives on" not in why)
    if "the shim's `delete` fails at once" in why:  # no `runtime` file in the bundle (1.6, 1.7)
        e = replace(e, bundle_kept=True, runc_kept=True, cleanup_fails=True)
    if "and that dir is there" in why:  # its hidden twin `.<id>` keeps the delete's rename from working
        e = replace(e, bundle_kept=True, cleanup_fails=True)
    if would == "block-then-kill" and "the delete never finishes" in why:
        # 1.6 and 1.7 keep the bundle, 2.x removes it; runc's state is kept by all
        e = replace(e, bundle_kept=not version.startswith("2."), runc_kept=True, cleanup_fails=True, blocks=10)
    return e


# ---------------------------------------------------------------- tasks and their faults

@dataclass
class Made:
    """A task as the test made it, and where its bundle is after its fault."""

    task: Task
    processes: dict[str, tuple[int, int]]  # init and execs: (pid, start ticks) once they ran
    shim_start: int
    ns_dir: str  # the namespace dir's name after the fault (recover's `namespace`)
    task_dir: str  # the bundle dir's name after the fault (recover's `id`)

    @property
    def key(self) -> str:
        return f"{self.ns_dir}/{self.task_dir}"


Fault = Callable[[Containerd, Made], Made | None]  # a fault may make a twin: another task dir of the task


def kill_and_wait(pids: list[int], sig: int = signal.SIGKILL) -> None:
    for pid in pids:
        os.kill(pid, sig)
    for pid in pids:
        wait_until(lambda pid=pid: not alive(pid), 10, f"pid {pid} to die")


def bundle(d: Containerd, m: Made):
    return d.paths.bundle(m.task.namespace, m.task.id)


def none(d: Containerd, m: Made) -> None:
    pass


def shim_killed(d: Containerd, m: Made) -> None:
    kill_and_wait([m.task.shim])


def shim_and_init_killed(d: Containerd, m: Made) -> None:
    kill_and_wait([m.task.shim, m.task.init])


def init_exited(d: Containerd, m: Made) -> None:
    """SIGTERM: the init exits 42 under its live shim, which reaps it; the execs die with it."""
    kill_and_wait([m.task.init], signal.SIGTERM)
    for pid, _ in m.processes.values():
        wait_until(lambda pid=pid: not alive(pid), 10, f"pid {pid} to die with its init")


def exec_exited(d: Containerd, m: Made) -> None:
    kill_and_wait(list(m.task.execs.values()), signal.SIGTERM)


def address_removed(d: Containerd, m: Made) -> None:
    """The file that names the shim's socket, as the version writes it: `address` (1.x) or
    bootstrap.json (2.x)."""
    name = "bootstrap.json" if d.version.writes_bootstrap_json else "address"
    (bundle(d, m) / name).unlink()


def address_with_newline(d: Containerd, m: Made) -> None:
    """As `echo ... > address` would write it (1.x), or `echo` into bootstrap.json's address (2.x)."""
    if d.version.writes_bootstrap_json:
        path = bundle(d, m) / "bootstrap.json"
        doc = json.loads(path.read_text())
        doc["address"] += "\n"
        path.write_text(json.dumps(doc))
    else:
        path = bundle(d, m) / "address"
        path.write_text(path.read_text() + "\n")


def address_as_json(version: int | None, protocol: str | None = "ttrpc", keys: str = "lower") -> Fault:
    """JSON in `address` (1.7 may read it: version 2 exactly) or in bootstrap.json (2.x), with or
    without a protocol, its keys as written (`title`: Version, Address, Protocol: Go's decoder
    takes them whatever their case)."""
    def fault(d: Containerd, m: Made) -> None:
        name = "bootstrap.json" if d.version.writes_bootstrap_json else "address"
        path = bundle(d, m) / name
        text = path.read_text()
        doc = {"address": json.loads(text)["address"] if text.startswith("{") else text}
        if protocol is not None:
            doc["protocol"] = protocol
        if version is not None:
            doc["version"] = version
        path.write_text(json.dumps({k.title() if keys == "title" else k: v for k, v in doc.items()}))
    fault.__name__ = f"address_as_json_v{version}_{protocol}_{keys}"
    return fault


def bootstrap_replaced_by_address(d: Containerd, m: Made) -> None:
    """2.x: bootstrap.json removed and its address written to `address`, as 1.6 wrote it."""
    path = bundle(d, m) / "bootstrap.json"
    (bundle(d, m) / "address").write_text(json.loads(path.read_text())["address"])
    path.unlink()


def socket_removed(d: Containerd, m: Made) -> None:
    d.paths.shim_socket(m.task.namespace, m.task.id).unlink()


def socket_replaced(d: Containerd, m: Made) -> None:
    """A socket file where the shim's was, but not the one it listens on: nobody answers there."""
    path = d.paths.shim_socket(m.task.namespace, m.task.id)
    path.unlink()
    os.mknod(path, 0o600 | stat.S_IFSOCK)


def bundle_emptied(d: Containerd, m: Made) -> None:
    for entry in bundle(d, m).iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def bundle_hidden(d: Containerd, m: Made) -> None:
    b = bundle(d, m)
    m.task_dir = "." + m.task.id
    b.rename(b.with_name(m.task_dir))


def hidden_and_made_again(d: Containerd, m: Made) -> Made:
    """Docker's failed re-creation of a container whose task dir containerd had hidden: a visible
    bundle of the same id again, naming the socket the hidden task's live shim listens on (its
    `address` or bootstrap.json, and config.json).  The visible twin is a task of its own."""
    visible = bundle(d, m)
    bundle_hidden(d, m)
    hidden = visible.with_name(m.task_dir)
    visible.mkdir()
    for name in ("address", "bootstrap.json", "config.json"):
        if (hidden / name).exists():
            shutil.copy2(hidden / name, visible / name)
    return replace(m, task_dir=m.task.id)


def hidden_twin_init_exited(d: Containerd, m: Made) -> Made:
    init_exited(d, m)
    return hidden_and_made_again(d, m)


def hidden_twin_shim_killed(d: Containerd, m: Made) -> Made:
    shim_killed(d, m)
    return hidden_and_made_again(d, m)


def namespace_hidden(d: Containerd, m: Made) -> None:
    """The whole namespace dir renamed `.<ns>` (its only task is this one)."""
    tasks = d.paths.state / RUNTIME_DIR
    m.ns_dir = "." + m.task.namespace
    (tasks / m.task.namespace).rename(tasks / m.ns_dir)


def shim_stopped(d: Containerd, m: Made) -> None:
    os.kill(m.task.shim, signal.SIGSTOP)
    wait_until(lambda: proc_stat(m.task.shim).state == "T", 10, "the shim to stop")


def shim_stopped_exec_zombie(d: Containerd, m: Made) -> None:
    """The shim stopped, then its exec killed: a zombie the stopped shim cannot reap."""
    shim_stopped(d, m)
    (exec_pid,) = m.task.execs.values()
    os.kill(exec_pid, signal.SIGKILL)
    wait_until(lambda: proc_stat(exec_pid).state == "Z", 10, "the exec to be a zombie")


def pid_reused(d: Containerd, m: Made) -> None:
    """Shim and init killed, then init.pid names an unrelated live process."""
    shim_and_init_killed(d, m)
    victim = d.spawn(["sleep", "1000000"])
    (bundle(d, m) / "init.pid").write_text(str(victim.pid))


def init_pid_garbage_shim_killed(d: Containerd, m: Made) -> None:
    shim_killed(d, m)
    (bundle(d, m) / "init.pid").write_text("abc")


def runc_state_removed(d: Containerd, m: Made) -> None:
    shutil.rmtree(d.paths.runc_state(m.task.namespace, m.task.id))


def runc_state_removed_shim_killed(d: Containerd, m: Made) -> None:
    shim_killed(d, m)
    runc_state_removed(d, m)


def runc_start_rewritten_shim_killed(d: Containerd, m: Made) -> None:
    """runc's init_process_start no longer matches its live init: runc takes the container for stopped."""
    shim_killed(d, m)
    state = d.paths.runc_state(m.task.namespace, m.task.id) / "state.json"
    doc = json.loads(state.read_text())
    doc["init_process_start"] += 1
    state.write_text(json.dumps(doc))


# a task: its namespace, its id, its fault, whether it runs an exec
Case = tuple[str, str, Fault, bool]


def make(d: Containerd, cases: list[Case]) -> dict[str, tuple[Made, Fault]]:
    """Run a task per case; faults are applied later, with the daemon down."""
    made = {}
    for ns, cid, fault, with_exec in cases:
        task = d.run(cid, namespace=ns, exec_id="e1" if with_exec else None)
        processes = {"init": (task.init, task.init_start)}
        processes.update({e: (pid, proc_stat(pid).start) for e, pid in task.execs.items()})
        made[cid] = (Made(task, processes, proc_stat(task.shim).start, ns, cid), fault)
    return made


def crash_and_break(d: Containerd, made: dict[str, tuple[Made, Fault]]) -> dict[str, Made]:
    d.crash()
    tasks = {}
    for m, fault in made.values():
        twin = fault(d, m)
        tasks.update({t.key: t for t in (m, twin) if t is not None})
    return tasks


# ---------------------------------------------------------------- recover, and what is seen

def recover_scan(d: Containerd, version: str, *root: str) -> dict[str, dict]:
    """`recover scan [ROOT] -f json --containerd-version V` inside the daemon's mount namespace:
    task key -> its JSON.  The state dir it read must be the daemon's, as containerd names it."""
    result = d.in_ns([sys.executable, "-m", "recover", "scan", *root, "-f", "json", "--containerd-version", version,
                      "--containerd-root", str(d.paths.root)])
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    record_emitted(doc)
    assert (doc["root"], doc["layout"], doc["daemon"]) == (d.paths.ns_state, "containerd-runtime-v2",
                                                           f"containerd {version}")
    return {f"{c['namespace']}/{c['id']}": c for c in doc["containers"]}


def captured_scan(d: Containerd, version: str) -> dict[str, dict]:
    """The daemon's dirs and processes captured as they stand (lab/capture.py), then `recover scan
    --containerd-version V` of the capture (`--image-root`, a captured proc), on the host: task key
    -> its JSON.  What it predicts must come true as the live scan's does."""
    dest = d.capture(d.paths.base / "capture")
    result = subprocess.run([sys.executable, "-m", "recover", "scan", *d.scan_capture_args(dest), "-f", "json",
                             "--containerd-version", version], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert (doc["layout"], doc["daemon"], doc["host"]["live"]) == ("containerd-runtime-v2", f"containerd {version}",
                                                                   False)
    return {f"{c['namespace']}/{c['id']}": c for c in doc["containers"]}


def capture_disagrees(live: dict[str, dict], captured: dict[str, dict]) -> list[str]:
    """Where the capture's judgement says otherwise than the live scan's of the same moment: what
    the daemon would do, and each process's verdict and exit status where the capture knows one
    (an exit status only a live shim holds is unknown there, never another)."""
    wrong = []
    for key in sorted(set(live) | set(captured)):
        a, b = live.get(key), captured.get(key)
        if a is None or b is None:
            wrong.append(f"capture: {key} {'only in the capture' if a is None else 'missing from the capture'}")
            continue
        if a["containerd_would"] != b["containerd_would"]:
            wrong.append(f"capture: {key} would {b['containerd_would']}, live scan: {a['containerd_would']}")
        live_processes = {p["id"]: p for p in a["processes"]}
        for p in b["processes"]:
            q = live_processes.get(p["id"])
            if q is not None and (q["verdict"], p["verdict"]) == ("zombie", "vanished"):
                continue  # an orphan's zombie the host's init reaped between the scan and the capture
            if q is None or q["verdict"] != p["verdict"]:
                wrong.append(f"capture: {key} {p['id']} {p['verdict']}, live scan: {q and q['verdict']}")
            elif p["exit_status"] is not None and p["exit_status"] != q["exit_status"]:
                wrong.append(f"capture: {key} {p['id']} exit {p['exit_status']}, live scan: {q['exit_status']}")
    return wrong


def shim_state(m: Made) -> str:
    st = proc_stat(m.task.shim)
    if st is None or st.state in ("Z", "X") or st.start != m.shim_start:
        return "gone"
    return "stopped" if st.state in ("T", "t") else "alive"


@dataclass(frozen=True)
class Seen:
    """One task's observable state at one moment."""

    running: frozenset[str]  # which of init and the execs run (same pid, same start ticks)
    foreign: frozenset[tuple[int, int]]  # processes recover judged pid-reused, that run: (pid, start)
    shim: str
    bundle: bool
    work: bool
    runc: bool


def see(d: Containerd, m: Made, judged: dict) -> Seen:
    ns, cid = m.task.namespace, m.task.id
    foreign = set()
    for p in judged["processes"]:
        if p["verdict"] == "pid-reused" and p["pid"] and (st := proc_stat(p["pid"])) and alive(p["pid"], st.start):
            foreign.add((p["pid"], st.start))
    return Seen(
        running=frozenset(name for name, (pid, start) in m.processes.items() if alive(pid, start)),
        foreign=frozenset(foreign), shim=shim_state(m),
        bundle=(d.paths.state / RUNTIME_DIR / m.ns_dir / m.task_dir).is_dir(),
        work=d.paths.work(ns, cid).is_dir(), runc=d.paths.runc_state(ns, cid).is_dir())


def logged(log: str, message: str, task_dir: str) -> list[str]:
    """The daemon's log lines with this message about this task dir (logrus: `id=<id>` field)."""
    field = re.compile(rf"\bid={re.escape(task_dir)}(\s|$)")
    return [line for line in log.splitlines() if f'msg="{message}"' in line and field.search(line)]


def mismatches(d: Containerd, version: str, tasks: dict[str, Made], judged: dict[str, dict],
               before: dict[str, Seen], restart_took: float) -> list[str]:
    """Every consequence of every prediction that the restarted daemon did not bear out."""
    log = d.log()
    if not version.startswith("1.6"):  # 1.7 and 2.x shut a leaked shim down during the restore
        for key, m in tasks.items():
            if expected(judged[key], version).shim_shut_down:
                try:
                    wait_until(lambda m=m: shim_state(m) == "gone", 10, f"the shim of {key} to be shut down")
                except Exception:  # noqa: BLE001 - said below, with the rest
                    pass
    listed = {ns: d.task_list(ns) for ns in {m.task.namespace for m in tasks.values()}}
    wrong = []
    for key, m in sorted(tasks.items()):
        c = judged[key]
        would = c["containerd_would"]
        if would == "skip":  # skipped, and its shim reached through its twin, judged as a task of its own
            if not (d.paths.state / RUNTIME_DIR / m.ns_dir / m.task_dir).is_dir():
                wrong.append(f"{key} (predicted skip): its bundle was removed")
            if logged(log, "cleaning up after shim disconnected", m.task_dir):
                wrong.append(f"{key} (predicted skip): cleaned up")
            continue
        if would not in CONSEQUENCES:
            wrong.append(f"{key}: recover predicted {would!r}")
            continue
        expect = expected(c, version)
        was, now = before[key], see(d, m, c)
        prefix = f"{key} (predicted {would})"
        # recover's verdicts name the same running processes the test knows (or the prediction is moot)
        verdicts = {p["id"]: p["verdict"] for p in c["processes"] if p["pid"] == m.processes.get(p["id"], (None,))[0]}
        judged_running = {p for p, v in verdicts.items() if v in LIVE}
        if judged_running != {p for p in was.running if p in verdicts and verdicts[p] != "pid-reused"}:
            wrong.append(f"{prefix}: recover judged {verdicts}, running were {sorted(was.running)}")
        if expect.kills and now.running:
            wrong.append(f"{prefix}: still running after the restart: {sorted(now.running)}")
        if not expect.kills and now.running != was.running:
            wrong.append(f"{prefix}: killed by the restart: {sorted(was.running - now.running)}")
        if now.foreign != was.foreign:  # rule 5: runc never signals a process that is not the init
            wrong.append(f"{prefix}: a process judged pid-reused was killed: {sorted(was.foreign - now.foreign)}")
        shim_after = "gone" if expect.shim_shut_down else was.shim
        if now.shim != shim_after:  # containerd never kills nor resumes a shim, but a leaked one it shuts down
            wrong.append(f"{prefix}: shim {was.shim} before, {now.shim} after, expected {shim_after}")
        if now.bundle != (was.bundle and expect.bundle_kept):
            wrong.append(f"{prefix}: bundle {'kept' if now.bundle else 'removed'}")
        # a hidden namespace is never loaded, so its work dirs are never cleaned up (§2.7)
        work_kept = expect.work_kept or m.ns_dir.startswith(".")
        if now.work != (was.work and work_kept):
            wrong.append(f"{prefix}: work dir {'kept' if now.work else 'removed'}")
        if now.runc != (was.runc and expect.runc_kept):
            wrong.append(f"{prefix}: runc state {'kept' if now.runc else 'removed'}")
        task = listed[m.task.namespace].get(m.task.id) if not m.ns_dir.startswith(".") else None
        want = (m.task.init, "RUNNING" if "init" in was.running else "STOPPED") if expect.listed else None
        if task != want:
            wrong.append(f"{prefix}: `ctr task ls` says {task}, expected {want}")
        for message, wanted in (("cleaning up after shim disconnected", expect.cleanup),
                                ("failed to clean up after shim disconnected", expect.cleanup_fails)):
            if bool(logged(log, message, m.task_dir)) != wanted:
                wrong.append(f"{prefix}: {'no' if wanted else 'a'} log line {message!r}")
    blocks = max((expected(c, version).blocks for c in judged.values()), default=0)
    if restart_took < blocks:
        wrong.append(f"a stopped shim blocks the restart {blocks} s: it took {restart_took:.1f} s")
    for ns in listed:  # whatever happened to a task, its container stays in the metadata store
        if sorted(d.containers(ns)) != sorted({m.task.id for m in tasks.values() if m.task.namespace == ns}):
            wrong.append(f"namespace {ns}: `ctr containers ls` lost containers: {d.containers(ns)}")
    return wrong


@dataclass
class Outcome:
    """What a cycle saw: recover's judgement before the restart, and what the daemon bore out."""

    judged: dict[str, dict]
    tasks: dict[str, Made]
    wrong: list[str]
    log: str
    extra: dict


def restart_and_compare(d: Containerd, version: str, tasks: dict[str, Made], judged: dict[str, dict],
                        captured: dict[str, dict] | None = None, **extra) -> Outcome:
    """Restart the daemon and say every prediction it did not bear out: the live scan's, and those
    of the scan of a capture made at the same moment, if any."""
    assert set(judged) == set(tasks), f"recover reports exactly the tasks made: {sorted(judged)} {sorted(tasks)}"
    before = {key: see(d, m, judged[key]) for key, m in tasks.items()}
    took = d.start()
    wrong = mismatches(d, version, tasks, judged, before, took)
    if captured is not None:
        wrong += capture_disagrees(judged, captured)
        wrong += [f"capture: {line}" for line in mismatches(d, version, tasks, captured, before, took)]
    log = "\n".join(line for line in d.log().splitlines() if "level=debug" not in line and "loading plugin" not in line)
    return Outcome(judged, tasks, wrong, log, extra)


# ---------------------------------------------------------------- the cycles

def fault_cases(version: str, ns: str, hidden: str) -> list[Case]:
    cases: list[Case] = [
        (ns, "a-none", none, True),
        (ns, "b-shim-killed", shim_killed, True),
        (ns, "d-init-exited", init_exited, True),  # 1.6 keeps the exit; 1.7 and 2.x lose it
        (ns, "f-address-removed", address_removed, True),
        (ns, "g-socket-removed", socket_removed, True),
        (ns, "h-bundle-emptied", bundle_emptied, True),
        (ns, "i-bundle-hidden", bundle_hidden, True),
        (ns, "i2-hidden-twin", hidden_and_made_again, True),
        (ns, "i3-hidden-twin-init-exited", hidden_twin_init_exited, True),
        (ns, "i4-hidden-twin-shim-killed", hidden_twin_shim_killed, True),
        (ns, "j-shim-stopped", shim_stopped, True),  # a live exec: the delete times out too
        (ns, "j2-shim-stopped-no-exec", shim_stopped, False),
        (ns, "j3-shim-stopped-exec-zombie", shim_stopped_exec_zombie, True),
        (ns, "k-pid-reused", pid_reused, True),
        (ns, "p-runc-state-removed", runc_state_removed, True),
        (ns, "q-runc-state-removed-shim-killed", runc_state_removed_shim_killed, True),
        (hidden, "r-namespace-hidden", namespace_hidden, True),
    ]
    if version.startswith("1."):
        cases += [(ns, "m-address-json-v2", address_as_json(2), True),
                  (ns, "n-address-json-v3", address_as_json(3), True),
                  (ns, "o-address-json-no-version", address_as_json(None), True),
                  (ns, "o1-address-json-v1", address_as_json(1), True)]
    else:
        cases += [(ns, "m-bootstrap-replaced-by-address", bootstrap_replaced_by_address, True)]
    # JSON with no protocol; JSON whose keys are capitalized (1.7: in `address`; 2.x: bootstrap.json)
    if not version.startswith("1.6"):
        api = 3 if version.startswith("2.") else 2
        cases += [(ns, "y-json-no-protocol", address_as_json(api, protocol=None), True),
                  (ns, "z-json-keys-capitalized", address_as_json(api, keys="title"), True)]
    return cases


def faults_cycle(version: str) -> Outcome:
    """One fault per task, in a state dir of the daemon's own."""
    ns, hidden = unique("restart"), unique("hidden")
    with Containerd.create(version=version, namespace=ns) as d:
        d.start()
        made = make(d, fault_cases(version, ns, hidden))
        tasks = crash_and_break(d, made)
        judged = recover_scan(d, version, d.paths.ns_state)
        outcome = restart_and_compare(d, version, tasks, judged, captured_scan(d, version))
        # H014: re-adopted without runc's state, the task can no longer be killed through containerd
        key = f"{ns}/p-runc-state-removed"
        kill = d.ctr("task", "kill", "-s", "KILL", "p-runc-state-removed", namespace=ns, check=False)
        outcome.extra.update(h014=judged[key], kill_refused=kill.returncode != 0 and "not found" in kill.stderr,
                             runs_on=alive(*tasks[key].processes["init"]))
        return outcome


def advice_cycle(version: str) -> Outcome:
    """The daemon's state dir is /run/containerd, as with the default config; `recover scan` with
    no argument reads it.  Before the restart, the advice of R101 (restore the file that names the
    shim's socket, as this version reads it) and R105 (resume the stopped shim) is followed: the
    daemon then re-adopts both tasks."""
    ns = unique("default-state")
    with Containerd.create(version=version, default_state=True) as d:
        d.start()
        made = make(d, [
            (ns, "a-none", none, True),
            (ns, "c-shim-init-killed", shim_and_init_killed, True),
            (ns, "e-exec-exited", exec_exited, True),
            (ns, "s-address-newline", address_with_newline, True),
            (ns, "t-runc-start-rewritten-shim-killed", runc_start_rewritten_shim_killed, True),
            (ns, "u-init-pid-garbage-shim-killed", init_pid_garbage_shim_killed, True),
            (ns, "v-address-restored", address_removed, True),
            (ns, "w-shim-resumed", shim_stopped, True),
            (ns, "x-socket-replaced", socket_replaced, True),
        ])
        tasks = crash_and_break(d, made)
        first = recover_scan(d, version)  # no argument: /run/containerd, the daemon's state dir
        restored, resumed = f"{ns}/v-address-restored", f"{ns}/w-shim-resumed"

        def advice(key: str, code: str) -> str:
            (found,) = [f["message"] for f in first[key]["findings"] if f["code"] == code]
            return found

        write = re.search(r"write '([^']+)' \(no newline\) to (\S+);", advice(restored, "R101"))
        assert write, advice(restored, "R101")
        d.in_ns(["sh", "-c", 'printf %s "$1" > "$2"', "-", *write.groups()], check=True)
        resume = re.search(r"kill -CONT (\d+)", advice(resumed, "R105"))
        assert resume and int(resume.group(1)) == tasks[resumed].task.shim
        os.kill(int(resume.group(1)), signal.SIGCONT)
        wait_until(lambda: shim_state(tasks[resumed]) == "alive", 10, "the shim to resume")
        judged = recover_scan(d, version)
        return restart_and_compare(d, version, tasks, judged, written=write.groups())


def cri_cycle(version: str) -> dict:
    """A pod whose container's init exits 42 while containerd is down and the pod's shim lives:
    what recover says CRI will record, and what CRI's checkpoint says after the restart."""
    from cri import Cri  # grpcio: the test extra

    with Containerd.create(version=version, cri=True) as d:
        d.start()
        with Cri(d) as cri:
            pod = cri.run_pod("exits")
        d.crash()
        kill_and_wait([pod.init], signal.SIGTERM)
        judged = recover_scan(d, version, d.paths.ns_state)
        captured = captured_scan(d, version)
        took = d.start()
        with Cri(d) as cri:  # waits for CRI's recovery
            status = cri.status(pod.container)
        return {"judged": judged, "captured": captured, "pod": pod, "checkpoint": d.cri_checkpoint(pod.container), "status": status,
                "took": took, "shim_alive": alive(pod.shim), "container_bundle": d.paths.bundle(
                    "k8s.io", pod.container).exists()}


def upgrade_cycle() -> Outcome:
    """Tasks started by 1.6.20; the daemon SIGKILLed, faults made; 2.3.4 started over the same dirs,
    judged beforehand with --containerd-version 2.3.4 (an upgrade check)."""
    ns = unique("upgrade")
    with Containerd.create(version="1.6.20", namespace=ns) as d:
        d.start()
        made = make(d, [(ns, "up1-healthy", none, True), (ns, "up2-init-exited", init_exited, True),
                        (ns, "up3-shim-killed", shim_killed, True)])
        tasks = crash_and_break(d, made)
        as_16 = recover_scan(d, "1.6.20", d.paths.ns_state)
        d.upgrade("2.3.4")
        judged = recover_scan(d, "2.3.4", d.paths.ns_state)
        outcome = restart_and_compare(d, "2.3.4", tasks, judged, captured_scan(d, "2.3.4"), as_16=as_16)
        b = d.paths.bundle(ns, "up1-healthy")
        outcome.extra["bootstrap"] = json.loads((b / "bootstrap.json").read_text()) if (b / "bootstrap.json").exists() \
            else None
        return outcome


@pytest.fixture(scope="module")
def cycles():
    work: dict = {}
    for v in VERSION_NAMES:
        work[(v, "faults")] = functools.partial(faults_cycle, v)
        work[(v, "advice")] = functools.partial(advice_cycle, v)
        work[(v, "cri")] = functools.partial(cri_cycle, v)
    work[("2.3.4", "upgrade")] = upgrade_cycle
    return run_concurrently(work)


def said(c: dict) -> set[str]:
    return {f["code"] for f in c["findings"]} | {f["code"] for p in c["processes"] for f in p["findings"]}


def assert_borne_out(outcome: Outcome) -> None:
    assert not outcome.wrong, "\n".join(outcome.wrong) + "\n\ndaemon log:\n" + outcome.log


@pytest.mark.emits("R101", "R102", "R103", "R104", "R105", "R107", "H014")
@pytest.mark.parametrize("version", VERSION_NAMES)
def test_each_prediction_is_what_the_restarted_daemon_does(cycles, version):
    outcome = cycles[(version, "faults")]
    assert_borne_out(outcome)
    would = {key.rsplit("/", 1)[1]: c["containerd_would"] for key, c in outcome.judged.items()}
    assert set(would.values()) == set(CONSEQUENCES)  # every prediction at least once
    # where the versions part (SPEC-v2 §2a), each was predicted as the version does
    assert would["d-init-exited"] == ("reconnect" if version.startswith("1.6") else "clean-up")
    exited = outcome.judged[next(k for k in outcome.judged if k.endswith("/d-init-exited"))]
    # the live shim, asked (State), says the status only its memory holds: SIGTERM made the init exit 42
    init = next(p for p in exited["processes"] if p["id"] == "init")
    assert (init["verdict"], init["exit_status"], init["exit_status_source"]) == ("exited", 42, "shim")
    assert exited["shim"]["asked"] == f"asked over task API v{3 if version.startswith('2.') else 2}"
    if not version.startswith("1.6"):
        (r107,) = [f["message"] for f in exited["findings"] if f["code"] == "R107"]
        assert "the exit of init (42)" in r107
    if not version.startswith("1.6"):  # JSON as Go decodes it: keys in any case, a protocol required
        assert (would["y-json-no-protocol"], would["z-json-keys-capitalized"]) == ("kill-live-processes", "reconnect")
    if version.startswith("1.7"):
        assert (would["m-address-json-v2"], would["n-address-json-v3"], would["o-address-json-no-version"],
                would["o1-address-json-v1"]) == ("reconnect", "kill-live-processes", "kill-live-processes",
                                                 "kill-live-processes")
    elif version.startswith("1.6"):
        assert would["m-address-json-v2"] == "kill-live-processes"  # 1.6 reads no JSON
    else:
        assert would["m-bootstrap-replaced-by-address"] == "kill-live-processes"  # a 2.x shim serves v3 only
    # H014: re-adopted without runc's state, the task can no longer be killed through containerd
    assert "H014" in said(outcome.extra["h014"])
    assert outcome.extra["kill_refused"] and outcome.extra["runs_on"]


@pytest.mark.parametrize("version", VERSION_NAMES)
def test_a_default_state_dir_is_scanned_without_argument_and_the_advice_works(cycles, version):
    outcome = cycles[(version, "advice")]
    assert_borne_out(outcome)
    name = "bootstrap.json" if VERSIONS[version].writes_bootstrap_json else "address"
    content, path = outcome.extra["written"]
    assert path.endswith(f"/v-address-restored/{name}")
    if name == "bootstrap.json":  # a 2.x shim: task API v3
        assert json.loads(content)["version"] == 3
    judged = {key.rsplit("/", 1)[1]: c["containerd_would"] for key, c in outcome.judged.items()}
    assert judged["v-address-restored"] == judged["w-shim-resumed"] == "reconnect"


@pytest.mark.emits("R106", "R107")
@pytest.mark.parametrize("version", VERSION_NAMES)
def test_cri_records_what_recover_predicts_for_an_exit_under_the_pods_live_shim(cycles, version):
    seen = cycles[(version, "cri")]
    pod = seen["pod"]
    checkpoint = seen["checkpoint"]
    # the live scan, and the scan of a capture made at the same moment (--image-root, a captured proc)
    for judged in (seen["judged"], seen["captured"]):
        c = judged[f"k8s.io/{pod.container}"]
        if version.startswith("1.6"):
            assert (c["containerd_would"], c["cri"]["cri_would"]) == ("reconnect", "record-exit")
        else:
            assert (c["containerd_would"], c["cri"]["cri_would"]) == ("clean-up", "record-255-unknown")
            assert {"R106", "R107"} <= said(c)
        assert judged[f"k8s.io/{pod.sandbox}"]["containerd_would"] == "reconnect"
    if version.startswith("1.6"):
        assert (checkpoint["ExitCode"], checkpoint["Reason"]) == (42, "")
        assert seen["status"]["exit_code"] == 42
    else:
        assert (checkpoint["ExitCode"], checkpoint["Reason"]) == (255, "Unknown")
        assert (seen["status"]["exit_code"], seen["status"]["reason"]) == (255, "Unknown")
        assert not seen["container_bundle"]
    assert seen["shim_alive"], "the pod's shim serves the sandbox: it stays"
    assert not capture_disagrees(seen["judged"], seen["captured"])


def test_an_upgrade_check_says_what_23_would_do_to_16s_tasks(cycles):
    outcome = cycles[("2.3.4", "upgrade")]
    assert_borne_out(outcome)
    judged = {key.rsplit("/", 1)[1]: c for key, c in outcome.judged.items()}
    as_16 = {key.rsplit("/", 1)[1]: c["containerd_would"] for key, c in outcome.extra["as_16"].items()}
    assert as_16 == {"up1-healthy": "reconnect", "up2-init-exited": "reconnect",
                     "up3-shim-killed": "kill-live-processes"}
    assert {k: c["containerd_would"] for k, c in judged.items()} == {
        "up1-healthy": "reconnect", "up2-init-exited": "clean-up", "up3-shim-killed": "kill-live-processes"}
    assert "R107" in said(judged["up2-init-exited"])  # the exit 1.6 would have kept, 2.3.4 loses
    assert judged["up1-healthy"]["shim"]["api"] == 2  # a 1.6 shim: 2.x migrates its address as version 2
    assert outcome.extra["bootstrap"]["version"] == 2
