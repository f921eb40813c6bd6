"""The performance bench.  Not a test: prints figures measured in one run.

    python bench/run.py [--sizes 1000,10000,50000] [--runs 5] [--layouts containerd-0.2,containerd-runtime-v2]

For each layout and size it generates (once, cached in bench/.cache) a containerd 0.2 root of N
containers (bench/make_root.py) or a runtime-v2 state dir of N tasks with runc's state and CRI's
checkpoints (bench/make_state_v2.py), then times, alternating, `recover scan --format json` and
`--format jsonl` to /dev/null against the floor (bench/floor.py: the fastest plain Python that
reads the bytes a scan must read, deciding nothing), and prints the medians, their ratios, the
per-process cost (the json scan's time less an empty root's scan, per process) and the peak RSS
of each scan (of its largest process: the parent or one worker).  The start-up times (`recover
--help`, a scan of an empty root) are measured first.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import pathlib
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
CACHE = HERE / ".cache"
sys.path.insert(0, str(HERE))

import floor  # noqa: E402
from make_root import bundles_of  # noqa: E402

RECOVER = [sys.executable, "-m", "recover"]
# every command runs from here: `python -m recover` in a checkout would import the checkout, not
# the recover that is installed (the one measured)
OUTSIDE = "/"


def timed(argv: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one run, stdout to /dev/null."""
    with open(os.devnull, "wb") as null:
        start = time.perf_counter()
        child = subprocess.Popen(argv, stdout=null, cwd=OUTSIDE)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{argv} exited {child.returncode}")
    return wall, usage.ru_maxrss


def _generate(script: str, path: pathlib.Path, size: int) -> None:
    """Generate a root in a process of its own: generated here, it would grow the bench's own
    memory, and a command forked from a large process starts with its pages counted in its peak
    RSS (a first run once put every scan at 66.8 MB)."""
    subprocess.run([sys.executable, str(HERE / script), str(path), str(size)], check=True)


def root_of(size: int) -> pathlib.Path:
    path = CACHE / f"root-{size}"
    if path.exists() and not _bundle_found(path):  # a cache of another shape, or moved from elsewhere
        print(f"{path}: its containers' bundles are not where they say, generating it again",
              file=sys.stderr, flush=True)
        shutil.rmtree(path)
        shutil.rmtree(bundles_of(path), ignore_errors=True)
    if not path.exists():
        print(f"generating {size} containers in {path} ...", file=sys.stderr, flush=True)
        CACHE.mkdir(exist_ok=True)
        _generate("make_root.py", path, size)
    return path


def _bundle_found(root: pathlib.Path) -> bool:
    """Whether the first container's bundle is its own (make_root gives each one) and exists."""
    with os.scandir(root) as entries:
        first = next((e.name for e in entries if e.is_dir(follow_symlinks=False)), None)
    if first is None:
        return True
    try:
        state = json.loads((root / first / "state.json").read_bytes())
    except (OSError, ValueError):
        return False  # not a root make_root wrote: generate it again
    bundle = state.get("bundle", "")
    return os.path.basename(bundle) == first and os.path.isdir(bundle)


def state_of(size: int) -> pathlib.Path:
    path = CACHE / f"v2-{size}"
    if not path.exists():
        print(f"generating {size} runtime-v2 tasks in {path} ...", file=sys.stderr, flush=True)
        CACHE.mkdir(exist_ok=True)
        _generate("make_state_v2.py", path, size)
    return path


def scan_args(layout: str, size: int) -> tuple[list[str], list[str], int]:
    """recover scan's arguments, the floor's, and how many processes the root records."""
    if layout == "containerd-0.2":
        root = str(root_of(size))
        return [root], [root], 2 * size  # init and one exec each
    top = state_of(size)
    paths = [str(top / "state"), str(top / "runc"), str(top / "root")]
    execs = sum(1 for i in range(size) if i % 10 == 7)
    return [paths[0], "--runc-root", paths[1], "--containerd-root", paths[2]], paths, size + execs


