"""Repair: plan (pure, from judgements) then apply (re-verify, publish, journal).

The plan is data: a dry run IS the plan.  Applying an action re-verifies its target against a
fresh read of /proc first, publishes files without ever clobbering one (temp file, fsync,
link, unlink, fsync dir), signals only through a pidfd opened before the final identity check,
and writes a journal entry before (intent) and after (outcome) every change, so that a crash at
any step leaves the root and the journal consistent, and `--undo` can revert what was done.
"""

from __future__ import annotations

import errno
import os
import re
import select
import shutil
import signal
import stat
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Literal

import orjson

from .classify import is_default_root
from .host import read_stat, wait_status_to_exit
from .judge import ContainerJudgement, ProcessJudgement
from .fsread import OPEN_DIR, dir_below, json_text, printable
from .generations.containerd_0_2 import files as layout

ActionKind = Literal["write-exit-status", "rewrite-exit-status", "kill-orphan", "rewrite-pid",
                     "quarantine", "none"]
Result = Literal["planned", "applied", "skipped", "failed", "info"]

KILL_TIMEOUT_S = 5.0
FAULT_ENV = "RECOVER_FAULT"  # test hook: "<step>" makes apply SIGKILL itself at that step


@dataclass(frozen=True, slots=True)
class Action:
    container: str
    process: str | None
    kind: ActionKind
    value: str | None  # what is written (a status, a pid) or where a dir goes
    reason: str
    # what the plan saw, re-checked just before acting
    pid: int | None = None
    start_ticks: int | None = None
    ppid: int | None = None
    result: Result = "planned"
    detail: str = ""

    @property
    def rel(self) -> str:
        return self.container if self.process is None else f"{self.container}/{self.process}"


@dataclass(frozen=True, slots=True)
class Options:
    kill_orphans: bool = False
    quarantine: str | None = None
    force: bool = False


# --- plan ----------------------------------------------------------------------------------

def plan_repair(containers: Iterable[ContainerJudgement], opts: Options) -> Iterator[Action]:
    """The actions for every judged container, in order.  Pure."""
    for c in containers:
        drop = c.containerd_would == "drop-container" and not _saved_by_rewrite_pid(c)
        for p in c.processes:
            yield from _plan_process(c, p, opts, drop)
        if drop:
            yield _plan_quarantine(c, opts)


def _saved_by_rewrite_pid(c: ContainerJudgement) -> bool:
    """Dropped only because no pid file loads (rule 2), and this plan rewrites one: once it is
    written the process loads and containerd keeps the container, so it is repaired, not moved."""
    return any(f.code == "R002" for f in c.findings) and any(
        p.pid_from_shim and p.verdict in ("running", "orphaned") for p in c.processes)


def _plan_process(c: ContainerJudgement, p: ProcessJudgement, opts: Options, drop: bool) -> Iterator[Action]:
    def act(kind: ActionKind, value: object, reason: str, **seen) -> Action:
        return Action(c.id, p.id, kind, None if value is None else str(value), reason, **seen)

    seen = {"pid": p.pid, "start_ticks": p.observed_start, "ppid": p.ppid}
    codes = {f.code for f in p.findings}
    if p.containerd_would == "use-exit-status" and p.verdict != "exited":
        # a status the process cannot have (F039), or beside a process that still runs (R010)
        yield act("none", None, f"exitStatus holds a status containerd reads as valid, but the verdict is "
                  f"{p.verdict}: a valid exitStatus is never overwritten; move it out by hand if containerd "
                  "must not take it")
    elif p.verdict in ("vanished", "pid-reused") and not drop:
        why = "the process is gone" if p.verdict == "vanished" else f"pid {p.pid} is now another process"
        # start_ticks: the RECORDED process's, re-checked to be still gone before writing
        yield act("write-exit-status", 255, f"{why} and its exit was missed: 255, as containerd would record "
                  "(without ever signalling the pid)", pid=p.pid, start_ticks=p.recorded_start)
    elif p.verdict == "zombie" and p.exit_status is not None and not drop:
        if p.shim_state in ("stopped", "gone"):
            yield act("write-exit-status", p.exit_status, f"the process exited with {p.exit_status} (stat field 52); "
                      f"its shim is {p.shim_state} and will not record it", **seen)
        else:
            yield act("none", None, "a zombie whose shim is alive: the shim reaps it and records the status itself")
    elif p.verdict == "exited" and codes & {"F036", "F037"} and not drop:
        yield act("rewrite-exit-status", p.exit_status, "containerd cannot parse the recorded status: rewrite it "
                  "as a bare decimal, the same value")
    elif p.verdict == "orphaned":
        if opts.kill_orphans:
            yield act("kill-orphan", 137, "its shim is gone: SIGKILL through a pidfd, then record 137 as "
                      "containerd would", **seen)
        else:
            later = {"kill-record-137": "containerd would SIGKILL it on restart",
                     "keep-running": "containerd would never notice it (its parent is not pid 1) and never "
                                     "record its exit"}.get(p.containerd_would or "", "nothing records its exit")
            yield act("none", None, f"left running (no --kill-orphans): {later}")
    if p.pid_from_shim and p.verdict in ("running", "orphaned"):
        yield act("rewrite-pid", p.pid, "the pid file is missing but the shim's only child is the process: "
                  "rewrite pid and starttime so that containerd loads it", **seen)


