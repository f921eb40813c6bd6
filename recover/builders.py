"""What every builder of roots with live processes shares (the tests' and the demos'): processes
held through pidfds, a private scratch dir, a teardown that kills and reaps everything started,
also when a test fails; and a captured mini /proc laid out like the reference captures'.  Each
generation's builder (recover/generations/*/builder.py) writes its own root and starts its own
stand-in shims on top of this.  Linux only.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterable

PR_SET_CHILD_SUBREAPER = 36
INIT_ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"]
POLL = 0.005


def become_subreaper() -> None:
    """Make the calling process a child subreaper (orphans below it come back to it)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def _dumps(obj) -> bytes:
    # Go's encoding/json: compact, non-ASCII kept as is.
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def write_file(path: Path, value: int | bytes | str | dict | list) -> None:
    if isinstance(value, bool):
        raise TypeError("bool is not a file content: %r" % (value,))
    if isinstance(value, int):
        data = str(value).encode()
    elif isinstance(value, str):
        data = value.encode()
    elif isinstance(value, (dict, list)):
        data = _dumps(value)
    else:
        data = bytes(value)
    path.write_bytes(data)


def stat_fields(pid: int, proc_root: Path = Path("/proc")) -> list[str] | None:
    """Fields of /proc/<pid>/stat from field 3 (state) on, or None if gone."""
    try:
        data = (proc_root / str(pid) / "stat").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # comm may hold ") ": fields start after the LAST ")".
    return data[data.rindex(b")") + 2:].decode().split()


def stat_field(pid: int, n: int) -> str | None:
    f = stat_fields(pid)
    return None if f is None else f[n - 3]


