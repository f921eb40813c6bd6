"""`recover watch`: the root rescanned every interval, its metrics (recover/metrics.py) written
whole to a node_exporter textfile, until SIGTERM.

The only file it writes is the textfile (a temp file beside it, renamed over it: node_exporter
reads only `*.prom`, so never the half-written one).  A scan that cannot judge the root (gone,
unreadable, not a root) writes `recover_scan_ok 0` and the loop goes on.  Each scan is streamed
(counts only): memory stays flat in the root's size; one scan per interval is its CPU."""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable
from contextlib import AbstractContextManager

from .guard import HAZARD_CODES, write_whole
from .metrics import Outcome, textfile
from .scan import Scan
from .stop import run_whole

OpenScan = Callable[[], AbstractContextManager[Scan]]


class CannotScan(Exception):
    """The root could not be scanned this time (said already)."""


def judge(open_scan: OpenScan) -> tuple[Outcome, dict[str, str]]:
    with open_scan() as scan:
        version = scan.daemon.json()
        outcome = Outcome(version.get("version") or "unknown", scan.generation.harm_of)
        for c in scan.containers():
            outcome.add(c, HAZARD_CODES)
        outcome.add_root_findings(scan.findings)  # after the containers: the orphan shims are known then
        if scan.beside is not None:
            outcome.dockerd.update(scan.beside.task_less())
        info = {"layout": scan.generation.name, "daemon": scan.daemon.name,
                "version": outcome.version, "version_from": str(version.get("source") or "unknown")}
        return outcome, info


def write_atomically(path: str, data: bytes) -> None:
    """The whole file or the old one (guard.write_whole), its temp file not a `*.prom`."""
    directory, name = os.path.split(os.path.abspath(path))
    write_whole(os.path.join(directory, name), os.path.join(directory, f".{name}.{os.getpid()}.tmp"), data, 0o644)


def watch(root_label: str, open_scan: OpenScan, upgrades: list[OpenScan], path: str, interval: float,
          say: Callable[[str], None], count: int | None = None) -> int:
    """Scan, write, sleep, until stopped (a stop signal raises recover.stop.Stopped out of the
    sleep) or `count` scans are made.  Returns how many were made."""
    made, told = 0, set()
    while count is None or made < count:
        started, began = time.monotonic(), time.time()
        try:
            outcome, info = judge(open_scan)
            upgraded = [judge(u)[0] for u in upgrades]
            ok = True
        except CannotScan:
            outcome, info, upgraded, ok = None, None, [], False
        except Exception as e:  # noqa: BLE001 - a bug in recover: said (its traceback once), the watch goes on
            if type(e) not in told:
                told.add(type(e))
                say("internal error (a bug in recover) while scanning:\n" + traceback.format_exc().rstrip())
            else:
                say(f"internal error again while scanning: {e!r}")
            outcome, info, upgraded, ok = None, None, [], False
        ended = time.time()
        data = textfile(root_label, ok, ended - began, ended, outcome, upgraded, info)
        try:
            run_whole(lambda: write_atomically(path, data))  # a stop signal waits for the rename
        except OSError as e:  # a full disk, the dir gone: said, and tried again next time
            say(f"cannot write {path}: {e.strerror or e}")
        made += 1
        if ok:
            say(f"{root_label}: {sum(outcome.verdicts.values())} process(es), "
                f"{sum(n for (_, s), n in outcome.findings.items() if s == 'error')} error finding(s), "
                f"{ended - began:.2f} s; wrote {path}")
        if count is not None and made >= count:
            break
        time.sleep(max(0.0, started + interval - time.monotonic()))
    return made
