"""Build containerd 0.2.x state roots, with real processes, for tests and the demo.

Linux only. Processes started here run under the stand-in shim
(`recover/shim/containerd-shim`). A caller that wants orphans to come back
to it (instead of pid 1) calls become_subreaper() first, like systemd or tini.
What any builder needs (processes through pidfds, teardown) is here too, shared
with the runtime-v2 builder (recover/builder_v2.py).
"""

from __future__ import annotations

import ctypes
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

SHIM_PATH: Path = Path(__file__).resolve().parent / "shim" / "containerd-shim"
SHIM_NAME = "containerd-shim"

PR_SET_CHILD_SUBREAPER = 36

# The capability set and env of the reference capture (containerd 0.2.9, runc 1.1).
_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
INIT_ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"]
_EXEC_ENV = ["PATH=/bin"]

POLL = 0.005


def become_subreaper() -> None:
    """Make the calling process a child subreaper (orphans below it come back to it)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def state_json(bundle: str, *, shim: str = SHIM_NAME, runtime: str = "runc") -> dict:
    """state.json as containerd 0.2.9 writes it (key order included)."""
    return {
        "bundle": str(bundle),
        "labels": None,
        "stdin": "",
        "stdout": "",
        "stderr": "",
        "runtime": runtime,
        "runtimeArgs": None,
        "shim": shim,
        "noPivotRoot": False,
    }


def process_json(args: list[str], *, exec_: bool = False, capabilities_as_list: bool = False) -> dict:
    """process.json as containerd 0.2.9 writes it (init or exec shape).

    capabilities_as_list gives the 0.2.8 shape: a list, which 0.2.9 cannot
    decode. It is the full list for execs too, since an empty list would be
    omitted by 0.2.8 (omitempty) and then decode fine.
    """
    fifo_dir = "/var/run/docker/libcontainerd/ctr-%d" % random.randrange(10**9, 4 * 10**9)
    if capabilities_as_list:
        caps: list | dict = list(_CAPS)
    elif exec_:
        caps = {}
    else:
        caps = {k: list(_CAPS) for k in ("bounding", "effective", "permitted", "ambient")}
    p: dict = {
        "consoleSize": {"height": 0, "width": 0},
        "user": {"uid": 0, "gid": 0},
        "args": [str(a) for a in args],
        "env": list(_EXEC_ENV if exec_ else INIT_ENV),
        "cwd": "/",
        "capabilities": caps,
    }
    if not exec_:
        p["rlimits"] = [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]
        p["noNewPrivileges"] = True
    p.update({
        "exec": bool(exec_),
        "containerdStdin": fifo_dir + "/stdin",
        "containerdStdout": fifo_dir + "/stdout",
        "containerdStderr": fifo_dir + "/stderr",
        "runtimeArgs": None,
        "noPivotRoot": False,
        "checkpoint": "",
        "rootUID": 0,
        "rootGID": 0,
    })
    return p


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


@dataclass
class LiveProcess:
    """A process started under the stand-in shim."""

    dir: Path
    shim: subprocess.Popen
    pid: int
    starttime: int | None = None  # field 22 as read at start
    _pidfd: int | None = field(default=None, repr=False)

    def kill_shim(self) -> None:
        """SIGKILL the shim and reap it: the child goes to the nearest subreaper."""
        kill_popen(self.shim)

    def stop_shim(self) -> None:
        """SIGSTOP the shim (a hung shim) and wait until it is stopped."""
        stop_popen(self.shim)

    def kill_child(self, sig: int = signal.SIGKILL) -> None:
        """Signal the container process (via pidfd, so never a reused pid)."""
        if not pidfd_signal(self._pidfd, sig):
            raise ProcessLookupError("container process %d is gone" % self.pid)

    def wait_exit_status(self, timeout: float = 5.0) -> bytes:
        """Poll until the shim has written exitStatus; return its bytes."""
        path = self.dir / "exitStatus"
        deadline = time.monotonic() + timeout
        while True:
            try:
                return path.read_bytes()
            except FileNotFoundError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("no exitStatus in %s" % self.dir)
            time.sleep(POLL)

    def wait_state(self, states: str, timeout: float = 5.0) -> str:
        """Poll /proc/<pid>/stat until its state is one of `states`; return it."""
        return wait_state(self.pid, states, timeout)

    def state(self) -> str | None:
        """Current /proc state letter of the container process, None if gone."""
        return stat_field(self.pid, 3)

    def _cleanup(self) -> None:
        kill_session(self._pidfd, self.pid)
        self.kill_shim()
        release_pidfd(self._pidfd)
        self._pidfd = None


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



class RootBuilder(ProcessOwner):
    """Write a containerd 0.2 state root under `root`; start real processes under stand-in shims.

    Use as a context manager: leaving it kills and reaps everything it started.
    """

    def __init__(self, root: Path, bundles: Path | None = None, work: Path | None = None):
        super().__init__(work)
        self.root = Path(root)
        self.bundles = Path(bundles) if bundles is not None else self.root.parent / "bundles"
        self.root.mkdir(parents=True, exist_ok=True)
        self.live: list[LiveProcess] = []
        self._containers: dict[str, dict] = {}

    def _stop_started(self) -> None:
        for lp in list(self.live):
            try:
                lp._cleanup()
            except Exception:
                pass
        self.live.clear()

    # -- static files -------------------------------------------------------

    def container(self, cid: str, *, shim: str = SHIM_NAME, runtime: str = "runc",
                  state: dict | bytes | None = None, bundle: bool = True) -> Path:
        """Write <root>/<cid>/state.json (bytes verbatim) and the bundle dir; return the container dir."""
        cdir = self.root / cid
        cdir.mkdir(parents=True, exist_ok=True)
        bpath = self.bundles / cid
        if state is None:
            state = state_json(str(bpath), shim=shim, runtime=runtime)
        info = {"bundle": str(bpath), "runtime": runtime, "shim": shim}
        if isinstance(state, dict):
            # A caller-made state.json decides what the shim gets as argv.
            for k in info:
                if isinstance(state.get(k), str) and state.get(k):
                    info[k] = state[k]
            write_file(cdir / "state.json", state)
        else:
            write_file(cdir / "state.json", state)
        self._containers[cid] = info
        if bundle:
            bpath.mkdir(parents=True, exist_ok=True)
            write_file(bpath / "config.json", {
                "ociVersion": "1.0.0",
                "process": {"terminal": False, "user": {"uid": 0, "gid": 0},
                            "args": ["sleep", "1000"], "env": INIT_ENV, "cwd": "/"},
                "root": {"path": "rootfs", "readonly": True},
                "hostname": cid[:12],
            })
        return cdir

    def write_process(self, cid: str, pid_id: str, *, args=("sleep", "1000"), exec_: bool | None = None,
                      pid: int | bytes | None = None, starttime: int | bytes | None = None,
                      exit_status: int | bytes | None = None, process: dict | bytes | None | bool = None,
                      fifos: bool = True, extra: dict[str, bytes] | None = None) -> Path:
        """Write a process dir with static files only; return it.

        ints are written as decimal without newline, bytes verbatim, None means
        absent. process=None writes process_json(args); process=False leaves it
        absent. fifos: create `exit` and `control`. extra: more files by name
        (e.g. {".pid": b"12", "shim-log.json": b"..."}).
        """
        if exec_ is None:
            exec_ = pid_id != "init"
        pdir = self.root / cid / pid_id
        pdir.mkdir(parents=True, exist_ok=True)
        if process is None:
            process = process_json(list(args), exec_=exec_)
        if process is not False:
            write_file(pdir / "process.json", process)
        for name, value in (("pid", pid), ("starttime", starttime), ("exitStatus", exit_status)):
            if value is not None:
                write_file(pdir / name, value)
        if fifos:
            for name in ("exit", "control"):
                if not os.path.lexists(pdir / name):
                    os.mkfifo(pdir / name, 0o700)
        for name, data in (extra or {}).items():
            write_file(pdir / name, data)
        return pdir

    # -- live processes -----------------------------------------------------

    def _shim_argv(self, cid: str) -> list[str]:
        if cid not in self._containers:
            if (self.root / cid / "state.json").exists():
                info = {"bundle": str(self.bundles / cid), "runtime": "runc", "shim": ""}
                try:
                    st = json.loads((self.root / cid / "state.json").read_bytes())
                    info.update({k: st[k] for k in ("bundle", "runtime", "shim")
                                 if isinstance(st.get(k), str) and st[k]})
                except (ValueError, OSError, AttributeError):
                    pass
                self._containers[cid] = info
            else:
                self.container(cid)
        info = self._containers[cid]
        return [sys.executable, self._shim_file(info.get("shim", "")), cid, info["bundle"], info["runtime"]]

    def _shim_file(self, shim: str) -> str:
        # recover recognises a shim by the basename state.json names: run the
        # stand-in through a link of that name (e.g. docker-containerd-shim).
        name = os.path.basename(shim)
        if not name or name == SHIM_PATH.name or name in (".", ".."):
            return str(SHIM_PATH)
        link = self._workdir() / "shim-bin" / name
        if not os.path.lexists(link):
            link.parent.mkdir(exist_ok=True)
            link.symlink_to(SHIM_PATH)
        return str(link)

    def _spawn_shim(self, cid: str, pid_id: str, env_extra: dict[str, str]) -> tuple[subprocess.Popen, Path]:
        argv = self._shim_argv(cid)
        pdir = self.root / cid / pid_id
        env = dict(os.environ)
        env.pop("RECOVER_SHIM_NO_START", None)
        env.pop("RECOVER_SHIM_NO_STARTTIME", None)
        env.update(env_extra)
        errlog = self._workdir() / ("shim-%s-%s.stderr" % (cid[:16], pid_id[:16]))
        with open(errlog, "ab") as err:
            # Own process group, as containerd starts its shims (Setpgid).
            p = subprocess.Popen(argv, cwd=pdir, env=env, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=err, process_group=0)
        return p, errlog

    def _process_dir(self, cid: str, pid_id: str, args, exec_: bool | None) -> Path:
        """The process dir with its process.json, and the container around it if it is new."""
        if exec_ is None:
            exec_ = pid_id != "init"
        if not (self.root / cid / "state.json").exists() and cid not in self._containers:
            self.container(cid)
        pdir = self.root / cid / pid_id
        pdir.mkdir(parents=True, exist_ok=True)
        write_file(pdir / "process.json", process_json(list(args), exec_=exec_))
        return pdir

    def start_process(self, cid: str, pid_id: str, args=("sleep", "1000"), *, exec_: bool | None = None,
                      starttime: bool = True, timeout: float = 5.0) -> LiveProcess:
        """Write process.json and run it under a stand-in shim; wait for `pid` (and `starttime`)."""
        pdir = self._process_dir(cid, pid_id, args, exec_)
        shim, errlog = self._spawn_shim(cid, pid_id, {} if starttime else {"RECOVER_SHIM_NO_STARTTIME": "1"})
        # Register the shim before waiting so cleanup() covers a failed start.
        self.popens.append(shim)
        want = [pdir / "pid"] + ([pdir / "starttime"] if starttime else [])
        deadline = time.monotonic() + timeout
        while not all(p.exists() for p in want):
            if shim.poll() is not None and not all(p.exists() for p in want):
                raise RuntimeError("shim exited %s before writing %s: %s" % (
                    shim.returncode, [p.name for p in want], _tail(errlog, pdir)))
            if time.monotonic() > deadline:
                raise TimeoutError("shim did not write %s in %ss" % ([p.name for p in want], timeout))
            time.sleep(POLL)
        pid = int((pdir / "pid").read_bytes())
        fd = pidfd_open(pid)
        # The pidfd is ours only if the process is the (live, unreaped) shim's
        # child; a process that already exited and was reaped gets no pidfd.
        st = stat_fields(pid) if fd is not None else None
        if fd is not None and (st is None or int(st[1]) != shim.pid):
            os.close(fd)
            fd, st = None, None
        ticks = int(st[19]) if st else None
        if ticks is None and starttime:
            ticks = int((pdir / "starttime").read_bytes())  # exited before we looked
        lp = LiveProcess(dir=pdir, shim=shim, pid=pid, starttime=ticks, _pidfd=fd)
        self.popens.remove(shim)
        self.live.append(lp)
        self._sids.add(pid)
        return lp

    def start_hung_shim(self, cid: str, pid_id: str, args=("sleep", "1000"), *,
                        exec_: bool | None = None, timeout: float = 5.0) -> subprocess.Popen:
        """A shim whose start never finished: FIFOs, process.json, no pid; sleeps until killed."""
        pdir = self._process_dir(cid, pid_id, args, exec_)
        shim, errlog = self._spawn_shim(cid, pid_id, {"RECOVER_SHIM_NO_START": "1"})
        self.popens.append(shim)
        # log.json is the shim's last setup step (after the FIFOs): once it exists, setup is done.
        deadline = time.monotonic() + timeout
        while not (pdir / "log.json").exists():
            if shim.poll() is not None:
                raise RuntimeError("hung shim exited %s: %s" % (shim.returncode, _tail(errlog, pdir)))
            if time.monotonic() > deadline:
                raise TimeoutError("hung shim did not create its FIFOs in %ss" % timeout)
            time.sleep(POLL)
        return shim

def _tail(errlog: Path, pdir: Path) -> str:
    out = []
    for p in (errlog, pdir / "shim-log.json"):
        try:
            out.append(p.read_text(errors="replace")[-500:])
        except OSError:
            pass
    return " | ".join(s for s in out if s)


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


__all__ = [
    "SHIM_PATH", "SHIM_NAME", "become_subreaper", "state_json", "process_json",
    "RootBuilder", "LiveProcess", "ProcessOwner", "capture_proc",
]