def _plan_quarantine(c: ContainerJudgement, opts: Options) -> Action:
    live = [p for p in c.processes if p.verdict in ("running", "orphaned", "zombie")]
    running = [p for p in live if p.verdict == "running"]
    reason = "containerd would delete this container dir on restart: move it out whole, keep the evidence"
    if opts.quarantine is None:
        return Action(c.id, None, "none", None, f"{reason} (give --quarantine DIR)")
    if live and not opts.force and (running or not opts.kill_orphans):
        names = ", ".join(p.id for p in live)
        need = "--force" if running else "--kill-orphans (kills them first) or --force"
        return Action(c.id, None, "none", None, f"{reason}; not moved: {names} still alive, needs {need}")
    return Action(c.id, None, "quarantine", opts.quarantine, reason)


# --- apply ---------------------------------------------------------------------------------

class Refused(Exception):
    """repair will not write at all (exit 4)."""


class CannotWrite(Exception):
    """The lock file or the journal cannot be created: a user error (exit 2), nothing written."""


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


def default_journal(root_real: str) -> str:
    parent, name = os.path.split(root_real.rstrip("/"))
    return os.path.join(parent, f"{name}.recover-journal.jsonl")


def lock_path(root_real: str) -> str:
    parent, name = os.path.split(root_real.rstrip("/"))
    return os.path.join(parent, f".{name}.recover.lock")


