"""A real dockerd 20.10 (Debian's docker.io) over a real containerd 1.6.20 (the Docker lab,
recover/generations/runtime_v2/lab/docker.py): each container given a fault while the daemons are
down, `recover scan --docker-root ...` in the daemons' mount namespace, then both restarted
(containerd first, as systemd orders them): what recover said dockerd would do (`docker.dockerd_would`,
`docker.exit_code`) against what `docker inspect` then shows.  Four cycles, run at once:

  off:  live-restore off, both daemons SIGKILLed: stops (a handler's code; 137 for an init with
        none, after the stop timeout), restarts by policy (unless-stopped stays down after
        restore's stop), --rm removed, exits kept (the shim's) or lost (255);
  on:   live-restore on: kept running, yet an --rm container removed; a stopped shim hangs
        dockerd when a restart policy starts its container again, until it is resumed;
  ctrd: only containerd crashes and restarts while dockerd stays up: `docker ps` stays stale;
  dockerd: only dockerd crashes and restarts, over a containerd that runs on.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import sys
import time
from dataclasses import dataclass

import pytest
from lab_fixtures import run_concurrently

from recover.generations.runtime_v2.lab import Containerd, HarnessError, alive, wait_until
from recover.generations.runtime_v2.lab.docker import DOCKER_NAMESPACE, LOGGING_INIT_CMD, Dockerd
from recover.generations.runtime_v2.lab.docker import missing as docker_missing

PLAIN = "exec sleep 1000000"  # a pid namespace's init without a handler: SIGTERM never reaches it


@dataclass(frozen=True)
class Case:
    name: str
    fault: str = "none"  # none, init-exited, shim-killed, address-removed, shim-stopped
    policy: str = "no"
    cmd: str = LOGGING_INIT_CMD
    auto_remove: bool = False
    stop_timeout: int | None = None


OFF = [Case("no"), Case("plain", cmd=PLAIN, stop_timeout=2), Case("always", policy="always"),
       Case("unless", policy="unless-stopped"), Case("plain-onfail", policy="on-failure", cmd=PLAIN, stop_timeout=2),
       Case("rm", auto_remove=True), Case("exited", "init-exited"),
       Case("exited-unless", "init-exited", policy="unless-stopped"), Case("shim-killed", "shim-killed"),
       Case("shim-killed-always", "shim-killed", policy="always"), Case("address-removed", "address-removed")]
ON = [Case("no"), Case("rm", auto_remove=True), Case("exited", "init-exited"),
      Case("shim-killed-always", "shim-killed", policy="always"), Case("stopped", "shim-stopped", policy="always"),
      Case("stopped-no", "shim-stopped")]
CTRD = [Case("healthy"), Case("dead", "shim-killed")]
DOCKERD = [Case("no"), Case("always", policy="always"), Case("unless", policy="unless-stopped"),
           Case("killed", "shim-killed", policy="always"), Case("address-removed", "address-removed"),
           Case("exited", "init-exited")]
HANG_WAIT = 15  # s: dockerd must not answer this long while a shim is stopped


def skip_unless_docker() -> None:
    if reason := docker_missing():
        pytest.skip(f"real dockerd: {reason}")


def break_it(c: Containerd, d: Dockerd, box, fault: str) -> None:
    shim = d.shim_pid(box)
    if fault == "init-exited":  # its trap exits 42 under the live shim, which reaps it
        os.kill(box.pid, signal.SIGTERM)
        wait_until(lambda: not alive(box.pid, box.pid_start), 10, "the init to exit")
    elif fault == "shim-killed":
        os.kill(shim, signal.SIGKILL)
        wait_until(lambda: not alive(shim), 10, "the shim to die")
    elif fault == "address-removed":
        (d.bundle(box) / "address").unlink()
    elif fault == "shim-stopped":
        os.kill(shim, signal.SIGSTOP)


def recover_scan(c: Containerd, d: Dockerd, *args: str) -> dict:
    result = c.in_ns([sys.executable, "-m", "recover", "scan", c.paths.ns_state, "-f", "json",
                      "--containerd-version", "1.6.20", "--containerd-root", str(c.paths.root),
                      "--docker-root", str(d.data_root), "--docker-config", str(d.config_file), *args])
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def docker_of(doc: dict) -> dict[str, dict]:
    """Docker name -> the container's JSON (with its `docker` object), tasks and task-less alike."""
    found = {c["docker"]["name"]: c for c in doc["containers"] if c.get("docker")}
    found.update({d["name"]: {"docker": d, "findings": [f for f in doc["findings"]
                                                          if f.get("path", "").startswith(f"docker:{d['id']}")]}
                  for d in doc.get("docker", {}).get("without_task", [])})
    return found