def how_installed() -> str:
    """An editable install (pip install -e) adds its import finder to every start: say which."""
    direct = importlib.metadata.distribution("recover").read_text("direct_url.json")
    editable = bool(direct) and json.loads(direct).get("dir_info", {}).get("editable", False)
    return "editable install" if editable else "installed"


def measure(layout: str, size: int, runs: int) -> dict:
    args, floor_args, processes = scan_args(layout, size)
    commands = {
        "json": RECOVER + ["scan", *args, "--format", "json"],
        "jsonl": RECOVER + ["scan", *args, "--format", "jsonl"],
        "floor": [sys.executable, str(HERE / "floor.py"), *floor_args],
    }
    for argv in commands.values():
        timed(argv)  # warm the page cache
    walls: dict[str, list[float]] = {k: [] for k in commands}
    rss: dict[str, list[int]] = {k: [] for k in commands}
    for _ in range(runs):
        for name, argv in commands.items():
            wall, peak = timed(argv)
            walls[name].append(wall)
            rss[name].append(peak)
    out = {"size": size, "processes": processes}
    for name in commands:
        out[name] = statistics.median(walls[name])
        out["rss_" + name] = max(rss[name])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,10000,50000")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--layouts", default="containerd-0.2,containerd-runtime-v2")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    # as installed: pip compiles the bytecode (here it may be an editable tree, or
    # PYTHONDONTWRITEBYTECODE may be set, and every run would compile every module)
    subprocess.run([sys.executable, "-c", "import compileall, os, recover; "
                    "compileall.compile_dir(os.path.dirname(recover.__file__), quiet=1)"], check=True, cwd=OUTSIDE)
    versions = ", ".join(f"{p} {importlib.metadata.version(p)}" for p in ("typer", "orjson", "msgspec"))
    print(f"# recover bench, {time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()} ({versions}; recover {how_installed()}, bytecode compiled), "
          f"{args.runs} alternating runs "
          f"each, medians; load average at start {os.getloadavg()[0]:.2f}")
    for paragraph in floor.__doc__.split("\n\n")[2:4]:
        print("# floor: " + " ".join(paragraph.split()))
    empty = tempfile.mkdtemp(prefix="recover-bench-empty-")
    try:
        helps = [timed(RECOVER + ["--help"])[0] for _ in range(args.runs)]
        empties = [timed(RECOVER + ["scan", empty, "--format", "json"])[0] for _ in range(args.runs)]
    finally:
        os.rmdir(empty)
    start_up = statistics.median(empties)
    print(f"start-up: recover --help {statistics.median(helps):.3f} s, scan of an empty root {start_up:.3f} s",
          flush=True)
    for layout in args.layouts.split(","):
        print(f"\n{layout}\n{'size':>10} {'floor s':>8} {'json s':>7} {'ratio':>6} {'jsonl s':>8} {'ratio':>6} "
              f"{'us/process':>10} {'RSS json MB':>11} {'RSS jsonl MB':>12}")
        results = []
        for size in sizes:
            r = measure(layout, size, args.runs)
            results.append(r)
            print(f"{size:>10} {r['floor']:>8.2f} {r['json']:>7.2f} {r['json'] / r['floor']:>6.2f} "
                  f"{r['jsonl']:>8.2f} {r['jsonl'] / r['floor']:>6.2f} "
                  f"{(r['json'] - start_up) / r['processes'] * 1e6:>10.1f} {r['rss_json'] / 1024:>11.1f} "
                  f"{r['rss_jsonl'] / 1024:>12.1f}", flush=True)
        by = {r["size"]: r for r in results}
        if min(by) < max(by):
            small, large = by[min(by)], by[max(by)]
            per_small = (small["json"] - start_up) / small["processes"]
            per_large = (large["json"] - start_up) / large["processes"]
            print(f"per-process cost (json, less the empty-root scan) at {max(by):,} vs {min(by):,}: "
                  f"{per_large / per_small:.2f}x")
    print(f"\nload average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
