"""What a live process uses (memory, threads, CPU, open files and sockets), read with psutil for
`recover explain`: only on this pid namespace's own live /proc, and nothing is kept if the pid's
start ticks changed while it was read."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from .fsread import json_text
from .host import read_stat

RESOURCE_LIST_MAX = 50  # open files and sockets shown per process (all are counted)


def _same_net_namespace(pid: int) -> bool | None:
    try:
        theirs, ours = os.stat(f"/proc/{pid}/ns/net"), os.stat("/proc/self/ns/net")
    except OSError:  # another user's process, without root: its namespace cannot be seen
        return None
    return (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)


def _socket_json(c: Any) -> dict:
    def address(a: Any) -> str | None:
        if not a:
            return None
        if isinstance(a, str):  # AF_UNIX: a path, or "" for an unnamed socket
            return json_text(a)
        return f"[{a.ip}]:{a.port}" if ":" in a.ip else f"{a.ip}:{a.port}"

    return {"fd": c.fd, "family": getattr(c.family, "name", str(c.family)), "type": getattr(c.type, "name", str(c.type)),
            "local": address(c.laddr), "remote": address(c.raddr), "status": c.status}


def process_resources(pid: int, start_ticks: int) -> dict:
    """What a live process of this host uses now, read with psutil: memory (rss), threads, CPU
    times, open files, sockets.  Each is None where it cannot be told, with the reason in
    `cannot_tell`: the process is gone or a zombie, another user's without root, or (sockets) in
    another network namespace, whose sockets this host's /proc/net does not list.  psutil reads
    /proc afresh and knows nothing of start ticks: if pid's start ticks are not `start_ticks`
    after the reads, they were another process's, and nothing is kept."""
    import psutil

    reads: dict[str, Callable[[Any], Any]] = {
        "rss_bytes": lambda pr: pr.memory_info().rss,
        "threads": lambda pr: pr.num_threads(),
        "cpu_user_s": lambda pr: pr.cpu_times().user,
        "cpu_system_s": lambda pr: pr.cpu_times().system,
        "open_files": lambda pr: sorted(({"fd": f.fd, "path": json_text(f.path)} for f in pr.open_files()),
                                        key=lambda f: f["fd"]),
        "sockets": lambda pr: sorted((_socket_json(c) for c in pr.net_connections(kind="all")),
                                     key=lambda c: (c["fd"], c["local"] or "")),
    }
    out: dict[str, Any] = dict.fromkeys(reads)
    cannot_tell: dict[str, str] = {}
    try:
        proc = psutil.Process(pid)
    except psutil.Error as e:
        return {**out, "cannot_tell": dict.fromkeys(reads, _psutil_reason(e))}
    same_net = _same_net_namespace(pid)
    with proc.oneshot():
        for key, read in reads.items():
            if key == "sockets" and not same_net:
                cannot_tell[key] = ("its network namespace cannot be read" if same_net is None
                                    else "another network namespace: this host's /proc/net does not list its sockets")
                continue
            try:
                out[key] = read(proc)
            except psutil.Error as e:
                cannot_tell[key] = _psutil_reason(e)
    after = read_stat("/proc", pid)
    if after is None or after.starttime != start_ticks:
        return {**dict.fromkeys(reads), "cannot_tell": dict.fromkeys(reads, "the process exited, or its pid was "
                                                                            "reused, while it was read")}
    for key in ("open_files", "sockets"):
        if out[key] is not None:
            out[f"{key}_count"] = len(out[key])
            out[key] = out[key][:RESOURCE_LIST_MAX]
    return {**out, "cannot_tell": cannot_tell}


def _psutil_reason(e: Exception) -> str:
    import psutil

    if isinstance(e, psutil.ZombieProcess):  # a NoSuchProcess: test it first
        return "a zombie"
    if isinstance(e, psutil.NoSuchProcess):
        return "the process is gone"
    if isinstance(e, psutil.AccessDenied):
        return "access denied (another user's process: run as root)"
    return str(e) or type(e).__name__
