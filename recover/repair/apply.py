"""Carrying a repair out: under a lock, journalled, each action re-verified by its generation just
before it acts through the primitives here, which know no generation.

Files are published without ever clobbering one (temp file, fsync, link, unlink, fsync dir) or
replaced only while they still hold what the plan saw (temp file, fsync, re-read, rename, fsync
dir); a signal goes through a pidfd opened before the final identity check, so a reused pid is
never signalled; an intent is journalled before every change and its outcome after, so that a
crash at any step leaves the root and the journal consistent, and `--undo` can revert it.
"""

from __future__ import annotations

import os
import select
import signal
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace

from ..classify import is_default_root
from ..fsread import OPEN_DIR, dir_below, json_text, printable
from ..host import read_stat
from ..judge import ContainerJudgement
from .files import fault, fsync_dir, move_tree, read_small, write_temp
from .journal import MOVED, Journal, jfield
from .plan import Action, Options, Repairer, run

KILL_TIMEOUT_S = 5.0


class Refused(Exception):
    """repair will not write at all (exit 4)."""


class CannotWrite(Exception):
    """The lock file or the journal cannot be created: a user error (exit 2), nothing written."""


class Skip(Exception):
    """Re-verification found the target changed: the action is skipped, nothing written."""


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


def own_procfs(proc_root: str) -> bool:
    """Whether proc_root is the procfs of our own pid namespace (its `self` is us)."""
    try:
        return os.readlink(os.path.join(proc_root, "self")) == str(os.getpid())
    except OSError:
        return False


def write_refusal(judged: Iterable[ContainerJudgement], root_real: str, proc_root: str, live: bool,
                  image_root: str | None) -> str | None:
    """Why repair must not write in this root at all, or None (--force never overrides it): every
    change is re-verified on the live host, in the root the daemon will read, by its own path.  A
    copy is evidence, not the daemon's root (its `orphaned` processes may be the live root's
    healthy ones); beside a captured proc dir nothing can be re-verified; a root read through
    /proc/<pid>/root is another mount namespace's, whose paths mean other files here."""
    if image_root is not None:
        return (f"{root_real} is read inside {image_root} (another mount namespace's view, or an image): repair "
                "writes only where recover runs (run it in that namespace: nsenter -t PID -m)")
    if not live or not own_procfs(proc_root):
        return (f"{proc_root} is not this host's own live /proc: repair re-verifies every target on the live host, "
                "never beside a captured proc dir")
    processes = [p for c in judged for p in c.processes]
    if copies := sorted({p.other_root for p in processes if p.other_root is not None}):
        return f"{root_real} is a copy: its shims work in {printable(copies[0])}; repair that root"
    return None


def kill_refusal(judged: Iterable[ContainerJudgement], root_real: str, proc_root: str, shim_works_here: bool,
                 force: bool) -> str | None:
    """Why repair must not signal from this root, or None.  Signals act on the live root only: one
    a live shim works in (`shim_works_here`: told by the identity of its working dir, never by a
    path), judged on this host's own /proc (write_refusal says the rest)."""
    if not own_procfs(proc_root):
        return f"{proc_root} is not this host's own live /proc: kills are never made from a captured proc dir"
    if force or is_default_root(root_real) or shim_works_here:
        return None
    return (f"cannot tell that {root_real} is the live root (it is no default root and no live shim works "
            "in it): --force to kill anyway")