def _wait_comm(pid: int, comm: bytes, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if Path("/proc/%d/comm" % pid).read_bytes().rstrip(b"\n") == comm:
                return
        except OSError:
            return
        time.sleep(0.001)


def pidfd_open(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (ProcessLookupError, OSError):
        return None


def pidfd_signal(fd: int | None, sig: int) -> bool:
    """Signal through a pidfd: never hits a reused pid. False if already gone."""
    if fd is None:
        return False
    try:
        signal.pidfd_send_signal(fd, sig)
        return True
    except (ProcessLookupError, OSError):
        return False


def reap_pidfd(fd: int | None, timeout: float) -> None:
    """Reap the pidfd's process if it is our child (re-parented to us); else no-op."""
    if fd is None:
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            r = os.waitid(os.P_PIDFD, fd, os.WEXITED | os.WNOHANG)
        except ChildProcessError:
            return  # not our child: its shim or another subreaper reaps it
        except OSError:
            return
        if r is not None:
            return
        if time.monotonic() > deadline:
            return
        time.sleep(POLL)


def wait_popen(p: subprocess.Popen, timeout: float) -> None:
    try:
        p.wait(timeout)
    except (subprocess.TimeoutExpired, OSError):
        pass


def kill_popen(p: subprocess.Popen) -> None:
    """SIGCONT (a stopped process) then SIGKILL a child of ours, and reap it."""
    try:
        if p.poll() is None:
            p.send_signal(signal.SIGCONT)
            p.kill()
    except OSError:
        pass
    wait_popen(p, 5.0)


def stop_popen(p: subprocess.Popen, timeout: float = 5.0) -> None:
    """SIGSTOP a child of ours (a hung shim) and wait until it is stopped: until then, a child of
    it dying would still be reaped."""
    p.send_signal(signal.SIGSTOP)
    wait_state(p.pid, "Tt", timeout)


def wait_state(pid: int, states: str, timeout: float = 5.0) -> str:
    """Poll /proc/<pid>/stat until its state is one of `states`; return it."""
    deadline = time.monotonic() + timeout
    while True:
        st = stat_field(pid, 3)
        if st is None:
            raise ProcessLookupError("process %d is gone (reaped)" % pid)
        if st in states:
            return st
        if time.monotonic() > deadline:
            raise TimeoutError("process %d state %s, wanted one of %r" % (pid, st, states))
        time.sleep(POLL)


def kill_session(fd: int | None, pid: int) -> None:
    """SIGKILL a container process and its session (setsid: sid == pid).  The session first, while
    the pidfd says the leader is alive or unreaped, so the number cannot belong to anyone else."""
    if pidfd_signal(fd, 0):
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
    pidfd_signal(fd, signal.SIGKILL)


def release_pidfd(fd: int | None, timeout: float = 2.0) -> None:
    """Reap the pidfd's process if it is ours, then close the pidfd."""
    reap_pidfd(fd, timeout)
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass


class ProcessOwner:
    """What every builder shares: unrelated processes it spawns, a private scratch dir, and a
    teardown that kills and reaps everything it started, also when a test fails.

    Use as a context manager.  A subclass kills what its own shims started in `_stop_started`,
    and adds each container process's session to `_sids` (its orphans are reaped at the end).
    """

    def __init__(self, work: Path | None = None) -> None:
        self.popens: list[subprocess.Popen] = []  # hung shims, unrelated processes
        self._sids: set[int] = set()
        self._work: Path | None = work  # private scratch dir (symlinks, shim stderr); default: a new temp dir

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.cleanup()

    def _stop_started(self) -> None:
        """Kill the shims and container processes this builder started."""

    def _workdir(self) -> Path:
        if self._work is None:
            self._work = Path(tempfile.mkdtemp(prefix="recover-builder-"))
        self._work.mkdir(exist_ok=True)
        return self._work

    def spawn_unrelated(self, args=("sleep", "1000"), *, comm: str | None = None) -> subprocess.Popen:
        """A live process under no shim (a pid reuser). comm: its /proc comm (cut to 15 by the kernel)."""
        args = [str(a) for a in args]
        executable = None
        if comm is not None:
            if not comm or "/" in comm or "\0" in comm or comm in (".", ".."):
                raise ValueError("comm cannot be a file name: %r" % comm)
            target = shutil.which(args[0])
            if target is None:
                raise FileNotFoundError(args[0])
            d = Path(tempfile.mkdtemp(dir=self._workdir()))
            # The kernel sets comm from the basename of the path given to
            # execve (the link), not its target; argv[0] stays as given so
            # multi-call binaries still work.
            (d / comm).symlink_to(target)
            executable = str(d / comm)
        p = subprocess.Popen(args, executable=executable, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, process_group=0)
        self.popens.append(p)
        # Popen returns after the exec has started but, in the kernel, a little
        # before comm is set: wait for it, so callers see the final comm.
        name = os.path.basename(executable or shutil.which(args[0]) or args[0])
        _wait_comm(p.pid, name.encode()[:15])
        return p

    def spawn_at_pid(self, pid: int, args=("sleep", "1000"), *, comm: str | None = None,
                     attempts: int = 20) -> subprocess.Popen | None:
        """Best effort: spawn_unrelated() with exactly this pid, via ns_last_pid.

        Needs CAP_SYS_ADMIN and a free pid; racy against other forks on the
        host, so it retries and returns None if it never got the pid.
        """
        path = "/proc/sys/kernel/ns_last_pid"
        for _ in range(attempts):
            if os.path.exists("/proc/%d" % pid):
                return None
            try:
                with open(path, "w") as f:
                    f.write(str(pid - 1))
            except OSError:
                return None
            p = self.spawn_unrelated(args, comm=comm)
            if p.pid == pid:
                return p
            p.kill()
            wait_popen(p, 5.0)
            self.popens.remove(p)
        return None

    # -- teardown -------------------------------------------------------------

    def cleanup(self) -> None:
        """SIGCONT+SIGKILL every shim and process started here, reap what is ours. Never raises."""
        try:
            self._stop_started()
        except Exception:
            pass
        for p in list(self.popens):
            try:
                kill_popen(p)
            except Exception:
                pass
        try:
            self._reap_sessions()
        except Exception:
            pass
        self.popens.clear()
        if self._work is not None:
            shutil.rmtree(self._work, ignore_errors=True)
            self._work = None

    def _reap_sessions(self) -> None:
        # Descendants of a container process (same session) were re-parented
        # to its shim, then to us: kill and reap those that are our children.
        # Only our own children are touched, so no pid can be a stranger.
        if not self._sids:
            return
        me = os.getpid()
        deadline = time.monotonic() + 2.0
        while True:
            left = []
            for ent in os.scandir("/proc"):
                if not ent.name.isdigit():
                    continue
                f = stat_fields(int(ent.name))
                if f is None or int(f[1]) != me or int(f[3]) not in self._sids:
                    continue
                left.append(int(ent.name))
            if not left:
                return
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)  # our unreaped child: pid cannot be reused
                    os.waitpid(pid, os.WNOHANG)
                except (ChildProcessError, ProcessLookupError, OSError):
                    pass
            if time.monotonic() > deadline:
                return
            time.sleep(POLL)


def capture_proc(dest: Path, pids: Iterable[int], *, proc_root: Path = Path("/proc"),
                 as_pid: dict[int, int] | None = None) -> Path:
    """Write a captured mini /proc laid out like the reference capture's proc/.

    dest/stat, dest/sys/kernel/random/boot_id, and per pid: stat, status,
    cgroup, cmdline, cwd (a link; skipped when unreadable, e.g. a zombie).
    A pid that does not exist is left out. as_pid={src: dst} also captures
    src's files under dst, with the pid rewritten in stat and status: "pid
    dst is now process src". Returns dest.
    """
    dest = Path(dest)
    proc_root = Path(proc_root)
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(proc_root / "stat", dest / "stat")
    bid = dest / "sys" / "kernel" / "random"
    bid.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(proc_root / "sys" / "kernel" / "random" / "boot_id", bid / "boot_id")

    plan: dict[int, int] = {int(p): int(p) for p in pids}  # dst -> src
    for src, dst in (as_pid or {}).items():
        plan[int(dst)] = int(src)
    for dst, src in plan.items():
        sdir = proc_root / str(src)
        try:
            stat = (sdir / "stat").read_bytes()
            status = (sdir / "status").read_bytes()
        except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
            continue
        files: dict[str, bytes] = {}
        for name in ("cgroup", "cmdline"):
            try:
                files[name] = (sdir / name).read_bytes()
            except OSError:
                pass
        if src != dst:
            stat = str(dst).encode() + stat[stat.index(b" "):]
            status = _rewrite_status(status, src, dst)
        files["stat"] = stat
        files["status"] = status
        ddir = dest / str(dst)
        if ddir.exists():
            shutil.rmtree(ddir)
        ddir.mkdir(parents=True)
        for name, data in files.items():
            (ddir / name).write_bytes(data)
        try:
            os.symlink(os.readlink(sdir / "cwd"), ddir / "cwd")
        except OSError:
            pass  # zombie, or not ours to read
    return dest


def _rewrite_status(status: bytes, src: int, dst: int) -> bytes:
    out = []
    for line in status.split(b"\n"):
        key, sep, rest = line.partition(b":")
        if sep and key in (b"Tgid", b"Pid", b"NSpid"):
            vals = rest.split()
            # Tgid stays when src is a thread of another process: that is the point.
            if vals and (key != b"Tgid" or vals[0] == str(src).encode()):
                vals[0] = str(dst).encode()
            line = key + b":\t" + b"\t".join(vals)
        out.append(line)
    return b"\n".join(out)
