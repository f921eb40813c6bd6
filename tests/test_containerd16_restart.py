"""A real containerd 1.6 restarted over the faults of SPEC-v2 §2: what `recover scan` predicted for
each task just before the restart (`containerd_would`) against what the daemon then did.

Each prediction names consequences anyone can observe after the restart (CONSEQUENCES below); the
test checks them against what it sees: the task's processes alive or not (pid and start ticks taken
when they ran), its shim as it was, its bundle, work dir and runc state present or not, `ctr task
ls`, and the daemon's log.  Two cycles, few and broad (each costs a daemon start and restore; a
stopped shim costs 10 s of restore, once):
  1. a state dir of its own (/run/<name>): one fault per task, every prediction at least once;
  2. the default state dir /run/containerd, read by `recover scan` with no argument, with the
     findings' advice followed before the restart (the address restored, the stopped shim resumed).
recover runs inside the daemon's mount namespace, where it sees the paths as containerd does.
Each cycle puts its tasks in namespaces of its own: recover takes a live shim with the task's
namespace and id for the task's, and another run of these tests on the host (in another mount
namespace, where /run/containerd looks the same) would otherwise lend it one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from conftest import record_emitted
from lab_fixtures import skip_unless_usable
from recover.lab import RUNTIME_DIR, Containerd, Task, alive, proc_stat, wait_until

LIVE = ("running", "orphaned")


@dataclass(frozen=True)
class Consequences:
    """What a prediction means, in what can be seen after the restart."""

    listed: bool  # `ctr task ls` lists it: RUNNING, or STOPPED once its init has exited
    kills: bool  # every process of the task that ran before the restart is dead after (else: all still run)
    bundle_kept: bool  # its bundle dir (under the name it had) is still there
    work_kept: bool  # its work dir is still there (a loaded namespace's unloaded tasks lose theirs)
    runc_kept: bool  # runc's state dir is as it was (else: gone)
    cleanup: bool  # the log says "cleaning up after shim disconnected" for it
    cleanup_fails: bool  # ... and "failed to clean up after shim disconnected" (the deletes timed out)


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
    "block-then-kill": Consequences(listed=False, kills=True, bundle_kept=True, work_kept=False, runc_kept=True,
                                    cleanup=True, cleanup_fails=True),
}
STOPPED_SHIM_DELAY = 10  # s: the shim load and the shim delete time out, 5 s each (the harness's config)


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


Fault = Callable[[Containerd, Made], None]


def kill_and_wait(pids: list[int], sig: int = signal.SIGKILL) -> None:
    for pid in pids:
        os.kill(pid, sig)
    for pid in pids:
        wait_until(lambda pid=pid: not alive(pid), 10, f"pid {pid} to die")


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
    (d.paths.bundle(m.task.namespace, m.task.id) / "address").unlink()


def address_with_newline(d: Containerd, m: Made) -> None:
    """As `echo ... > address` would write it."""
    address = d.paths.bundle(m.task.namespace, m.task.id) / "address"
    address.write_text(address.read_text() + "\n")


def socket_removed(d: Containerd, m: Made) -> None:
    d.paths.socket(m.task.namespace, m.task.id).unlink()


def socket_replaced(d: Containerd, m: Made) -> None:
    """A socket file where the shim's was, but not the one it listens on: nobody answers there."""
    path = d.paths.socket(m.task.namespace, m.task.id)
    path.unlink()
    os.mknod(path, 0o600 | stat.S_IFSOCK)


def bundle_emptied(d: Containerd, m: Made) -> None:
    for entry in d.paths.bundle(m.task.namespace, m.task.id).iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def bundle_hidden(d: Containerd, m: Made) -> None:
    bundle = d.paths.bundle(m.task.namespace, m.task.id)
    m.task_dir = "." + m.task.id
    bundle.rename(bundle.with_name(m.task_dir))


def namespace_hidden(d: Containerd, m: Made) -> None:
    """The whole namespace dir renamed `.<ns>` (its only task is this one)."""
    tasks = d.paths.state / RUNTIME_DIR
    m.ns_dir = "." + m.task.namespace
    (tasks / m.task.namespace).rename(tasks / m.ns_dir)


