"""The performance bench (issue 6).  Not a test: prints figures measured in one run.

    python bench/run.py [--sizes 1000,10000,50000] [--runs 5]

For each size it generates (once, cached in bench/.cache) a root of N containers, then times,
alternating, `recover scan ROOT --format json` to /dev/null against the floor (bench/floor.py:
every file a scan must read, read once, and each recorded pid's stat once, deciding nothing),
and prints the medians, their ratio, the per-process cost, and the peak RSS of the scan with
--format json and --format jsonl.  Then the start-up time of `recover --help` and of a scan of
an empty root.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
CACHE = HERE / ".cache"
sys.path.insert(0, str(HERE))

from make_root import make_root  # noqa: E402

RECOVER = [sys.executable, "-m", "recover"]


def timed(argv: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one run, stdout to /dev/null."""
    with open(os.devnull, "wb") as null:
        start = time.perf_counter()
        child = subprocess.Popen(argv, stdout=null)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{argv} exited {child.returncode}")
    return wall, usage.ru_maxrss


def root_of(size: int) -> pathlib.Path:
    path = CACHE / f"root-{size}"
    if not path.exists():
        print(f"generating {size} containers in {path} ...", file=sys.stderr, flush=True)
        CACHE.mkdir(exist_ok=True)
        make_root(path, size)
    return path


def measure(size: int, runs: int) -> dict:
    root = str(root_of(size))
    scan = RECOVER + ["scan", root, "--format", "json"]
    floor = [sys.executable, str(HERE / "floor.py"), root]
    timed(scan), timed(floor)  # warm the page cache
    scans, floors, rss_json = [], [], []
    for _ in range(runs):
        wall, rss = timed(scan)
        scans.append(wall)
        rss_json.append(rss)
        floors.append(timed(floor)[0])
    rss_jsonl = max(timed(RECOVER + ["scan", root, "--format", "jsonl"])[1] for _ in range(2))
    processes = 2 * size
    return {"size": size, "scan": statistics.median(scans), "floor": statistics.median(floors),
            "rss_json": max(rss_json), "rss_jsonl": rss_jsonl, "processes": processes}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,10000,50000")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    print(f"# recover bench, {time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, {args.runs} runs each, medians")
    print(f"{'containers':>10} {'scan s':>8} {'floor s':>8} {'ratio':>6} {'us/process':>10} "
          f"{'RSS json MB':>11} {'RSS jsonl MB':>12}")
    results = []
    for size in sizes:
        r = measure(size, args.runs)
        results.append(r)
        print(f"{size:>10} {r['scan']:>8.2f} {r['floor']:>8.2f} {r['scan'] / r['floor']:>6.2f} "
              f"{r['scan'] / r['processes'] * 1e6:>10.1f} {r['rss_json'] / 1024:>11.1f} "
              f"{r['rss_jsonl'] / 1024:>12.1f}", flush=True)
    by = {r["size"]: r for r in results}
    if 10000 in by and 50000 in by:
        per10 = by[10000]["scan"] / by[10000]["processes"]
        per50 = by[50000]["scan"] / by[50000]["processes"]
        print(f"per-process cost at 50,000 vs 10,000: {per50 / per10:.2f}x")
    empty = tempfile.mkdtemp(prefix="recover-bench-empty-")
    try:
        helps = [timed(RECOVER + ["--help"])[0] for _ in range(args.runs)]
        empties = [timed(RECOVER + ["scan", empty, "--format", "json"])[0] for _ in range(args.runs)]
    finally:
        os.rmdir(empty)
    print(f"start-up: recover --help {statistics.median(helps):.3f} s, "
          f"scan of an empty root {statistics.median(empties):.3f} s")


if __name__ == "__main__":
    main()