def settled(d: Dockerd, names: list[str], quiet: float = 3, limit: float = 30) -> dict[str, dict | None]:
    """`docker inspect` of each once nothing has changed for `quiet` s (restarts and removals
    may follow restore)."""
    def now():
        return {n: (lambda i: None if i is None else {k: i["State"][k] for k in ("Running", "Pid", "ExitCode")})(
            d.inspect(n)) for n in names}
    seen, since, deadline = now(), time.monotonic(), time.monotonic() + limit
    while time.monotonic() < deadline:
        time.sleep(0.5)
        current = now()
        if current != seen:
            seen, since = current, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return seen


@contextlib.contextmanager
def docker_lab(live_restore: bool, cases: list[Case]):
    """A lab containerd 1.6.20 and a dockerd over it, the image imported and a container per case
    running: (containerd, dockerd, boxes by name)."""
    with Containerd.create(namespace=DOCKER_NAMESPACE) as c:
        c.start()
        with Dockerd.create(c, live_restore=live_restore) as d:
            d.start()
            d.import_image()
            yield c, d, {k.name: d.run(k.name, k.cmd, k.policy, k.auto_remove, k.stop_timeout, traps=k.cmd != PLAIN)
                         for k in cases}


def old_alive(boxes: dict) -> dict[str, bool]:
    return {n: alive(b.pid, b.pid_start) for n, b in boxes.items()}


def both_cycle(live_restore: bool, cases: list[Case]) -> dict:
    with docker_lab(live_restore, cases) as (c, d, boxes):
        d.crash()
        c.crash()
        for k in cases:
            break_it(c, d, boxes[k.name], k.fault)
        judged = docker_of(recover_scan(c, d))
        by_name = docker_of(recover_scan(c, d, "--container", "always" if "always" in boxes else "no"))
        c.start()
        stopped = [d.shim_pid(boxes[k.name]) or 0 for k in cases if k.fault == "shim-stopped"]
        hung = None
        if stopped:
            try:
                d.start(timeout=HANG_WAIT)
                hung = False
            except HarnessError:
                hung = True
            for pid in stopped:
                os.kill(pid, signal.SIGCONT)
            wait_until(d._answers, 60, "dockerd to answer once the shims resume")
        else:
            d.start()
        after = settled(d, [k.name for k in cases])
        return {"judged": judged, "by_name": by_name, "boxes": boxes, "after": after, "hung": hung,
                "old_alive": old_alive(boxes)}


def ctrd_cycle() -> dict:
    """Only containerd crashes; dockerd stays up over it."""
    with docker_lab(False, CTRD) as (c, d, boxes):
        c.crash()
        for k in CTRD:
            break_it(c, d, boxes[k.name], k.fault)
        before = docker_of(recover_scan(c, d))
        c.start()
        time.sleep(5)  # dockerd has reconnected; a missed exit stays missed
        return {"before": before, "boxes": boxes, "after": settled(d, [k.name for k in CTRD], quiet=2),
                "rescan": docker_of(recover_scan(c, d)), "old_alive": old_alive(boxes)}


def dockerd_cycle() -> dict:
    """Only dockerd crashes and restarts; containerd runs on (recover judges what is there now)."""
    with docker_lab(False, DOCKERD) as (c, d, boxes):
        d.crash()
        for k in DOCKERD:
            break_it(c, d, boxes[k.name], k.fault)
        time.sleep(1)  # containerd, up, has handled the killed shim (it kills the init, drops the task)
        doc = recover_scan(c, d)
        d.start()
        return {"judged": docker_of(doc), "daemon_runs": any(f["code"] == "H009" for f in doc["findings"]),
                "boxes": boxes, "after": settled(d, [k.name for k in DOCKERD]), "hung": None,
                "old_alive": old_alive(boxes)}


@pytest.fixture(scope="module")
def cycles():
    skip_unless_docker()
    found = run_concurrently({("1.6.20", "off"): functools.partial(both_cycle, False, OFF),
                              ("1.6.20", "on"): functools.partial(both_cycle, True, ON),
                              ("1.6.20", "ctrd"): ctrd_cycle,
                              ("1.6.20", "dockerd"): dockerd_cycle})  # Docker 20.10's containerd
    return found