def shim_stopped(d: Containerd, m: Made) -> None:
    os.kill(m.task.shim, signal.SIGSTOP)
    wait_until(lambda: proc_stat(m.task.shim).state == "T", 10, "the shim to stop")


def pid_reused(d: Containerd, m: Made) -> None:
    """Shim and init killed, then init.pid names an unrelated live process."""
    shim_and_init_killed(d, m)
    victim = d.spawn(["sleep", "1000000"])
    (d.paths.bundle(m.task.namespace, m.task.id) / "init.pid").write_text(str(victim.pid))


def init_pid_garbage_shim_killed(d: Containerd, m: Made) -> None:
    shim_killed(d, m)
    (d.paths.bundle(m.task.namespace, m.task.id) / "init.pid").write_text("abc")


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


def unique(what: str) -> str:
    """A containerd namespace name no other run uses."""
    return f"{what}-{uuid.uuid4().hex[:12]}"


def make(d: Containerd, cases: list[tuple[str, str, Fault]]) -> dict[str, tuple[Made, Fault]]:
    """Run a task per case (namespace, id, fault); faults are applied later, with the daemon down."""
    made = {}
    for ns, cid, fault in cases:
        task = d.run(cid, namespace=ns)
        processes = {"init": (task.init, task.init_start)}
        processes.update({e: (pid, proc_stat(pid).start) for e, pid in task.execs.items()})
        made[cid] = (Made(task, processes, proc_stat(task.shim).start, ns, cid), fault)
    return made


def crash_and_break(d: Containerd, made: dict[str, tuple[Made, Fault]]) -> dict[str, Made]:
    d.crash()
    for m, fault in made.values():
        fault(d, m)
    return {m.key: m for m, _ in made.values()}


# ---------------------------------------------------------------- recover, and what is seen

def recover_scan(d: Containerd, *root: str) -> dict[str, dict]:
    """`recover scan [ROOT] -f json` inside the daemon's mount namespace: task key -> its JSON.
    The state dir it read must be the daemon's, as containerd names it."""
    result = d.in_ns([sys.executable, "-m", "recover", "scan", *root, "-f", "json"])
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    record_emitted(doc)
    assert (doc["root"], doc["layout"]) == (d.paths.ns_state, "containerd-runtime-v2")
    return {f"{c['namespace']}/{c['id']}": c for c in doc["containers"]}


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


def mismatches(d: Containerd, tasks: dict[str, Made], judged: dict[str, dict], before: dict[str, Seen],
               restart_took: float) -> list[str]:
    """Every consequence of every prediction that the restarted daemon did not bear out."""
    log = d.log()
    listed = {ns: d.task_list(ns) for ns in {m.task.namespace for m in tasks.values()}}
    wrong = []
    for key, m in sorted(tasks.items()):
        c = judged[key]
        would = c["containerd_would"]
        if would not in CONSEQUENCES:
            wrong.append(f"{key}: recover predicted {would!r}")
            continue
        expect = CONSEQUENCES[would]
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
        if now.shim != was.shim:  # containerd never kills nor resumes a shim: a live one it drops is leaked
            wrong.append(f"{prefix}: shim {was.shim} before, {now.shim} after")
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
    if any(c["containerd_would"] == "block-then-kill" for c in judged.values()) and restart_took < STOPPED_SHIM_DELAY:
        wrong.append(f"a stopped shim blocks the restart {STOPPED_SHIM_DELAY} s: it took {restart_took:.1f} s")
    for ns in listed:  # whatever happened to a task, its container stays in the metadata store
        if sorted(d.containers(ns)) != sorted(m.task.id for m in tasks.values() if m.task.namespace == ns):
            wrong.append(f"namespace {ns}: `ctr containers ls` lost containers: {d.containers(ns)}")
    return wrong


def restart_and_compare(d: Containerd, tasks: dict[str, Made], judged: dict[str, dict]) -> None:
    assert set(judged) == set(tasks), "recover reports exactly the tasks made"
    before = {key: see(d, m, judged[key]) for key, m in tasks.items()}
    took = d.start()
    wrong = mismatches(d, tasks, judged, before, took)
    assert not wrong, "\n".join(wrong) + "\n\ndaemon log:\n" + "\n".join(
        line for line in d.log().splitlines() if "level=debug" not in line and "loading plugin" not in line)


