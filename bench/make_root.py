"""Generate a benchmark state root of N containers (init + one exec each), real file shapes.

A third of the processes have exited (exitStatus written), the rest point at a mix of live
pids (processes alive when the root was made, pid 1 first) and dead ones; every process dir has
its `exit` and `control` FIFOs, as the daemon makes them.  Each container has its own bundle
beside the root (`bundles-<root name>/<id>`), as Docker's libcontainerd makes it: config.json
and each process's stdin, stdout and stderr FIFOs (a scan lists it and asks what each entry is).
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import sys

REFERENCE = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "reference" / "root"
WEB = "4b5e57f6eb2f42b9039b3d1e13929295f231749c510cbe341cd68036d9af97e2"


def _templates() -> tuple[dict, dict, dict]:
    state = json.loads((REFERENCE / WEB / "state.json").read_text())
    init = json.loads((REFERENCE / WEB / "init" / "process.json").read_text())
    exec_ = json.loads((REFERENCE / WEB / "debug-shell" / "process.json").read_text())
    return state, init, exec_


def _stat_start(pid: int) -> int | None:
    try:
        data = open(f"/proc/{pid}/stat", "rb").read()
    except OSError:
        return None
    return int(data[data.rindex(b")") + 2:].split()[19])


def _dead_pids(count: int) -> list[int]:
    pid_max = int(open("/proc/sys/kernel/pid_max").read())
    out, pid = [], pid_max - 1
    while len(out) < count and pid > 1000:
        if not os.path.exists(f"/proc/{pid}"):
            out.append(pid)
        pid -= 7
    return out


def make_root(dest: pathlib.Path, containers: int) -> pathlib.Path:
    state, init, exec_ = _templates()
    live = [p for p in sorted(int(n) for n in os.listdir("/proc") if n.isdigit())][:50]
    live_start = {p: _stat_start(p) for p in live}
    live = [p for p in live if live_start[p] is not None]
    dead = _dead_pids(200)
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.mkdir(parents=True)
    bundles = bundles_of(dest)
    tmp_bundles = bundles.with_name(bundles.name + ".tmp")
    tmp_bundles.mkdir()
    (tmp / "events.log").write_bytes(b"")
    n = 0
    for i in range(containers):
        cid = hashlib.sha256(f"bench-{i}".encode()).hexdigest()
        cdir = tmp / cid
        cdir.mkdir()
        bundle = tmp_bundles / cid
        bundle.mkdir()
        (bundle / "config.json").write_bytes(b"{}")  # a healthy bundle has the spec runc acts on
        st = dict(state, bundle=str(bundles / cid))
        (cdir / "state.json").write_bytes(json.dumps(st, separators=(",", ":")).encode())
        for pid_id, spec in (("init", init), (f"exec-{i:06d}", exec_)):
            pdir = cdir / pid_id
            pdir.mkdir()
            (pdir / "process.json").write_bytes(json.dumps(spec, separators=(",", ":")).encode())
            if n % 2:
                pid = live[n % len(live)]
                start = live_start[pid]
            else:
                pid = dead[n % len(dead)]
                start = 1000 + n
            (pdir / "pid").write_bytes(str(pid).encode())
            (pdir / "starttime").write_bytes(str(start).encode())
            if n % 3 == 0:
                (pdir / "exitStatus").write_bytes(b"0")
            for fifo in ("exit", "control"):
                os.mkfifo(pdir / fifo)
            for empty in ("log.json", "shim-log.json"):
                (pdir / empty).write_bytes(b"")
            for stream in ("stdin", "stdout", "stderr"):
                os.mkfifo(bundle / f"{pid_id}-{stream}")
            n += 1
    tmp_bundles.rename(bundles)
    tmp.rename(dest)
    return dest


def bundles_of(root: pathlib.Path) -> pathlib.Path:
    """Where the bundles of a generated root are: beside it."""
    return root.with_name(f"bundles-{root.name}")


if __name__ == "__main__":
    make_root(pathlib.Path(sys.argv[1]), int(sys.argv[2]))