def mismatches(seen: dict) -> list[str]:
    """Every container whose `docker inspect` after the restart is not what recover predicted."""
    wrong = []
    for name, c in sorted(seen["judged"].items()):
        p, box, after = c["docker"], seen["boxes"][name], seen["after"][name]
        would, code = p["dockerd_would"], p["exit_code"]
        if would == "hang":
            if not seen["hung"]:
                wrong.append(f"{name}: predicted hang, dockerd answered")
            continue
        expect_running = would in ("keep-running", "stop-then-restart", "record-exit-then-restart", "start")
        if would == "remove":
            ok = after is None
        elif after is None:
            ok = False
        elif expect_running:
            same = after["Pid"] == box.pid
            ok = after["Running"] and same == (would == "keep-running")
        else:
            ok = not after["Running"] and (code is None or after["ExitCode"] == code)
        if not ok:
            wrong.append(f"{name}: predicted {would} (exit {code}), `docker inspect` says {after} (old pid {box.pid})")
    return wrong


@pytest.mark.emits("R201", "R202")
def test_without_live_restore_dockerd_does_what_recover_says(cycles):
    seen = cycles[("1.6.20", "off")]
    assert not mismatches(seen), "\n".join(mismatches(seen))
    would = {n: (c["docker"]["dockerd_would"], c["docker"]["exit_code"]) for n, c in seen["judged"].items()}
    assert would == {
        "no": ("stop", None),  # its trap decides the code (42)
        "plain": ("stop", 137), "plain-onfail": ("stop-then-restart", None),  # no handler: SIGKILL after 2 s
        "always": ("stop-then-restart", None), "unless": ("stop", None), "rm": ("remove", None),
        "exited": ("record-exit", 42), "exited-unless": ("record-exit-then-restart", None),
        "shim-killed": ("record-exit", 255), "shim-killed-always": ("record-exit-then-restart", None),
        "address-removed": ("record-exit", 255)}
    assert seen["after"]["no"]["ExitCode"] == 42 and seen["after"]["unless"]["ExitCode"] == 42
    codes = {n: {f["code"] for f in c["findings"]} for n, c in seen["judged"].items()}
    assert "R201" in codes["always"] and "R202" in codes["shim-killed"]
    assert list(seen["by_name"]) == ["always"]  # --container takes a Docker name


@pytest.mark.emits("R204")
def test_with_live_restore_dockerd_keeps_them_but_removes_rm_and_hangs_on_a_stopped_shim(cycles):
    seen = cycles[("1.6.20", "on")]
    assert not mismatches(seen), "\n".join(mismatches(seen))
    would = {n: c["docker"]["dockerd_would"] for n, c in seen["judged"].items()}
    assert would == {"no": "keep-running", "rm": "remove", "exited": "record-exit",
                     "shim-killed-always": "record-exit-then-restart", "stopped": "hang", "stopped-no": "record-exit"}
    assert seen["hung"] is True
    assert "R204" in {f["code"] for f in seen["judged"]["stopped"]["findings"]}
    # once resumed, as without the hang: containerd had removed the tasks; `always` starts again
    after, box = seen["after"]["stopped"], seen["boxes"]["stopped"]
    assert after["Running"] and after["Pid"] != box.pid
    assert seen["after"]["stopped-no"] == {"Running": False, "Pid": 0, "ExitCode": 255}


@pytest.mark.emits("R203")
def test_dockerd_up_over_a_crashed_containerd_keeps_a_stale_view(cycles):
    seen = cycles[("1.6.20", "ctrd")]
    dead = seen["before"]["dead"]
    assert any(f["code"] == "R203" and "keeps showing it Up" in f["message"] for f in dead["findings"])
    after, box = seen["after"]["dead"], seen["boxes"]["dead"]
    assert after == {"Running": True, "Pid": box.pid, "ExitCode": 0} and not seen["old_alive"]["dead"]
    assert seen["after"]["healthy"]["Running"] and seen["old_alive"]["healthy"]
    rescan = seen["rescan"]["dead"]["docker"]  # its task is gone: Docker's record alone says it runs
    assert rescan["stale"] is True and rescan["dockerd_would"] == "record-exit" and rescan["exit_code"] == 255


def test_dockerd_alone_restarted_over_a_running_containerd(cycles):
    """containerd runs (H009): recover judges the tasks as they are, not after a restore of
    containerd's; dockerd's restart then does what it says."""
    seen = cycles[("1.6.20", "dockerd")]
    assert seen["daemon_runs"]
    assert not mismatches(seen), "\n".join(mismatches(seen))
    would = {n: (c["docker"]["dockerd_would"], c["docker"]["exit_code"]) for n, c in seen["judged"].items()}
    # a removed `address` changes nothing while containerd runs; a killed shim's task is gone (255)
    assert would == {"no": ("stop", None), "always": ("stop-then-restart", None), "unless": ("stop", None),
                     "killed": ("record-exit-then-restart", None), "address-removed": ("stop", None),
                     "exited": ("record-exit", 42)}
