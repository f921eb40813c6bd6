"""What lies around a containerd 0.2 root and decides its restart: Docker's bundle of each
container (config.json, the stdio FIFOs) and runc's own state of each init."""

from __future__ import annotations

import os
import stat

import orjson

from ...around import RUNC_ROOT, Surroundings, read_small
from ...fsread import printable
from ...judge import ContainerJudgement
from ...rules import Finding, finding
from ...value import Value


class Bundle(Value):
    """What one listing of a container's bundle dir says."""

    exists: bool  # os.Stat(bundle) succeeds, as containerd 0.2.9 asks before it restores a container
    kinds: dict[str, str] | None  # its entries' types ("file", "fifo", "other"); None: it cannot be listed


def look_at_bundle(bundle: str, where: Surroundings) -> Bundle:
    """List a bundle dir once: whether it exists (following links, as os.Stat does) and what it
    holds.  Nothing in it is opened."""
    path = where.path(bundle)
    try:
        with os.scandir(path) as it:  # a bundle holds files and FIFOs: files told without a call
            return Bundle(True, {e.name: "file" if e.is_file(follow_symlinks=False) else _kind(e) for e in it})
    except FileNotFoundError:
        return Bundle(False, None)
    except (OSError, ValueError):  # not a dir, or not listable: os.Stat may still succeed
        return Bundle(os.path.exists(path), None)


def bundle_findings(c: ContainerJudgement, bundle: Bundle | None) -> list[Finding]:
    """A Docker bundle's config.json and stdio FIFOs (only where the bundle can be listed)."""
    if bundle is None or bundle.kinds is None:
        return []  # gone (judged as R003 where it matters) or not readable
    kinds = bundle.kinds
    out = []
    if kinds.get("config.json") != "file":
        out.append(finding("H010", f"bundle {printable(c.bundle)} has no config.json: runc cannot act on "
                           "this container", c.rel))
    # what a healthy bundle holds besides its spec is FIFOs: only other names are looked up
    if not (odd := {name for name, kind in kinds.items() if kind != "fifo" and name != "config.json"}):
        return out
    for p in c.processes:
        for stream in ("stdin", "stdout", "stderr"):
            if f"{p.id}-{stream}" in odd:  # absent: not a Docker bundle, nothing to say
                out.append(finding("H010", f"{printable(p.id)}-{stream} in the bundle is not a FIFO: Docker "
                                   "cannot reattach the container's stdio", c.rel))
    return out


def _kind(entry: os.DirEntry) -> str:
    """What an entry of a bundle that is not a regular file is: a FIFO, or something else."""
    if entry.is_dir(follow_symlinks=False) or entry.is_symlink():
        return "other"
    try:
        return "fifo" if stat.S_ISFIFO(entry.stat(follow_symlinks=False).st_mode) else "other"
    except OSError:
        return "other"


def runc_dir(where: Surroundings) -> str | None:
    """runc's state dir, when there is one (looked up once per scan, by the reader)."""
    if not where.read_runc:
        return None
    path = where.path(where.runc_root or RUNC_ROOT)
    return path if os.path.isdir(path) else None


def runc_findings(c: ContainerJudgement, runc_root: str | None) -> list[Finding]:
    """runc's own state of the container (`<runc-root>/<id>/state.json`) against the init's files,
    and its absence while the init runs."""
    if runc_root is None:
        return []
    init = next((p for p in c.processes if p.id == "init"), None)
    if init is None:
        return []
    data = read_small(os.path.join(runc_root, c.id, "state.json"))
    if data is None:
        state_dir = os.path.join(runc_root, c.id)
        if init.verdict in ("running", "orphaned") and not os.path.lexists(state_dir):
            return [finding("H014", f"runc has no state for this container ({printable(state_dir)} is missing) "
                            f"while its init (pid {init.pid}) runs: runc cannot kill, exec into or delete it", c.rel)]
        return []
    try:
        doc = orjson.loads(data)
        pid = int(doc["init_process_pid"])
        start = int(doc["init_process_start"])  # a string in old runc, a number in new
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return [finding("H011", "runc's state.json cannot be read (init_process_pid, init_process_start)", c.rel)]
    if init.pid is not None and init.pid != pid:
        return [finding("H011", f"runc's state says init is pid {pid}, containerd's pid file says {init.pid}", c.rel)]
    if init.recorded_start is not None and init.recorded_start != start:
        return [finding("H011", f"runc's state says init started at tick {start}, containerd's starttime says "
                        f"{init.recorded_start}", c.rel)]
    return []