def take_lock(root_real: str) -> int:
    """An exclusive flock on a file outside the root; Refused if another repair holds it."""
    import fcntl

    fd = os.open(lock_path(root_real), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise Refused(f"another recover repair holds {lock_path(root_real)}") from None
    return fd


def kill_refusal(judged: Iterable[ContainerJudgement], root_real: str, proc_root: str, shim_works_here: bool,
                 force: bool) -> str | None:
    """Why repair must not kill from this root, or None.  Kills act on the live root only: one a
    live shim works in (`shim_works_here`: told by the identity of its working dir, never by a
    path), judged on this host's own /proc.  A copy is evidence, not the daemon's root: its
    `orphaned` processes may be the live root's healthy ones."""
    if not own_procfs(proc_root):
        return f"{proc_root} is not this host's own live /proc: kills are never made from a captured proc dir"
    processes = [p for c in judged for p in c.processes]
    if copies := sorted({p.other_root for p in processes if p.other_root is not None}):
        return (f"{root_real} is a copy: its shims work in {printable(copies[0])}; repair that root to kill, "
                "or drop --kill-orphans to write files here")
    if force or is_default_root(root_real) or shim_works_here:
        return None
    return (f"cannot tell that {root_real} is the live root (it is no default root and no live shim works "
            "in it): --force to kill anyway")


def own_procfs(proc_root: str) -> bool:
    """Whether proc_root is the procfs of our own pid namespace (its `self` is us)."""
    try:
        return os.readlink(os.path.join(proc_root, "self")) == str(os.getpid())
    except OSError:
        return False


def _fault(step: str) -> None:
    if os.environ.get(FAULT_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


class Applier:
    """Carries out a plan on one root.  Every action ends applied, skipped or failed; none raises."""

    def __init__(self, root_real: str, proc_root: str, journal: Journal):
        self.root_real = root_real
        self.proc_root = proc_root
        self.journal = journal
        self._root_fd = os.open(root_real, OPEN_DIR)

    def close(self) -> None:
        os.close(self._root_fd)

    def clean_temp_files(self, c: ContainerJudgement) -> None:
        """Remove what an interrupted run left: temp files are never state."""
        for p in c.processes:
            if not p.temp_files:
                continue
            try:
                with self._process_dir(c.id, p.id) as pfd:
                    for name in p.temp_files:
                        if name.startswith(layout.RECOVER_TEMP_PREFIX):
                            try:
                                os.unlink(name, dir_fd=pfd)
                            except FileNotFoundError:
                                pass
            except OSError:
                continue

    def apply(self, action: Action) -> Action:
        handler = {"write-exit-status": self._write_exit_status, "rewrite-exit-status": self._rewrite_exit_status,
                   "kill-orphan": self._kill_orphan, "rewrite-pid": self._rewrite_pid,
                   "quarantine": self._quarantine}[action.kind]
        try:
            return handler(action)
        except _Skip as e:
            return replace(action, result="skipped", detail=str(e))
        except OSError as e:
            return replace(action, result="failed", detail=f"{e.strerror or e}")

    # each handler: verify, journal intent, change, journal outcome

    def _write_exit_status(self, a: Action) -> Action:
        if a.start_ticks is not None and a.pid is not None:
            now = read_stat(self.proc_root, a.pid)
            if a.value != "255":  # a zombie's status: it must still be that zombie, unreaped
                if now is None or now.starttime != a.start_ticks or not now.exited:
                    raise _Skip(f"pid {a.pid} is no longer the same unreaped zombie")
                if now.exit_code is not None and str(wait_status_to_exit(now.exit_code)) != a.value:
                    raise _Skip(f"pid {a.pid}'s exit status changed")
            elif now is not None and now.starttime == a.start_ticks and not now.exited:
                raise _Skip(f"pid {a.pid} holds a live process with the recorded start time")
        self._publish(a, layout.EXIT_STATUS_FILE, a.value.encode())
        return replace(a, result="applied")

    def _rewrite_exit_status(self, a: Action) -> Action:
        with self._process_dir(a.container, a.process) as pfd:
            before = _read_small(pfd, layout.EXIT_STATUS_FILE)
            if before is None or before == a.value.encode() or layout.go_parse_uint32(before) is not None:
                raise _Skip("exitStatus changed since the plan (and a valid status is never overwritten)")
            self._replace(a, pfd, layout.EXIT_STATUS_FILE, before, a.value.encode())
        return replace(a, result="applied")

    def _kill_orphan(self, a: Action) -> Action:
        assert a.pid is not None
        if not own_procfs(self.proc_root):
            # the identity check must read the same process table the pidfd pins
            raise _Skip(f"{self.proc_root} is not this process's own /proc: no kill, whatever --force says")
        try:
            pidfd = os.pidfd_open(a.pid)
        except ProcessLookupError:
            raise _Skip(f"pid {a.pid} is gone already") from None
        try:
            now = read_stat(self.proc_root, a.pid)  # identity checked AFTER the pidfd pins the process
            if now is None or now.starttime != a.start_ticks or now.ppid != a.ppid or now.exited:
                raise _Skip(f"pid {a.pid} changed since the plan (start, parent or state)")
            entry = self._intent(replace(a, kind="kill-orphan"), f"/proc/{a.pid}", b"alive", b"SIGKILL")
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            if not poller.poll(KILL_TIMEOUT_S * 1000):
                self._outcome(entry, "failed", "still alive after SIGKILL (frozen?)")
                return replace(a, result="failed", detail=f"pid {a.pid} did not die within {KILL_TIMEOUT_S} s")
            self._outcome(entry, "done")
        finally:
            os.close(pidfd)
        self._publish(a, layout.EXIT_STATUS_FILE, b"137")
        return replace(a, result="applied")

    def _rewrite_pid(self, a: Action) -> Action:
        assert a.pid is not None
        now = read_stat(self.proc_root, a.pid)
        if now is None or now.starttime != a.start_ticks or now.ppid != a.ppid:
            raise _Skip(f"pid {a.pid} is no longer the shim's child it was")
        # starttime first: a run that dies between the two leaves no pid file, so that the next run
        # plans this action again and finishes it (the other order would leave starttime unwritten)
        self._restore(a, layout.STARTTIME_FILE, str(now.starttime).encode())
        self._restore(a, layout.PID_FILE, str(a.pid).encode())
        return replace(a, result="applied")

    def _restore(self, a: Action, name: str, data: bytes) -> None:
        """Publish `name`; or, when it holds what containerd cannot use (empty, NULs, a newline),
        replace it, journalling what it held.  A decimal already there is kept if right, else skipped."""
        with self._process_dir(a.container, a.process) as pfd:
            try:
                os.stat(name, dir_fd=pfd, follow_symlinks=False)
            except FileNotFoundError:
                pass
            else:
                before = _read_small(pfd, name)
                if before == data:
                    return
                if before is None or re.fullmatch(rb"[0-9]+", before):
                    raise _Skip(f"{name} holds {printable(repr(before))} now; left as it is")
                self._replace(a, pfd, name, before, data)
                return
        self._publish(a, name, data)

    def _quarantine(self, a: Action) -> Action:
        assert a.value is not None
        os.makedirs(a.value, exist_ok=True)
        dest = _free_name(a.value, a.container)
        src = os.path.join(self.root_real, a.container)
        if not os.path.isdir(src) or os.path.islink(src):
            raise _Skip("the container dir is gone already")
        entry = self._intent(a, "", None, os.fsencode(dest), path=src)
        move_tree(src, dest)
        _fsync_dir(os.path.dirname(src))
        self._outcome(entry, "done")
        return replace(a, result="applied", detail=f"moved to {printable(dest)}")

    # publishing and journalling

    def _replace(self, a: Action, pfd: int, name: str, before: bytes, data: bytes) -> None:
        """Replace `name`, which holds `before` (journalled), by `data`: temp file, fsync, re-verify
        at the last moment, rename, fsync the dir."""
        entry = self._intent(a, name, before, data)
        tmp = _write_temp(pfd, data)
        _fault("rewrite-before-rename")
        if _read_small(pfd, name) != before:
            os.unlink(tmp, dir_fd=pfd)
            self._outcome(entry, "skipped", f"{name} changed while rewriting it")
            raise _Skip(f"{name} changed while rewriting it")
        os.rename(tmp, name, src_dir_fd=pfd, dst_dir_fd=pfd)
        os.fsync(pfd)
        self._outcome(entry, "done")

    def _publish(self, a: Action, name: str, data: bytes) -> None:
        """Create `name` with `data` atomically, never replacing a file that exists."""
        with self._process_dir(a.container, a.process) as pfd:
            entry = self._intent(a, name, None, data)
            tmp = _write_temp(pfd, data)
            _fault(f"{name}-before-link")
            try:
                os.link(tmp, name, src_dir_fd=pfd, dst_dir_fd=pfd, follow_symlinks=False)
            except FileExistsError:
                os.unlink(tmp, dir_fd=pfd)
                now = _read_small(pfd, name)
                self._outcome(entry, "skipped", f"{name} appeared meanwhile: {now!r}")
                raise _Skip(f"{name} appeared meanwhile (now {printable(repr(now))}); left as it is") from None
            _fault(f"{name}-before-unlink")
            os.unlink(tmp, dir_fd=pfd)
            os.fsync(pfd)
            self._outcome(entry, "done")

    def _intent(self, a: Action, name: str, before: bytes | None, after: bytes, path: str | None = None) -> str:
        entry = uuid.uuid4().hex
        path = path or os.path.join(self.root_real, a.container, a.process or "", name)
        self.journal.write(id=entry, phase="intent", action=a.kind, **_jfield("path", os.fsencode(path)),
                           **_jfield("before", before), **_jfield("after", after), reason=a.reason,
                           container=json_text(a.container),
                           process=None if a.process is None else json_text(a.process))
        return entry

    def _outcome(self, entry: str, phase: str, detail: str = "") -> None:
        self.journal.write(id=entry, phase=phase, detail=detail)

    def _process_dir(self, container: str, process: str | None):
        """A process dir opened from the root fd without following links (a context manager)."""
        return dir_below(self._root_fd, container, *([process] if process else []))


class _Skip(Exception):
    """Re-verification found the target changed: the action is skipped, nothing written."""


def _write_temp(dir_fd: int, data: bytes) -> str:
    name = f"{layout.RECOVER_TEMP_PREFIX}{uuid.uuid4().hex[:12]}"
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dir_fd)
    try:
        _fault("temp-partial")  # dies with an empty temp file: must never be read as state
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return name


def _read_small(dir_fd: int | None, name: str) -> bytes | None:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode):
            return None
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        return os.read(fd, 4096)
    finally:
        os.close(fd)


