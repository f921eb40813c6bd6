"""Small process facts and chores for the lab (recover/generations/runtime_v2/lab): /proc/<pid>/stat, argv, mount
namespaces, signals, waiting with a deadline, cgroup removal, and the subreaper switch that
concurrent labs in one process share."""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SHIM = "containerd-shim-runc-v2"
PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37
POLL = 0.02


class HarnessError(RuntimeError):
    """The daemon or the namespace did not come up, or a ctr command failed."""


@dataclass(frozen=True)
class Stat:
    pid: int
    state: str  # R S D Z T t X ...
    ppid: int
    start: int  # field 22, start ticks since boot
    exit_code: int  # field 52: the wait status once exiting (a stopped task: its stop signal)
    flags: int  # field 9

    @property
    def exiting(self) -> bool:
        """PF_EXITING: killed, yet a pid namespace's init stays `S` until its children are reaped."""
        return bool(self.flags & 0x4)


def proc_stat(pid: int) -> Stat | None:
    """/proc/<pid>/stat parsed, or None when the pid is gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return None
    rest = data[data.rindex(b")") + 2:].split()
    return Stat(pid, rest[0].decode(), int(rest[1]), int(rest[19]), int(rest[49]), int(rest[6]))


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0")[:-1]]


def pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def alive(pid: int, start: int | None = None) -> bool:
    """The pid runs (not a zombie, not exiting), and is the same process when start ticks are
    given."""
    st = proc_stat(pid)
    return (st is not None and st.state not in ("Z", "X") and not st.exiting
            and (start is None or st.start == start))


def shim_args(argv: list[str]) -> dict[str, str] | None:
    """`-namespace`, `-id`, `-address` ... of a containerd-shim-runc-v2 argv, or None."""
    if not argv or os.path.basename(argv[0]) != SHIM:
        return None
    flags: dict[str, str] = {}
    i = 1
    while i < len(argv):
        a = argv[i]
        if a.startswith("-") and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
            flags[a.lstrip("-")] = argv[i + 1]
            i += 2
        else:
            flags[a.lstrip("-")] = ""
            i += 1
    return flags


def mount_ns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


def kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise HarnessError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(POLL)


def traps_sigterm(pid: int) -> bool:
    """The process has installed a SIGTERM handler (SigCgt bit 15): its shell ran `trap`."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    except OSError:
        pass
    return False


def remove_cgroup(top: Path) -> None:
    """rmdir a cgroup tree, deepest first; a just-killed task may take a moment to leave it."""
    deadline = time.monotonic() + 10
    for dirpath, _, _ in sorted(os.walk(top), key=lambda w: -len(w[0])):
        while True:
            try:
                os.rmdir(dirpath)
                break
            except FileNotFoundError:
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(POLL)


def is_static(path: Path) -> bool:
    """True when the ELF file has no PT_INTERP program header (no dynamic loader needed)."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2:  # 64-bit only: the packages are amd64/arm64
        return False
    order = "little" if data[5] == 1 else "big"
    phoff = int.from_bytes(data[0x20:0x28], order)
    phentsize = int.from_bytes(data[0x36:0x38], order)
    phnum = int.from_bytes(data[0x38:0x3A], order)
    for i in range(phnum):
        start = phoff + i * phentsize
        if int.from_bytes(data[start:start + 4], order) == 3:  # PT_INTERP
            return False
    return True


# ---------------------------------------------------------------- not a subreaper while labs run

def _prctl(option: int, arg) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, arg, 0, 0, 0) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


_subreaper_lock = threading.Lock()
_subreaper_users = 0
_subreaper_before = 0


def stop_being_subreaper() -> None:
    """While any lab of this process lives, the process is no subreaper.  Shims orphan
    themselves at start and must be re-parented to pid 1 as on a real host, not to a subreaper
    pytest may have become (tests/test_live.py does).  The flag is the process's: labs running
    in threads count themselves in, and the last one out puts back what was there."""
    global _subreaper_users, _subreaper_before
    with _subreaper_lock:
        if _subreaper_users == 0:
            out = ctypes.c_int(0)
            _prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(out))
            _subreaper_before = out.value
            _prctl(PR_SET_CHILD_SUBREAPER, 0)
        _subreaper_users += 1


def restore_subreaper() -> None:
    global _subreaper_users
    with _subreaper_lock:
        _subreaper_users -= 1
        if _subreaper_users == 0 and _subreaper_before:
            _prctl(PR_SET_CHILD_SUBREAPER, _subreaper_before)
