"""Build containerd 1.6-2.x runtime-v2 state dirs, with real processes, for tests.

Linux only.  Everything lives under one dir `top`, laid out as containerd 1.6 lays out its own:

    top/state/io.containerd.runtime.v2.task/<ns>/<id>/   task bundles: the state dir to scan
    top/root/io.containerd.runtime.v2.task/<ns>/<id>/    work dirs (containerd's root dir)
    top/root/io.containerd.grpc.v1.cri/containers/<id>/status   CRI checkpoints
    top/runc/<ns>/<id>/state.json                        runc's state: scan with --runc-root top/runc
    top/s/<sha256 of grpc/ns/id>                         shim sockets (containerd's are in /run/containerd/s)
    top/containerd.sock                                  the -address the shims are given (nothing listens)

Each task runs under a stand-in shim (shim/containerd-shim-runc-v2 beside this module): a real process with
the real shim's argv and cwd, whose children are the task's init and execs; a pod's containers run
under the pod's shim.  Faults are methods.  A caller that wants the orphans of killed shims to come
back to it (instead of pid 1) calls become_subreaper() first.  Use the builder as a context
manager: leaving it kills and reaps everything it started, also when a test fails.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ...builders import (
    INIT_ENV,
    POLL,
    ProcessOwner,
    kill_popen,
    kill_session,
    pidfd_open,
    pidfd_signal,
    release_pidfd,
    stat_fields,
    stop_popen,
    wait_state,
    write_file,
)
from .reader import CRI_SANDBOX, CRI_TYPE, TASKS_DIR, socket_name

SHIM_V2_PATH: Path = Path(__file__).resolve().parent / "shim" / "containerd-shim-runc-v2"
CRI_CONTAINERS_DIR = Path("io.containerd.grpc.v1.cri") / "containers"
INIT = "init"

CriState = Literal["created", "running", "exited"]


@dataclass
class LiveShim:
    """A stand-in containerd-shim-runc-v2, and the builder's control connection to it (what
    containerd's ttrpc connection is to the real one: it survives the socket file's removal)."""

    popen: subprocess.Popen
    namespace: str
    id: str
    socket: Path
    errlog: Path
    _control: socket.socket = field(repr=False)
    _pending: bytes = field(default=b"", repr=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def request(self, op: str, timeout: float = 5.0, **fields: object) -> dict:
        """Ask the shim (create, exec, state); its reply, or RuntimeError with its reason."""
        self._control.sendall(json.dumps({"op": op, **fields}).encode() + b"\n")
        reply = self._read_line(timeout)
        if "error" in reply:
            raise RuntimeError("shim %d: %s: %s" % (self.pid, op, reply["error"]))
        return reply

    def _read_line(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._control], [], [], left)[0]:
                raise TimeoutError("shim %d did not answer in %ss" % (self.pid, timeout))
            chunk = self._control.recv(65536)
            if not chunk:
                raise RuntimeError("shim %d is gone: %s" % (self.pid, _tail(self.errlog)))
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        return json.loads(line)

    def kill(self) -> None:
        """SIGKILL the shim and reap it: its children go to the nearest subreaper (a crash)."""
        kill_popen(self.popen)

    def stop(self) -> None:
        """SIGSTOP the shim (hung, or under a debugger) and wait until it is stopped."""
        stop_popen(self.popen)

    def resume(self) -> None:
        self.popen.send_signal(signal.SIGCONT)
        wait_state(self.pid, "RSD")

    def remove_socket(self) -> None:
        """Remove the socket file: the shim still listens, but no one can dial it any more."""
        self.socket.unlink()

    def _close(self) -> None:
        kill_popen(self.popen)
        self._control.close()


@dataclass
class LiveTask:
    """A task: its bundle, its shim, and the processes the shim started for it (init, execs)."""

    namespace: str
    id: str
    bundle: Path
    shim: LiveShim
    runc_state: Path  # runc's state.json for it
    pids: dict[str, int] = field(default_factory=dict)  # process id ("init", exec ids) -> pid
    starts: dict[str, int] = field(default_factory=dict)  # process id -> start ticks
    _pidfds: dict[str, int | None] = field(default_factory=dict, repr=False)

    @property
    def init(self) -> int:
        return self.pids[INIT]

    def _track(self, process: str, reply: dict) -> int:
        pid, start = int(reply["pid"]), int(reply["start"])
        fd = pidfd_open(pid)
        fields = stat_fields(pid) if fd is not None else None
        if fd is not None and (fields is None or int(fields[19]) != start):
            os.close(fd)  # exited and reaped already, the pid taken by another: not ours to signal
            fd = None
        self.pids[process], self.starts[process], self._pidfds[process] = pid, start, fd
        return pid

    # -- processes ------------------------------------------------------------

    def exec(self, exec_id: str, args=("sleep", "1000")) -> int:
        """Start an exec under the task's shim (it writes <exec_id>.pid); return its pid."""
        return self._track(exec_id, self.shim.request("exec", id=self.id, exec=exec_id, args=[str(a) for a in args]))

    def send_signal(self, process: str = INIT, sig: int = signal.SIGKILL) -> None:
        """Signal a process of the task through its pidfd (never a reused pid)."""
        if not pidfd_signal(self._pidfds.get(process), sig):
            raise ProcessLookupError("%s (pid %s) is gone" % (process, self.pids.get(process)))

    def status(self, process: str = INIT) -> int | None:
        """The exit status the shim holds in memory (None: it has not seen the process exit)."""
        return self.shim.request("state", id=self.id, exec=process)["status"]

    def wait(self, process: str = INIT, timeout: float = 5.0) -> int:
        """Poll the shim until it has reaped the process; return the status it holds."""
        deadline = time.monotonic() + timeout
        while (status := self.status(process)) is None:
            if time.monotonic() > deadline:
                raise TimeoutError("the shim saw no exit of %s in %ss" % (process, timeout))
            time.sleep(POLL)
        return status

    def kill(self, process: str = INIT, sig: int = signal.SIGTERM) -> int:
        """Make a process exit (128 + sig) while its shim lives; return the status the shim holds."""
        self.send_signal(process, sig)
        return self.wait(process)

    def reap(self, process: str = INIT, timeout: float = 5.0) -> int:
        """Wait for an orphan (its shim gone, re-parented to this subreaper) to exit, and reap it;
        return its exit code.  ChildProcessError when it is not this process's child."""
        fd = self._pidfds.get(process)
        if fd is None:
            raise ProcessLookupError("%s is gone" % process)
        if not select.select([fd], [], [], timeout)[0]:
            raise TimeoutError("%s did not exit in %ss" % (process, timeout))
        result = os.waitid(os.P_PIDFD, fd, os.WEXITED)
        return result.si_status if result.si_code == os.CLD_EXITED else 128 + result.si_status

    def wait_state(self, process: str, states: str, timeout: float = 5.0) -> str:
        """Poll the process's /proc state until it is one of `states` (e.g. "Z")."""
        return wait_state(self.pids[process], states, timeout)

    # -- faults on the task's files ---------------------------------------------

    def remove_address(self) -> None:
        (self.bundle / "address").unlink()

    def empty_bundle(self) -> None:
        """Remove everything in the bundle, leaving the dir (what an interrupted delete leaves)."""
        for entry in self.bundle.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    def hide_bundle(self) -> Path:
        """Rename the bundle `.<id>`, as containerd's own delete does first; return its new path."""
        hidden = self.bundle.with_name("." + self.id)
        self.bundle.rename(hidden)
        self.bundle = hidden
        return hidden

    def remove_runc_state(self) -> None:
        shutil.rmtree(self.runc_state.parent)

    def write_pid_file(self, process: str, value: int | bytes) -> None:
        """Write `<process>.pid` (an int as runc writes it, bytes verbatim)."""
        write_file(self.bundle / (process + ".pid"), value)

    def _stop(self) -> None:
        for process, fd in self._pidfds.items():
            kill_session(fd, self.pids[process])

    def _release(self) -> None:
        for process, fd in self._pidfds.items():
            release_pidfd(fd)
            self._pidfds[process] = None