def _jfield(name: str, data: bytes | None) -> dict[str, str | None]:
    """A journal field: its text; and, when the bytes are not UTF-8 (JSON holds only text), the
    exact bytes in hex as `<name>_hex`, so that undo restores them byte for byte."""
    if data is None:
        return {name: None}
    try:
        return {name: data.decode("utf-8")}
    except UnicodeDecodeError:
        return {name: data.decode("utf-8", "backslashreplace"), f"{name}_hex": data.hex()}


def _jvalue(e: dict, name: str) -> bytes | None:
    """The exact bytes of a journal field written by _jfield."""
    if isinstance(e.get(f"{name}_hex"), str):
        return bytes.fromhex(e[f"{name}_hex"])
    value = e.get(name)
    return None if value is None else str(value).encode("utf-8", "surrogateescape")


def _free_name(directory: str, name: str) -> str:
    dest = os.path.join(directory, name)
    n = 1
    while os.path.lexists(dest):
        dest = os.path.join(directory, f"{name}.{n}")
        n += 1
    return dest


def _fsync_dir(path: str) -> None:
    fd = os.open(path, OPEN_DIR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def move_tree(src: str, dest: str) -> None:
    """rename on one filesystem; otherwise copy (FIFOs recreated, links kept, nothing opened but
    regular files), fsync, verify, then remove the source."""
    try:
        os.rename(src, dest)
        _fsync_dir(os.path.dirname(dest))
        return
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
    shutil.copytree(src, dest, symlinks=True, copy_function=_copy_entry)
    for d, _, files in os.walk(dest):
        for n in files:
            p = os.path.join(d, n)
            if os.path.isfile(p) and not os.path.islink(p):
                with open(p, "rb") as f:
                    os.fsync(f.fileno())
        _fsync_dir(d)
    if _tree(src) != _tree(dest):
        raise OSError(errno.EIO, f"the copy of {src} differs from the original; original kept")
    shutil.rmtree(src)


def _copy_entry(src: str, dst: str) -> None:
    mode = os.lstat(src).st_mode
    if stat.S_ISFIFO(mode):
        os.mkfifo(dst, stat.S_IMODE(mode))
    elif stat.S_ISREG(mode):
        shutil.copy2(src, dst)
    # sockets and devices are not copied: they are not evidence, and opening them is unsafe


def _tree(top: str) -> dict[str, tuple[int, bytes | None]]:
    out = {}
    for d, dirs, files in os.walk(top):
        for n in dirs + files:
            p = os.path.join(d, n)
            mode = os.lstat(p).st_mode
            if stat.S_ISSOCK(mode) or stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                continue
            data = None
            if stat.S_ISREG(mode):
                with open(p, "rb") as f:
                    data = f.read()
            elif stat.S_ISLNK(mode):
                data = os.readlink(p).encode()
            out[os.path.relpath(p, top)] = (stat.S_IFMT(mode), data)
    return out


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
        path = os.fsdecode(_jvalue(e, "path") or b"")
        action = e.get("action", "")
        if e.get("outcome") not in (None, "done"):
            continue  # skipped or failed: nothing was changed
        if entry_id in undone:
            out.append(Reverted(path, action, "reverted", "undone already (by an earlier --undo)"))
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
    path, action = os.fsdecode(_jvalue(e, "path") or b""), e.get("action", "")
    after = _jvalue(e, "after") or b""
    if action == "kill-orphan":
        what = ("kept: it records a kill that cannot be undone" if path.endswith(layout.EXIT_STATUS_FILE)
                else "a killed process cannot be revived")
        return Reverted(path, action, "not-reverted", what)
    if action == "quarantine":
        dest = os.fsdecode(after)
        if os.path.lexists(path) or not os.path.isdir(dest):
            return Reverted(path, action, "not-reverted", f"{printable(dest)} is gone or {printable(path)} exists again")
        _journal_undo(journal, e, dest, after, os.fsencode(path))
        move_tree(dest, path)
        return Reverted(path, action, "reverted", f"moved back from {printable(dest)}")
    now = _read_small(None, path)  # never a FIFO, never through a link
    if now != after:
        if e.get("outcome") is None:  # the run died before the change: nothing to revert
            return Reverted(path, action, "reverted", "never written (the run stopped before it)")
        return Reverted(path, action, "not-reverted", "the file is gone" if now is None else f"changed since (now {now!r})")
    before = _jvalue(e, "before")
    _journal_undo(journal, e, path, after, before)
    if before is None:
        os.unlink(path)  # it did not exist before the repair wrote it
        _fsync_dir(os.path.dirname(path))
    else:
        directory = os.path.dirname(path)
        fd = os.open(directory, OPEN_DIR)
        try:
            tmp = _write_temp(fd, before)
            os.rename(tmp, os.path.basename(path), src_dir_fd=fd, dst_dir_fd=fd)
            os.fsync(fd)
        finally:
            os.close(fd)
    return Reverted(path, action, "reverted", "restored")


def _journal_undo(journal: Journal, e: dict, path: str, before: bytes | None, after: bytes | None) -> None:
    journal.write(id=uuid.uuid4().hex, phase="done", action=f"undo-{e['action']}",
                  **_jfield("path", os.fsencode(path)), **_jfield("before", before), **_jfield("after", after),
                  reason=f"undo of {e['id']}", undoes=e["id"], container=e.get("container"),
                  process=e.get("process"))


# --- a whole run ---------------------------------------------------------------------------

def run(containers: Iterable[ContainerJudgement], opts: Options, applier: Applier | None) -> Iterator[Action]:
    """Plan each container and, with an applier, carry its actions out before the next container."""
    for c in containers:
        if applier is not None:
            applier.clean_temp_files(c)
        for action in plan_repair([c], opts):
            if action.kind == "none":
                yield replace(action, result="info")
            else:
                yield action if applier is None else applier.apply(action)


def apply_plan(containers: Iterable[ContainerJudgement], root_real: str, proc_root: str, opts: Options,
               journal_path: str, on_action: Callable[[Action], None] | None = None) -> list[Action]:
    """Carry the plan out under the lock, journalled: every action ends applied, skipped, failed
    or info.  Refused when another repair holds the lock (nothing is written then); a lock file or
    a journal that cannot be created is a CannotWrite naming it."""
    try:
        lock = take_lock(root_real)
    except OSError as e:
        raise CannotWrite(f"cannot create the lock file {lock_path(root_real)}: {e.strerror or e}") from None
    try:
        try:
            log = Journal(journal_path)
        except OSError as e:
            raise CannotWrite(f"--journal {journal_path}: {e.strerror or e}") from None
        applier = Applier(root_real, proc_root, log)
        try:
            actions = []
            for action in run(containers, opts, applier):
                actions.append(action)
                if on_action is not None:
                    on_action(action)
            return actions
        finally:
            applier.close()
            log.close()
    finally:
        os.close(lock)