class Applier:
    """Carries a plan out on one root: the primitives a generation's repairer acts through, each
    journalled.  Every action ends applied, skipped or failed; none raises."""

    def __init__(self, root_real: str, proc_root: str, journal: Journal):
        self.root_real = root_real
        self.proc_root = proc_root
        self.journal = journal
        self._root_fd = os.open(root_real, OPEN_DIR)

    def close(self) -> None:
        os.close(self._root_fd)

    def apply(self, repairer: Repairer, action: Action, opts: Options) -> Action:
        try:
            return repairer.carry_out(self, action, opts)
        except Skip as e:
            return replace(action, result="skipped", detail=str(e))
        except OSError as e:
            return replace(action, result="failed", detail=f"{e.strerror or e}")

    # where

    def in_root(self, *parts: str):
        """A dir below the root, opened from the root's fd without following a link (a context
        manager giving its fd); its path is root_path(*parts)."""
        return dir_below(self._root_fd, *parts)

    def root_path(self, *parts: str) -> str:
        return os.path.join(self.root_real, *parts)

    @staticmethod
    @contextmanager
    def at(directory: str) -> Iterator[int]:
        """A dir outside the root by its path (the daemon's root dir: CRI's checkpoints), whose
        last component is never a link; files are then opened relative to it, never followed."""
        fd = os.open(directory, OPEN_DIR)
        try:
            yield fd
        finally:
            os.close(fd)

    # what

    def publish(self, a: Action, fd: int, directory: str, name: str, data: bytes, *, mode: int = 0o644,
                undo: str | None = None) -> None:
        """Create `name` in the dir `fd` (whose path is `directory`) holding `data`, atomically,
        never replacing a file that exists.  undo: why the change cannot be reverted, if not."""
        entry = self.intent(a, os.path.join(directory, name), None, data, undo=undo)
        tmp = write_temp(fd, data, mode)
        fault(f"{name}-before-link")
        try:
            os.link(tmp, name, src_dir_fd=fd, dst_dir_fd=fd, follow_symlinks=False)
        except FileExistsError:
            os.unlink(tmp, dir_fd=fd)
            now = read_small(fd, name)
            self.outcome(entry, "skipped", f"{name} appeared meanwhile: {now!r}")
            raise Skip(f"{name} appeared meanwhile (now {printable(repr(now))}); left as it is") from None
        fault(f"{name}-before-unlink")
        os.unlink(tmp, dir_fd=fd)
        os.fsync(fd)
        self.outcome(entry, "done")

    def replace(self, a: Action, fd: int, directory: str, name: str, before: bytes, data: bytes, *,
                mode: int = 0o644) -> None:
        """Replace `name`, which holds `before` (journalled), by `data`: temp file, fsync, re-verify
        at the last moment, rename, fsync the dir."""
        entry = self.intent(a, os.path.join(directory, name), before, data, mode=mode)
        tmp = write_temp(fd, data, mode)
        fault("rewrite-before-rename")
        if read_small(fd, name) != before:
            os.unlink(tmp, dir_fd=fd)
            self.outcome(entry, "skipped", f"{name} changed while rewriting it")
            raise Skip(f"{name} changed while rewriting it")
        os.rename(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
        os.fsync(fd)
        self.outcome(entry, "done")

    def signal(self, a: Action, pid: int, start_ticks: int | None, ppid: int | None, sig: int, *,
               wait: float | None = None, stopped: bool = False, undo: str = "a signal cannot be undone") -> bool:
        """Send `sig` to pid through a pidfd, after checking, with the process pinned, that it is
        still the one the plan saw (start ticks, and parent when given) and has not exited (or, with
        stopped, that it is stopped).  With wait: whether it died within that many seconds.
        Journalled (a signal cannot be undone).  Skip when the process is not the one seen."""
        if not own_procfs(self.proc_root):
            # the identity check must read the same process table the pidfd pins
            raise Skip(f"{self.proc_root} is not this process's own /proc: no signal, whatever --force says")
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            raise Skip(f"pid {pid} is gone already") from None
        try:
            now = read_stat(self.proc_root, pid)  # identity checked AFTER the pidfd pins the process
            if (now is None or now.starttime != start_ticks or (ppid is not None and now.ppid != ppid)
                    or now.exited or (stopped and now.state not in ("T", "t"))):
                raise Skip(f"pid {pid} changed since the plan (start, parent or state)")
            name = signal.Signals(sig).name
            entry = self.intent(a, f"/proc/{pid}", b"alive", name.encode(), undo=undo)
            signal.pidfd_send_signal(pidfd, sig)
            if wait is None:
                self.outcome(entry, "done")
                return True
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            died = bool(poller.poll(wait * 1000))
            self.outcome(entry, "done", "" if died else f"still alive {wait:g} s after {name}")
            return died
        finally:
            os.close(pidfd)

    def move(self, a: Action, src: str, dest: str) -> None:
        """Move a dir out whole (rename, or copy, verify and remove across filesystems)."""
        entry = self.intent(a, src, None, os.fsencode(dest), effect=MOVED)
        move_tree(src, dest)
        fsync_dir(os.path.dirname(src))
        self.outcome(entry, "done")

    # the journal

    def intent(self, a: Action, path: str, before: bytes | None, after: bytes, **more: object) -> str:
        entry = uuid.uuid4().hex
        self.journal.write(id=entry, phase="intent", action=a.kind, **jfield("path", os.fsencode(path)),
                           **jfield("before", before), **jfield("after", after), reason=a.reason,
                           container=json_text(a.container),
                           process=None if a.process is None else json_text(a.process),
                           **{k: v for k, v in more.items() if v is not None})
        return entry

    def outcome(self, entry: str, phase: str, detail: str = "") -> None:
        self.journal.write(id=entry, phase=phase, detail=detail)


def apply_plan(repairer: Repairer, containers: Iterable[ContainerJudgement], root_real: str, proc_root: str,
               opts: Options, journal_path: str, on_action: Callable[[Action], None] | None = None) -> list[Action]:
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
            for action in run(repairer, containers, opts, applier):
                actions.append(action)
                if on_action is not None:
                    on_action(action)
            return actions
        finally:
            applier.close()
            log.close()
    finally:
        os.close(lock)
