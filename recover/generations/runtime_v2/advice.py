"""Advice and repairs that work on the version judged: what to write so that the daemon reaches a
task's live shim (restoration: what `recover repair` writes), and what an operator is told to do
before restarting (what_to_do)."""

from __future__ import annotations

import os

from ...fsread import printable
from ...records import ContainerRecord
from .facts import TaskHost, TaskPrediction, dial
from .reader import DEFAULT_GRPC_ADDRESS, TaskFiles, address_for, unhidden
from .version import Behaviour


def restore_address(record: ContainerRecord, h: TaskHost) -> str:
    """The address of the task's shim socket (the shim writes it at start): where its live shim
    is seen listening, else where containerd puts it."""
    if h.restorable is not None:
        return f"unix://{h.restorable}"
    t: TaskFiles = record.files
    return address_for(h.grpc_address or DEFAULT_GRPC_ADDRESS, t.namespace, t.shim_id)


def restoration(record: ContainerRecord, h: TaskHost, behaviours: tuple[Behaviour, ...],
                task: TaskPrediction) -> dict | None:
    """What repair writes so that the daemon reaches the task's live shim, seen listening on a socket
    (never a guess): the file that names it and its content, where the shim cannot be reached for
    what the bundle says (task.cause), or where the bundle was emptied (then init.pid too, from
    runc's state: seen on real 1.6.20, 1.7.34 and 2.3.4, the two files make the daemon re-adopt the
    task running).  A hidden task dir, its shim alive and no visible twin, is renamed back: seen on
    the same daemons, re-adopted running."""
    t: TaskFiles = record.files
    if h.restorable is None or h.shim_state not in ("alive", "stopped"):
        return None
    if t.hidden:
        if t.hidden_namespace or h.twin_key or h.shim_state != "alive" or task.would != "skip-and-leak":
            return None
        return {"unhide": os.path.basename(t.dir), "to": unhidden(os.path.basename(t.dir))}
    emptied = t.empty and h.runc_init is not None
    if task.cause is None and not emptied:
        return None
    restored = restore_file(record, h, behaviours)
    if restored is None:
        return None
    name, content = restored
    return {"file": name, "content": content, "socket": h.restorable,
            "init_pid": h.runc_init if emptied else None}


def restore_file(record: ContainerRecord, h: TaskHost, behaviours: tuple[Behaviour, ...]) -> tuple[str, str] | None:
    """(file name, content) that makes every daemon judged reach the task's live shim, or None
    when no single file does: 1.6 and 1.7 read a plain `address` and speak task API v2; 2.x reads
    bootstrap.json, whose version must be the API the shim serves, or migrates `address` as v2."""
    address = restore_address(record, h)
    if h.shim_api == 3:
        if set(behaviours) != {"2.x"}:
            return None  # a 2.x shim: only containerd 2.x can reach it
        return "bootstrap.json", f'{{"version":3,"address":"{address}","protocol":"ttrpc"}}'
    return "address", address  # every version reads it (2.x migrates it, where no bootstrap.json stands first)


def what_to_do(record: ContainerRecord, h: TaskHost, behaviours: tuple[Behaviour, ...], task: TaskPrediction) -> str:
    t: TaskFiles = record.files
    unreachable_socket = any(
        d.problem is None and d.file is not None
        and (d.file.socket in ("missing", "not-a-socket") or h.listened.get(d.file.socket_path or "") is False)
        for d in (dial(t, b) for b in behaviours))
    if h.shim_state == "alive" and unreachable_socket:
        return ("the live shim can no longer be reached (a socket cannot be re-created for it): stop the "
                "task's processes cleanly before restarting, or accept the SIGKILL")
    if h.shim_state == "alive" and task.cause is not None:
        restored = restore_file(record, h, behaviours)
        if restored is None:
            return ("its shim is a containerd 2.x shim (task API v3), which only containerd 2.x can reach: start "
                    "containerd 2.x, or stop the task's processes cleanly before restarting")
        name, content = restored
        others = (" and move bootstrap.json aside (containerd 2.x reads it first)"
                  if name == "address" and t.bootstrap is not None and "2.x" in behaviours else "")
        return (f"before restarting, restore the {name if name == 'address' else name + ' file'}: write "
                f"{content!r} (no newline) to "
                f"{printable(os.path.join(t.dir, name))}{others}; the socket name is sha256 of "
                f"'{h.grpc_address or DEFAULT_GRPC_ADDRESS}/{t.namespace}/{t.shim_id}'")
    return "stop them cleanly before restarting (their exit status will not be recorded), or accept the SIGKILL"
