"""Build containerd 0.2.x state roots, with real processes, for tests and the demo.

Processes started here run under the stand-in shim (`shim/containerd-shim` beside this module,
which behaves like containerd-shim 0.2).  A caller that wants orphans to come back to it (instead
of pid 1) calls become_subreaper() first, like systemd or tini.  What any builder needs (processes
through pidfds, teardown) is recover/builders.py's.  Linux only.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ...builders import (  # noqa: F401
    INIT_ENV,
    POLL,
    ProcessOwner,
    become_subreaper,
    kill_popen,
    kill_session,
    pidfd_open,
    pidfd_signal,
    release_pidfd,
    stat_field,
    stat_fields,
    stop_popen,
    wait_state,
    write_file,
)

SHIM_PATH: Path = Path(__file__).resolve().parent / "shim" / "containerd-shim"
SHIM_NAME = "containerd-shim"

# The capability set and env of the reference capture (containerd 0.2.9, runc 1.1).
_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
_EXEC_ENV = ["PATH=/bin"]


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
