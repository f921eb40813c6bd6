"""The journal of a repair, and undo.

JSON lines, appended and fsynced: an `intent` line (time, id, action, path, before, after, reason,
container, process) before each change, and its outcome (`done`, `skipped`, `failed`) after.  Bytes
that are not UTF-8 are kept exactly in a `<field>_hex` field.  A change that cannot be reverted (a
signal; a file that records one) says so in its intent (`undo`: why not).  Undo lines name the
entry they undo (`undoes`), so that a second `--undo` is a no-op.  Generation-free: undo reverts
files by path, whichever generation wrote them.
"""

from __future__ import annotations

import errno
import os
import stat
import time
import uuid
from dataclasses import dataclass
from typing import Literal

import orjson

from ..fsread import OPEN_DIR, printable
from .files import fsync_dir, move_tree, read_small, write_temp


class Journal:
    """JSON lines, appended and fsynced: an intent before each change and its outcome after."""

    def __init__(self, path: str, *, create: bool = True):
        """OSError if it cannot be opened, or is not a regular file (a FIFO is never waited on)."""
        self.path = path
        flags = os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC | (os.O_CREAT if create else 0)
        self._fd = os.open(path, flags, 0o600)
        if not stat.S_ISREG(os.fstat(self._fd).st_mode):
            os.close(self._fd)
            raise OSError(errno.EINVAL, "not a regular file")

    def write(self, **entry: object) -> None:
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **entry}
        os.write(self._fd, orjson.dumps(entry) + b"\n")
        os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)


def jfield(name: str, data: bytes | None) -> dict[str, str | None]:
    """A journal field: its text; and, when the bytes are not UTF-8 (JSON holds only text), the
    exact bytes in hex as `<name>_hex`, so that undo restores them byte for byte."""
    if data is None:
        return {name: None}
    try:
        return {name: data.decode("utf-8")}
    except UnicodeDecodeError:
        return {name: data.decode("utf-8", "backslashreplace"), f"{name}_hex": data.hex()}


def jvalue(e: dict, name: str) -> bytes | None:
    """The exact bytes of a journal field written by jfield."""
    if isinstance(e.get(f"{name}_hex"), str):
        return bytes.fromhex(e[f"{name}_hex"])
    value = e.get(name)
    return None if value is None else str(value).encode("utf-8", "surrogateescape")


# --- undo ----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Reverted:
    path: str  # exact (renderers escape it)
    action: str
    result: Literal["reverted", "not-reverted"]
    detail: str


class NotAJournal(Exception):
    """--undo was given a file that holds no journal entry."""


_PHASES = ("intent", "done", "skipped", "failed")
MOVED = "move"  # an intent whose `after` is where a dir went (a quarantine): undo moves it back


def _journal_entry(line: bytes) -> dict | None:
    """One journal line as written by Journal.write, or None (a line cut by a crash, or not ours)."""
    try:
        e = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not (isinstance(e, dict) and isinstance(e.get("id"), str) and e.get("phase") in _PHASES
            and isinstance(e.get("action", ""), str)):
        return None
    for key, value in e.items():
        if key.endswith("_hex"):
            try:
                bytes.fromhex(value)
            except (TypeError, ValueError):
                return None
    return e


def read_journal(path: str) -> list[dict]:
    """The entries of a journal file.  OSError if it cannot be read (a FIFO, a device or a dir is
    never read); NotAJournal if it holds something but no journal entry.  Empty: a run that
    changed nothing."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            lines = f.read().splitlines()
    finally:
        os.close(fd)
    entries = [e for e in map(_journal_entry, lines) if e is not None]
    if not entries and any(line.strip() for line in lines):
        raise NotAJournal(f"{path} holds no recover journal entry")
    return entries


def undo(entries: list[dict], journal: Journal) -> list[Reverted]:
    """Revert what a journal recorded, newest first, where the file is still as that run left it."""
    intents: dict[str, dict] = {}
    order: list[str] = []
    undone: set[str] = set()  # reverted by an earlier --undo of this journal
    for e in entries:
        if isinstance(e.get("undoes"), str):
            undone.add(e["undoes"])
        if e["phase"] == "intent" and not e.get("action", "").startswith("undo"):
            intents[e["id"]] = e
            order.append(e["id"])
        elif e["id"] in intents:
            intents[e["id"]]["outcome"] = e["phase"]
    out = []
    for entry_id in reversed(order):
        e = intents[entry_id]
        path = os.fsdecode(jvalue(e, "path") or b"")
        action = e.get("action", "")
        if e.get("outcome") not in (None, "done"):
            continue  # skipped or failed: nothing was changed
        if entry_id in undone:
            out.append(Reverted(path, action, "reverted", "undone already (by an earlier --undo)"))
            continue
        if isinstance(e.get("undo"), str):
            out.append(Reverted(path, action, "not-reverted", e["undo"]))
            continue
        if os.path.realpath(os.path.dirname(path)) != os.path.dirname(path):
            out.append(Reverted(path, action, "not-reverted", "a symbolic link now stands in its path: not followed"))
            continue
        try:
            out.append(_undo_one(e, journal))
        except OSError as err:
            out.append(Reverted(path, action, "not-reverted", f"failed: {err.strerror or err}"))
    return out


def _undo_one(e: dict, journal: Journal) -> Reverted:
    path, action = os.fsdecode(jvalue(e, "path") or b""), e.get("action", "")
    after = jvalue(e, "after") or b""
    if e.get("effect") == MOVED:
        dest = os.fsdecode(after)
        if os.path.lexists(path) or not os.path.isdir(dest):
            return Reverted(path, action, "not-reverted", f"{printable(dest)} is gone or {printable(path)} exists again")
        _journal_undo(journal, e, dest, after, os.fsencode(path))
        move_tree(dest, path)
        return Reverted(path, action, "reverted", f"moved back from {printable(dest)}")
    now = read_small(None, path)  # never a FIFO, never through a link
    if now != after:
        if e.get("outcome") is None:  # the run died before the change: nothing to revert
            return Reverted(path, action, "reverted", "never written (the run stopped before it)")
        return Reverted(path, action, "not-reverted", "the file is gone" if now is None else f"changed since (now {now!r})")
    before = jvalue(e, "before")
    _journal_undo(journal, e, path, after, before)
    if before is None:
        os.unlink(path)  # it did not exist before the repair wrote it
        fsync_dir(os.path.dirname(path))
    else:
        directory = os.path.dirname(path)
        fd = os.open(directory, OPEN_DIR)
        try:
            mode = e.get("mode")
            tmp = write_temp(fd, before, mode if isinstance(mode, int) else 0o644)
            os.rename(tmp, os.path.basename(path), src_dir_fd=fd, dst_dir_fd=fd)
            os.fsync(fd)
        finally:
            os.close(fd)
    return Reverted(path, action, "reverted", "restored")


def _journal_undo(journal: Journal, e: dict, path: str, before: bytes | None, after: bytes | None) -> None:
    journal.write(id=uuid.uuid4().hex, phase="done", action=f"undo-{e['action']}",
                  **jfield("path", os.fsencode(path)), **jfield("before", before), **jfield("after", after),
                  reason=f"undo of {e['id']}", undoes=e["id"], container=e.get("container"),
                  process=e.get("process"))
