"""What `recover watch` costs a node: a runtime-v2 state dir of N tasks (bench/make_state_v2.py),
watched for --count scans; its peak RSS over all of them (flat: each scan streams), its CPU time
per scan (user + system, its forked workers included), and what that is at one scan a minute.

    python bench/watch.py [--sizes 1000,10000] [--scans 10] [--cores all|1]

--cores 1 pins it to one CPU (taskset): a single-core node's figure.  No floor here: the floor of
a scan is bench/run.py's; this is the cost of the loop around it."""

from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import psutil

from run import state_of


def measure(size: int, scans: int, cores: str) -> dict:
    """Peak RSS of the watch (its workers included) and its wall time."""
    top = state_of(size)
    with tempfile.TemporaryDirectory() as out:
        argv = [sys.executable, "-m", "recover", "watch", str(top / "state"), "--runc-root", str(top / "runc"),
                "--containerd-root", str(top / "root"), "--containerd-version", "1.6.20",
                "--textfile", os.path.join(out, "recover.prom"), "--interval", "0.5", "--count", str(scans)]
        if cores == "1":
            argv = ["taskset", "-c", "0", *argv]
        started = time.monotonic()
        proc = psutil.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        peak = 0
        while proc.poll() is None:
            try:
                peak = max(peak, proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children()))
            except psutil.Error:
                pass
            time.sleep(0.02)
    return {"peak_rss_mb": peak / 1e6, "wall_s": time.monotonic() - started}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--scans", type=int, default=10)
    ap.add_argument("--cores", default="all", choices=("all", "1"))
    a = ap.parse_args()
    print(f"{'tasks':>6} {'cores':>5} {'scans':>5} {'peak RSS MB':>11} {'CPU s/scan':>10} {'CPU at 1 scan/min':>17}")
    for size in (int(s) for s in a.sizes.split(",")):
        base = os.times()
        r = measure(size, a.scans, a.cores)
        now = os.times()  # a reaped child's CPU time (its workers' included) is added to ours
        cpu = now.children_user - base.children_user + now.children_system - base.children_system
        per_scan = cpu / a.scans
        print(f"{size:>6} {a.cores:>5} {a.scans:>5} {r['peak_rss_mb']:>11.1f} {per_scan:>10.3f} "
              f"{per_scan / 60 * 100:>16.2f}%", flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    main()