# ---------------------------------------------------------------- the cycles

def test_each_prediction_is_what_the_restarted_daemon_does():
    """Cycle 1: one fault per task, in a state dir of the daemon's own; every prediction at least once."""
    skip_unless_usable()
    ns, hidden = unique("restart"), unique("hidden")
    with Containerd.create() as d:
        d.start()
        made = make(d, [
            (ns, "a-none", none),
            (ns, "b-shim-killed", shim_killed),
            (ns, "d-init-exited", init_exited),
            (ns, "f-address-removed", address_removed),
            (ns, "g-socket-removed", socket_removed),
            (ns, "h-bundle-emptied", bundle_emptied),
            (ns, "i-bundle-hidden", bundle_hidden),
            (ns, "j-shim-stopped", shim_stopped),
            (ns, "k-pid-reused", pid_reused),
            (ns, "p-runc-state-removed", runc_state_removed),
            (ns, "q-runc-state-removed-shim-killed", runc_state_removed_shim_killed),
            (hidden, "r-namespace-hidden", namespace_hidden),
        ])
        tasks = crash_and_break(d, made)
        judged = recover_scan(d, d.paths.ns_state)
        assert {c["containerd_would"] for c in judged.values()} == set(CONSEQUENCES)
        restart_and_compare(d, tasks, judged)

        # H014: re-adopted without runc's state, the task can no longer be killed through containerd
        key = f"{ns}/p-runc-state-removed"
        assert "H014" in {f["code"] for f in judged[key]["findings"]}
        kill = d.ctr("task", "kill", "-s", "KILL", "p-runc-state-removed", namespace=ns, check=False)
        assert kill.returncode != 0 and "not found" in kill.stderr
        assert alive(*tasks[key].processes["init"])


def test_a_default_state_dir_is_scanned_without_argument_and_the_advice_works():
    """Cycle 2: the daemon's state dir is /run/containerd, as with the default config; `recover scan`
    with no argument reads it.  Before the restart, the advice of R101 (restore the address) and
    R105 (resume the stopped shim) is followed: the daemon then re-adopts both tasks."""
    skip_unless_usable()
    ns = unique("default-state")
    with Containerd.create(default_state=True) as d:
        d.start()
        made = make(d, [
            (ns, "a-none", none),
            (ns, "c-shim-init-killed", shim_and_init_killed),
            (ns, "e-exec-exited", exec_exited),
            (ns, "s-address-newline", address_with_newline),
            (ns, "t-runc-start-rewritten-shim-killed", runc_start_rewritten_shim_killed),
            (ns, "u-init-pid-garbage-shim-killed", init_pid_garbage_shim_killed),
            (ns, "v-address-restored", address_removed),
            (ns, "w-shim-resumed", shim_stopped),
            (ns, "x-socket-replaced", socket_replaced),
        ])
        tasks = crash_and_break(d, made)
        first = recover_scan(d)  # no argument: /run/containerd, the daemon's state dir
        restored, resumed = f"{ns}/v-address-restored", f"{ns}/w-shim-resumed"

        def advice(key: str, code: str) -> str:
            (found,) = [f["message"] for f in first[key]["findings"] if f["code"] == code]
            return found

        write = re.search(r"write '(unix://[^']+)' \(no newline\) to (\S+);", advice(restored, "R101"))
        assert write, advice(restored, "R101")
        d.in_ns(["sh", "-c", 'printf %s "$1" > "$2"', "-", *write.groups()], check=True)
        resume = re.search(r"kill -CONT (\d+)", advice(resumed, "R105"))
        assert resume and int(resume.group(1)) == tasks[resumed].task.shim
        os.kill(int(resume.group(1)), signal.SIGCONT)
        wait_until(lambda: shim_state(tasks[resumed]) == "alive", 10, "the shim to resume")

        judged = recover_scan(d)
        assert judged[restored]["containerd_would"] == judged[resumed]["containerd_would"] == "reconnect"
        restart_and_compare(d, tasks, judged)