class TaskBuilder(ProcessOwner):
    """Write a runtime-v2 state dir, root dir and runc root under `top`; run tasks under stand-in
    shims.  Use as a context manager."""

    def __init__(self, top: Path, *, grpc_address: str | None = None):
        super().__init__()
        self.top = Path(top)
        self.state = self.top / "state"
        self.root_dir = self.top / "root"
        self.runc_root = self.top / "runc"
        self.sockets = self.top / "s"
        self.grpc_address = grpc_address or str(self.top / "containerd.sock")
        for d, mode in ((self.state, 0o711), (self.state / TASKS_DIR, 0o711), (self.root_dir, 0o711),
                        (self.runc_root, 0o700), (self.sockets, 0o711)):
            d.mkdir(mode, parents=True, exist_ok=True)
        self.shims: list[LiveShim] = []
        self.tasks: list[LiveTask] = []

    def scan_args(self) -> list[str]:
        """`recover scan` arguments that read this tree: the state dir and runc's root."""
        return [str(self.state), "--runc-root", str(self.runc_root)]

    def bundle(self, namespace: str, task_id: str) -> Path:
        return self.state / TASKS_DIR / namespace / task_id

    def socket_path(self, namespace: str, shim_id: str) -> Path:
        """Where a shim listens: containerd's name for it (sha256 of <grpc>/<ns>/<id>) in `top/s`."""
        return self.sockets / socket_name(self.grpc_address, namespace, shim_id)

    # -- static files -------------------------------------------------------------

    def write_bundle(self, namespace: str, task_id: str, args=("sleep", "1000"), *,
                     annotations: dict[str, str] | None = None, options: dict | None = None) -> Path:
        """The files containerd 1.6 writes for a task before its shim starts (modes included):
        config.json, options.json, runtime (empty: runc), shim-binary-path, the `log` FIFO,
        log.json, rootfs/, and `work`, a link to the work dir in the root dir."""
        ns_dir = self.state / TASKS_DIR / namespace
        ns_dir.mkdir(0o711, exist_ok=True)
        bundle = ns_dir / task_id
        bundle.mkdir(0o700)
        spec: dict = {"ociVersion": "1.0.2-dev",
                      "process": {"user": {"uid": 0, "gid": 0}, "args": [str(a) for a in args],
                                  "env": list(INIT_ENV), "cwd": "/"},
                      "root": {"path": "rootfs"}, "hostname": task_id[:12]}
        if annotations:
            spec["annotations"] = dict(annotations)
        for name, value, mode in (("config.json", spec, 0o644), ("options.json", options or {}, 0o600),
                                  ("runtime", b"", 0o600), ("shim-binary-path", str(SHIM_V2_PATH), 0o600),
                                  ("log.json", b"", 0o644)):
            write_file(bundle / name, value)
            os.chmod(bundle / name, mode)
        os.mkfifo(bundle / "log", 0o700)
        (bundle / "rootfs").mkdir(0o711)
        work = self.root_dir / TASKS_DIR / namespace / task_id
        work.mkdir(0o711, parents=True)
        (bundle / "work").symlink_to(work)
        return bundle

    def cri_checkpoint(self, task_id: str, state: CriState, *, pid: int | None = None, exit_code: int = 0) -> Path:
        """CRI's checkpoint of a container, as CRI writes it (compact JSON, mode 0600)."""
        now = time.time_ns()
        doc = {"Version": "v1", "Pid": pid or 0, "CreatedAt": now - 2 * 10**9,
               "StartedAt": now - 10**9 if state != "created" else 0,
               "FinishedAt": now if state == "exited" else 0,
               "ExitCode": exit_code if state == "exited" else 0, "Reason": "", "Message": "",
               "Resources": {"linux": {}}}
        directory = self.root_dir / CRI_CONTAINERS_DIR / task_id
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "status"
        write_file(path, doc)
        os.chmod(path, 0o600)
        return path

    # -- live tasks -----------------------------------------------------------------

    def start_shim(self, namespace: str, shim_id: str, timeout: float = 5.0) -> LiveShim:
        """Start a stand-in shim in the bundle of `shim_id` (written already), as containerd does;
        return once it listens."""
        bundle = self.bundle(namespace, shim_id)
        sock = self.socket_path(namespace, shim_id)
        ours, theirs = socket.socketpair()
        env = dict(os.environ, RECOVER_SHIM_SOCKET=str(sock), RECOVER_SHIM_CONTROL_FD=str(theirs.fileno()),
                   RECOVER_SHIM_RUNC_ROOT=str(self.runc_root))
        errlog = self._workdir() / ("shim-%s-%s.stderr" % (namespace[:16], shim_id[:16]))
        argv = [sys.executable, "-I", "-S", str(SHIM_V2_PATH),
                "-namespace", namespace, "-id", shim_id, "-address", self.grpc_address]
        try:
            with open(errlog, "ab") as err:
                # Own process group, as containerd starts its shims.
                popen = subprocess.Popen(argv, cwd=bundle, env=env, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=err, process_group=0,
                                         pass_fds=(theirs.fileno(),))
        finally:
            theirs.close()
        shim = LiveShim(popen, namespace, shim_id, sock, errlog, ours)
        self.shims.append(shim)  # before waiting: cleanup() covers a failed start
        if not shim._read_line(timeout).get("ready"):
            raise RuntimeError("shim %d did not say it is ready: %s" % (shim.pid, _tail(errlog)))
        return shim

    def start_task(self, namespace: str, task_id: str, args=("sleep", "1000"), *, pod: LiveTask | None = None,
                   sandbox: bool = False, options: dict | None = None) -> LiveTask:
        """Write the task's bundle and start its init under a new shim, or, for a container of a
        pod (`pod`: its sandbox task), under the pod's shim.  sandbox: the task is a CRI sandbox.
        options: options.json (its `root` is runc's root for the task)."""
        annotations = None
        if pod is not None:
            annotations = {CRI_TYPE: "container", CRI_SANDBOX: pod.id}
        elif sandbox:
            annotations = {CRI_TYPE: "sandbox", CRI_SANDBOX: task_id}
        bundle = self.write_bundle(namespace, task_id, args, annotations=annotations, options=options)
        shim = pod.shim if pod is not None else self.start_shim(namespace, task_id)
        runc_root = Path((options or {}).get("root") or self.runc_root)
        task = LiveTask(namespace, task_id, bundle, shim, runc_root / namespace / task_id / "state.json")
        self.tasks.append(task)
        task._track(INIT, shim.request("create", id=task_id, bundle=str(bundle)))
        return task

    def reuse_init_pid(self, task: LiveTask, timeout: float = 5.0) -> subprocess.Popen:
        """Point the task's init.pid at an unrelated live process (spawned here); return it.  The
        stranger starts in a later clock tick than the init: start ticks count 10 ms, and one
        started in the same tick would be the init by the identity test."""
        deadline = time.monotonic() + timeout
        while True:
            stranger = self.spawn_unrelated()
            fields = stat_fields(stranger.pid)
            if fields is not None and int(fields[19]) != task.starts[INIT]:
                break
            kill_popen(stranger)
            self.popens.remove(stranger)
            if time.monotonic() > deadline:
                raise TimeoutError("no process started in another tick than the init")
        task.write_pid_file(INIT, stranger.pid)
        return stranger

    def hide_namespace(self, namespace: str) -> Path:
        """Rename a namespace dir `.<ns>` (containerd then skips every task in it); return it."""
        hidden = self.state / TASKS_DIR / ("." + namespace)
        (self.state / TASKS_DIR / namespace).rename(hidden)
        for task in self.tasks:
            if task.namespace == namespace:
                task.bundle = hidden / task.bundle.name
        return hidden

    # -- teardown ---------------------------------------------------------------------

    def _stop_started(self) -> None:
        # The processes first, through their pidfds; then the shims (a stopped shim's zombies
        # and every orphan come back to this process, which reaps them).
        for task in self.tasks:
            self._sids.update(task.pids.values())  # each process leads its own session
            task._stop()
        for shim in self.shims:
            shim._close()
        for task in self.tasks:
            task._release()
        self.tasks.clear()
        self.shims.clear()


def _tail(errlog: Path) -> str:
    try:
        return errlog.read_text(errors="replace")[-500:] or "(no stderr)"
    except OSError:
        return "(no stderr)"


__all__ = ["SHIM_V2_PATH", "LiveShim", "LiveTask", "TaskBuilder"]
