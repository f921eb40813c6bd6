"""`recover demo --layout containerd-runtime-v2`: today's containerd, for real.

It starts a private containerd, the newest the lab can run here (recover/generations/runtime_v2/lab: 2.3.4 or 1.7.34
from the archives .ci/run extracts, else Debian's 1.6.20; runc and busybox-static, in a mount
namespace of its own; the host's /run/containerd is never touched),
runs a few containers, SIGKILLs the daemon, breaks each task the way a crash does, scans the
state dir as an operator would before restarting the daemon, then restarts it and shows, task by
task, what containerd did against what recover predicted.  Everything it started is removed on
the way out, also when it is stopped by a signal or its output is closed.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

import orjson

from ...render import PLAIN, Display, prose
from ...stop import run_whole
from .. import CannotRun
from .lab import VERSIONS, Containerd, Task, alive, missing, wait_until

NAMESPACE = "demo"


@dataclass(frozen=True)
class Scene:
    name: str
    fault: str  # what was done while containerd was down
    break_it: Callable[[Containerd, Task], None]


def _nothing(lab: Containerd, t: Task) -> None:
    pass


def _init_exits(lab: Containerd, t: Task) -> None:
    os.kill(t.init, signal.SIGTERM)  # its shell traps it: exit 42; the exec dies with the namespace
    wait_until(lambda: not alive(t.init, t.init_start), 10, f"pid {t.init} to exit")


def _kill_shim(lab: Containerd, t: Task) -> None:
    os.kill(t.shim, signal.SIGKILL)


def _remove_address(lab: Containerd, t: Task) -> None:
    """The file that names the shim's socket: `address` (1.x) or bootstrap.json (2.x)."""
    name = "bootstrap.json" if lab.version.writes_bootstrap_json else "address"
    os.unlink(lab.paths.bundle(t.namespace, t.id) / name)


def _empty_bundle(lab: Containerd, t: Task) -> None:
    bundle = lab.paths.bundle(t.namespace, t.id)
    for entry in bundle.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            entry.rmdir()  # rootfs: nothing is mounted on it with --rootfs
        else:
            entry.unlink()


def _hide_bundle(lab: Containerd, t: Task) -> None:
    bundle = lab.paths.bundle(t.namespace, t.id)
    bundle.rename(bundle.with_name("." + t.id))


SCENES = (
    Scene("web", "nothing: a healthy task", _nothing),
    Scene("batch", "its init exited (42) while containerd was down; its shim lives", _init_exits),
    Scene("cron", "its shim was SIGKILLed: init and exec live on, orphaned", _kill_shim),
    Scene("cache", "the file naming its shim's socket (`address`, 2.x: bootstrap.json) was removed: the task is "
          "healthy otherwise", _remove_address),
    Scene("queue", "its bundle dir was emptied (the dir is left)", _empty_bundle),
    Scene("old", "its bundle dir was renamed hidden (.old)", _hide_bundle),
)


def running(t: Task) -> list[int]:
    """The task's processes that still run (the init checked by its start ticks)."""
    return [pid for name, pid in (("init", t.init), *t.execs.items())
            if alive(pid, t.init_start if name == "init" else None)]


def observed(lab: Containerd, t: Task, ran: list[int], listed: dict[str, tuple[int, str]]) -> str:
    """What containerd did to a task, in recover's words, from what can be seen after its restart
    (`ran`: its processes that ran just before)."""
    bundle = lab.paths.bundle(t.namespace, t.id)
    if t.id in listed:
        return "reconnect"
    if not running(t):
        return "kill-live-processes" if ran else "clean-up"
    if bundle.with_name("." + t.id).exists():
        return "skip-and-leak"
    return "delete-silently-and-leak" if not bundle.exists() else "clean-up-and-leak"


def newest_runnable() -> str:
    """The newest containerd version the lab can run here; CannotRun saying why none can."""
    reasons = {}
    for version in reversed(list(VERSIONS)):
        if (reason := missing(version)) is None:
            return version
        reasons[version] = reason
    raise CannotRun("the runtime-v2 demo runs a real containerd, and none can run here: "
                    + "; ".join(f"{v}: {r}" for v, r in reasons.items()))


def run_demo(out: BinaryIO, progress: Callable[[str], None], *, keep: bool = False,
             display: Display = PLAIN) -> None:
    """The demo (module doc): its table is the scan's, as wide as `display` (the scan in the
    daemon's namespace is told the width through COLUMNS), its prose wrapped to the same width."""
    version = newest_runnable()
    lab: Containerd | None = None

    def clean_up() -> None:
        if lab is not None:
            lab.close(remove=not keep)

    def write(text: str) -> None:
        out.write(prose(text, display, hang="      ").encode("utf-8", "backslashreplace"))
        out.flush()

    try:
        lab = Containerd.create(namespace=NAMESPACE, version=version)
        progress(f"started a private containerd {version} in {lab.paths.base} (its own mount namespace) "
                 f"in {lab.start():.1f} s")
        tasks = {s.name: lab.run(s.name) for s in SCENES}
        progress(f"ran {len(tasks)} containers (init and an exec each); SIGKILLing containerd ...")
        lab.crash()
        for scene in SCENES:
            scene.break_it(lab, tasks[scene.name])
            progress(f"  {scene.name}: {scene.fault}")
        # the lab's binary is not where a host keeps containerd: the version is named, not read
        scan = [sys.executable, "-m", "recover", "scan", lab.paths.ns_state, "--containerd-version", version]
        progress(f"scanning {lab.paths.ns_state} as containerd sees it, before restarting it ...")
        width = {"COLUMNS": str(display.width)} if display.width else {}
        table = lab.in_ns([*scan, "--format", "text"], env={**{k: v for k, v in os.environ.items() if k != "COLUMNS"},
                                                            **width})
        doc = orjson.loads(lab.in_ns([*scan, "--format", "json"], check=True).stdout)
        predicted = {c["id"].lstrip("."): c for c in doc["containers"] if c["namespace"] == NAMESPACE}
        out.write(table.stdout.encode("utf-8", "backslashreplace"))
        write(f"\nWhat recover says containerd {version} will do, task by task:\n")
        for scene in SCENES:
            c = predicted[scene.name]
            write(f"  {scene.name:<6} {c['containerd_would']}: {c.get('containerd_would_why', '')}\n")
        ran = {name: running(t) for name, t in tasks.items()}
        started = time.monotonic()
        took = lab.start()
        progress(f"restarted containerd: its restore took {took:.1f} s")
        listed = lab.task_list(NAMESPACE)
        write(f"\nWhat containerd {version} did when it restarted:\n")
        agreed = 0
        for scene in SCENES:
            did = observed(lab, tasks[scene.name], ran[scene.name], listed)
            said = predicted[scene.name]["containerd_would"]
            agreed += did == said
            mark = "as recover predicted" if did == said else f"recover predicted {said}"
            write(f"  {scene.name:<6} {did} ({mark})\n")
        write(f"\n{agreed} of {len(SCENES)} as predicted, {time.monotonic() - started:.1f} s after the restart. "
              "On your own host, run `recover scan` BEFORE restarting containerd: `recover guard` "
              "can do it on every start.\n")
    finally:
        run_whole(clean_up)
        if lab is not None:
            progress(f"stopped the lab's daemon, shims and containers; kept its files in {lab.paths.base}" if keep
                     else f"stopped the lab's daemon, shims and containers and removed {lab.paths.base}")
