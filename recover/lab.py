"""A lab: a real containerd 1.6 daemon in a private mount namespace, for the tests and for
`recover demo --layout containerd-runtime-v2`.

containerd 1.6 and containerd-shim-runc-v2 hard-code /run/containerd for the shim sockets (`s/`),
runc's root (`runc/<ns>`) and ctr's FIFOs (`fifo/`), whatever the config says.  So the daemon, its
shims and ctr run in a private mount namespace held by a `sleep` (the holder), where /run is a
fresh tmpfs with two bind mounts into the test's base dir:

    /run/<name>        -> <base>/state            the daemon's state dir (config `state`)
    /run/containerd    -> <base>/run-containerd   shim sockets, runc state, ctr FIFOs
    <base>/root        (same path on both sides)  the daemon's root dir (config `root`)

where <name> is the base dir's name (unique: it also makes the grpc address, written in every
shim's argv, unique, and names the cgroup parent of every container).  With
`create(default_state=True)` the state dir is /run/containerd itself, as on a host with the default
config: shim sockets, runc state and the tasks then share <base>/state, bound at /run/containerd,
and the grpc address is the default /run/containerd/containerd.sock (the same in every such
harness: its shims are told apart by their mount namespace).  The host's /run/containerd and
/var/lib/containerd are never touched.  `Containerd16.in_ns` runs any command (recover itself)
where it sees the paths as containerd does.

    with Containerd16.create() as d:            # tests: the module-scoped `containerd16` fixture
        d.start()
        task = d.run("t1")                      # init + detached exec e1, both trapping SIGTERM
        d.crash(); d.start()
        assert d.task_list()["t1"] == (task.init, "RUNNING")

`close()` kills everything the harness started (daemon, shims, container processes, spawned
processes, the holder), which also drops the namespace and its mounts, and removes the base dir.
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


BINARIES = ("containerd", "ctr", "runc", "containerd-shim-runc-v2", "unshare", "nsenter")
BUSYBOX = Path("/bin/busybox")  # busybox-static installs it here
SHIM = "containerd-shim-runc-v2"
RUNTIME_DIR = "io.containerd.runtime.v2.task"

# init and exec as the reference captures ran them: each traps SIGTERM into a known exit status
INIT_CMD = 'trap "exit 42" TERM; sleep 1000000 & wait'
EXEC_CMD = 'trap "exit 43" TERM; sleep 1000000 & wait'

CONFIG = """\
version = 2
root = "{root}"
state = "{state}"
# plugins a test never uses; `opt` would create /opt/containerd on the host
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = "{address}"

[debug]
  level = "debug"

[timeouts]
  "io.containerd.timeout.shim.cleanup" = "5s"
  "io.containerd.timeout.shim.load" = "5s"
  "io.containerd.timeout.shim.shutdown" = "3s"
  "io.containerd.timeout.task.state" = "2s"
"""

PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37
_POLL = 0.02


class HarnessError(RuntimeError):
    """The daemon or the namespace did not come up, or a ctr command failed."""


# ---------------------------------------------------------------- what the host lacks


def _is_static(path: Path) -> bool:
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


@functools.cache
def missing() -> str | None:
    """Why a real containerd 1.6 cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "needs root (containerd, runc and a private mount namespace)"
    absent = [b for b in BINARIES if shutil.which(b) is None]
    if absent:
        return f"not installed: {', '.join(absent)} (apt-get install containerd runc)"
    if not BUSYBOX.is_file() or not _is_static(BUSYBOX):
        return f"no static busybox at {BUSYBOX} (apt-get install busybox-static)"
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "--",
                            "mount", "-t", "tmpfs", "tmpfs", "/run"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot make a private mount namespace: {probe.stderr.strip()}"
    return None


# ---------------------------------------------------------------- the busybox rootfs

_rootfs: Path | None = None


def busybox_rootfs() -> Path:
    """A rootfs of busybox-static and its applet links, built once per process."""
    global _rootfs
    if _rootfs is None:
        top = Path(tempfile.mkdtemp(prefix="ctrd16-rootfs-"))
        atexit.register(shutil.rmtree, top, True)
        rootfs = top / "rootfs"
        (rootfs / "bin").mkdir(parents=True)
        for d in ("proc", "sys", "dev", "etc", "tmp"):
            (rootfs / d).mkdir()
        shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
        # in a chroot, so that the links say /bin/busybox (the path inside the container)
        subprocess.run(["chroot", str(rootfs), "/bin/busybox", "--install", "-s", "/bin"],
                       check=True)
        _rootfs = rootfs
    return _rootfs


# ---------------------------------------------------------------- small /proc facts


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


def _pids() -> list[int]:
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


def _set_subreaper(value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, value, 0, 0, 0) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def _get_subreaper() -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    out = ctypes.c_int(0)
    if libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(out), 0, 0, 0) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return out.value


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise HarnessError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(_POLL)


def traps_sigterm(pid: int) -> bool:
    """The process has installed a SIGTERM handler (SigCgt bit 15): its shell ran `trap`."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    except OSError:
        pass
    return False


# ---------------------------------------------------------------- the harness


@dataclass(frozen=True)
class Paths:
    """Where things are, on the host and as containerd (inside the namespace) sees them."""

    base: Path
    name: str  # unique: base dir name, state dir name in the namespace, cgroup parent
    default_state: bool = False  # the state dir is /run/containerd in the namespace (default config)

    @property
    def state(self) -> Path:  # host path of the state dir
        return self.base / "state"

    @property
    def run_containerd(self) -> Path:  # host path of the namespace's /run/containerd
        return self.state if self.default_state else self.base / "run-containerd"

    @property
    def root(self) -> Path:  # the root dir, same path inside
        return self.base / "root"

    @property
    def config(self) -> Path:
        return self.base / "config.toml"

    @property
    def logs(self) -> Path:
        return self.base / "logs"

    @property
    def ns_state(self) -> str:  # the state dir as containerd sees it
        return "/run/containerd" if self.default_state else f"/run/{self.name}"

    @property
    def address(self) -> str:  # the grpc address as containerd and the shims see it
        return f"{self.ns_state}/containerd.sock"

    @property
    def host_address(self) -> Path:
        return self.state / "containerd.sock"

    @property
    def cgroup_parent(self) -> str:
        return f"/{self.name}"

    def bundle(self, ns: str, cid: str) -> Path:
        return self.state / RUNTIME_DIR / ns / cid

    def ns_bundle(self, ns: str, cid: str) -> str:
        return f"{self.ns_state}/{RUNTIME_DIR}/{ns}/{cid}"

    def work(self, ns: str, cid: str) -> Path:
        return self.root / RUNTIME_DIR / ns / cid

    def runc_state(self, ns: str, cid: str) -> Path:  # /run/containerd/runc/<ns>/<id> inside
        return self.run_containerd / "runc" / ns / cid

    def socket_name(self, ns: str, cid: str) -> str:
        """The shim socket's name: sha256 of `<grpc address>/<ns>/<id>` (containerd 1.6)."""
        return hashlib.sha256(f"{self.address}/{ns}/{cid}".encode()).hexdigest()

    def socket(self, ns: str, cid: str) -> Path:
        return self.run_containerd / "s" / self.socket_name(ns, cid)


@dataclass(frozen=True)
class Task:
    """A task made by Containerd16.run: its pids as they were once both processes ran."""

    namespace: str
    id: str
    init: int
    init_start: int
    execs: dict[str, int]
    shim: int


@dataclass
class Containerd16:
    """One containerd 1.6 daemon with its own state, root and mount namespace (see module doc)."""

    paths: Paths
    namespace: str = "default"
    holder: subprocess.Popen | None = None
    daemon: subprocess.Popen | None = None
    starts: int = 0
    _spawned: list[subprocess.Popen] = field(default_factory=list)
    _subreaper_before: int = 0
    _closed: bool = False

    # -- life cycle

    @classmethod
    def create(cls, base: Path | None = None, namespace: str = "default",
               default_state: bool = False) -> Containerd16:
        """Make the base dir (a fresh one in /tmp when None) and the namespace; no daemon yet.
        default_state: the daemon's state dir is /run/containerd (see the module doc)."""
        reason = missing()
        if reason:
            raise HarnessError(reason)
        if base is None:
            base = Path(tempfile.mkdtemp(prefix="ctrd16-", dir="/tmp"))
        else:
            base.mkdir(parents=True)
        paths = Paths(base, base.name, default_state)
        self = cls(paths, namespace)
        try:
            self._setup()
        except BaseException:
            self.close()
            raise
        return self

    def _setup(self) -> None:
        p = self.paths
        for d in {p.state, p.run_containerd, p.root, p.logs}:
            d.mkdir(mode=0o711)
        p.config.write_text(CONFIG.format(root=p.root, state=p.ns_state, address=p.address))
        # The shims must be re-parented to pid 1 as on a real host, not to a subreaper pytest
        # may have become (tests/test_live.py does): shims orphan themselves at start.
        self._subreaper_before = _get_subreaper()
        _set_subreaper(0)
        binds = {p.ns_state: p.state, "/run/containerd": p.run_containerd}
        script = (
            "set -e; mount -t tmpfs -o mode=755 tmpfs /run;"
            + "".join(f" mkdir -p {inside}; mount --bind {host} {inside};" for inside, host in binds.items())
            + " echo ready; exec sleep infinity"
        )
        errors = p.logs / "holder.err"
        with open(errors, "wb") as err:
            self.holder = subprocess.Popen(
                ["unshare", "-m", "--propagation", "private", "--", "/bin/sh", "-c", script],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                start_new_session=True)
        with self.holder.stdout:
            ready = self.holder.stdout.readline() == b"ready\n"
        if not ready:
            self.holder.wait()
            raise HarnessError(f"mount namespace setup failed: {errors.read_text().strip()}")

    def __enter__(self) -> Containerd16:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def nsenter(self, argv: list[str]) -> list[str]:
        return ["nsenter", "-t", str(self.holder.pid), "-m", "--", *argv]

    def in_ns(self, argv: list[str], check: bool = False, **kw) -> subprocess.CompletedProcess:
        """Run a command in the daemon's mount namespace (it sees /run as containerd does)."""
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.run(self.nsenter(argv), check=check, **kw)

    def start(self, timeout: float = 60) -> float:
        """Start the daemon; return the seconds until its gRPC server answered.

        containerd 1.6 restores every task (loads shims, cleans up dead ones) while it loads the
        io.containerd.runtime.v2.task plugin, before it listens: once `ctr version` answers, the
        restore is over (the socket file of a killed daemon stays behind, refusing connections).
        """
        if self.daemon is not None and self.daemon.poll() is None:
            raise HarnessError("the daemon is already running")
        self.starts += 1
        log = open(self.log_path(self.starts), "wb")
        t0 = time.monotonic()
        with log:
            self.daemon = subprocess.Popen(
                self.nsenter(["containerd", "--config", str(self.paths.config)]),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        wait_until(lambda: self._listening(), timeout, "containerd's gRPC socket")
        took = time.monotonic() - t0
        self.ctr("version")
        return took

    def _listening(self) -> bool:
        if self.daemon.poll() is not None:
            raise HarnessError(f"containerd exited {self.daemon.returncode}:\n{self.log()[-3000:]}")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            try:
                s.connect(str(self.paths.host_address))
            except (FileNotFoundError, ConnectionRefusedError):
                return False
        return True

    def log_path(self, start: int | None = None) -> Path:
        return self.paths.logs / f"containerd-{start or self.starts}.log"

    def log(self, start: int | None = None) -> str:
        """The daemon's log (debug level; shim log lines are forwarded into it) of one start."""
        path = self.log_path(start)
        return path.read_text(errors="replace") if path.exists() else ""

    def crash(self) -> None:
        """SIGKILL the daemon (its shims and containers live on)."""
        self.daemon.kill()
        self.daemon.wait()

    # -- driving it

    def ctr(self, *args: str, namespace: str | None = None, check: bool = True,
            timeout: float = 30) -> subprocess.CompletedProcess:
        argv = ["ctr", "-a", self.paths.address, "-n", namespace or self.namespace, *args]
        result = self.in_ns(argv, timeout=timeout)
        if check and result.returncode != 0:
            raise HarnessError(f"{' '.join(argv)}: exit {result.returncode}: {result.stderr.strip()}")
        return result

    def run(self, cid: str, cmd: str = INIT_CMD, exec_id: str | None = "e1",
            exec_cmd: str = EXEC_CMD, namespace: str | None = None) -> Task:
        """A container with a running init and (unless exec_id is None) a detached exec.

        Returns once both processes run their command (their shell has set its SIGTERM trap),
        so that a test can signal them at once.
        """
        ns = namespace or self.namespace
        self.ctr("run", "-d", "--null-io", "--cgroup", f"{self.paths.cgroup_parent}/{cid}",
                 "--env", "PATH=/bin", "--rootfs", str(busybox_rootfs()), cid,
                 "/bin/sh", "-c", cmd, namespace=ns)
        bundle = self.paths.bundle(ns, cid)
        init = int((bundle / "init.pid").read_text())
        started = [(init, cmd)]
        execs = {}
        if exec_id is not None:
            self.ctr("task", "exec", "-d", "--exec-id", exec_id, cid, "/bin/sh", "-c", exec_cmd,
                     namespace=ns)
            execs[exec_id] = int((bundle / f"{exec_id}.pid").read_text())
            started.append((execs[exec_id], exec_cmd))
        for pid, command in started:
            if "trap" in command:
                wait_until(lambda pid=pid: traps_sigterm(pid), 10, f"pid {pid} to set its trap")
        return Task(ns, cid, init, proc_stat(init).start, execs, self.shim_pid(cid, ns))

    def shims(self) -> dict[int, dict[str, str]]:
        """Every live shim process of this daemon: pid -> flags.  Its argv's -address is ours and,
        when that address is the default one (default_state), it runs in our mount namespace."""
        ns = self.mount_ns() if self.paths.default_state else None
        if self.paths.default_state and ns is None:
            return {}  # the namespace is gone: another harness's shims look the same
        found = {}
        for pid in _pids():
            flags = shim_args(cmdline(pid))
            if flags and flags.get("address") == self.paths.address and (ns is None or _mount_ns(pid) == ns):
                found[pid] = flags
        return found

    def shim_pid(self, cid: str, namespace: str | None = None) -> int | None:
        ns = namespace or self.namespace
        for pid, flags in self.shims().items():
            if flags.get("id") == cid and flags.get("namespace") == ns:
                return pid
        return None

    def task_list(self, namespace: str | None = None) -> dict[str, tuple[int, str]]:
        """`ctr task ls`: id -> (pid, status)."""
        out = self.ctr("task", "ls", namespace=namespace).stdout.splitlines()[1:]
        return {f[0]: (int(f[1]), f[2]) for f in (line.split() for line in out) if len(f) == 3}

    def containers(self, namespace: str | None = None) -> list[str]:
        """`ctr containers ls -q`: the containers in the metadata store."""
        return self.ctr("containers", "ls", "-q", namespace=namespace).stdout.split()

    def spawn(self, argv: list[str]) -> subprocess.Popen:
        """A host process owned by the harness (close() kills it), e.g. a pid to reuse."""
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
        self._spawned.append(p)
        return p

    # -- everything it started

    def cgroup_dirs(self) -> list[Path]:
        """The cgroup parent of every container, in each mounted hierarchy where it exists."""
        dirs = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            fields = line.split()
            fstype = fields[fields.index("-") + 1]
            if fstype in ("cgroup", "cgroup2"):
                d = Path(fields[4]) / self.paths.name
                if d.is_dir():
                    dirs.append(d)
        return dirs

    def container_pids(self) -> set[int]:
        """Every process in the containers' cgroups (runc puts init and execs there)."""
        pids = set()
        for top in self.cgroup_dirs():
            for dirpath, _, files in os.walk(top):
                if "cgroup.procs" in files:
                    try:
                        pids.update(int(x) for x in Path(dirpath, "cgroup.procs").read_text().split())
                    except OSError:
                        pass
        return pids

    def mount_ns(self) -> str | None:
        return _mount_ns(self.holder.pid) if self.holder is not None else None

    def processes(self) -> dict[int, int]:
        """Every live process the harness started, pid -> start ticks: the daemon and all in
        its mount namespace (holder, shims, runc, ctr), shims' children, containers, spawned."""
        ours: set[int] = set(self.container_pids())
        ours |= set(self.shims())
        ns = self.mount_ns()
        children: dict[int, list[int]] = {}
        for pid in _pids():
            st = proc_stat(pid)
            if st is None:
                continue
            children.setdefault(st.ppid, []).append(pid)
            if ns is not None and _mount_ns(pid) == ns:
                ours.add(pid)
        for p in (self.holder, self.daemon, *self._spawned):
            if p is not None and p.poll() is None:
                ours.add(p.pid)
        todo = list(self.shims())
        while todo:  # the shims' process trees
            for child in children.get(todo.pop(), []):
                if child not in ours:
                    ours.add(child)
                    todo.append(child)
        result = {}
        for pid in ours:
            st = proc_stat(pid)
            if st is not None and st.state not in ("Z", "X"):
                result[pid] = st.start
        return result

    def close(self, remove: bool = True) -> None:
        """Kill everything started here, drop the namespace (and its mounts), remove the base dir
        (unless `remove` is false: its files are left for a look)."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.daemon is not None and self.daemon.poll() is None:
                self.daemon.kill()
                self.daemon.wait()
            # The containers first, while their shims live to reap them at once (this host's
            # pid 1 may reap orphans seconds late, and a pid namespace's init does not finish
            # dying before its namespace's zombies are reaped); a stopped shim is resumed first.
            for pid in self.shims():
                _kill(pid, signal.SIGCONT)
            seen: dict[int, int] = {}
            self._kill_until_gone(self._container_processes, seen)
            holder = self.holder.pid if self.holder is not None else None
            self._kill_until_gone(
                lambda: {p: s for p, s in self.processes().items() if p != holder}, seen)
            for p in self._spawned:
                p.wait(5)
            for top in self.cgroup_dirs():
                _remove_cgroup(top)
            if self.holder is not None and self.holder.poll() is None:
                self.holder.kill()
                self.holder.wait()
        finally:
            if self._subreaper_before:
                _set_subreaper(self._subreaper_before)
            if remove:
                shutil.rmtree(self.paths.base, ignore_errors=True)

    def _container_processes(self) -> dict[int, int]:
        return {pid: st.start for pid in self.container_pids() if (st := proc_stat(pid))}

    @staticmethod
    def _kill_until_gone(select, seen: dict[int, int], timeout: float = 20) -> None:
        """SIGKILL what select() returns until none of it, nor of anything seen before, is alive.
        Everything seen is remembered: a dying init has left its cgroup already."""
        deadline = time.monotonic() + timeout
        while True:
            seen.update(select())
            left = [pid for pid, start in seen.items() if alive(pid, start)]
            if not left:
                return
            if time.monotonic() > deadline:
                raise HarnessError(f"processes survive SIGKILL: {sorted(left)}")
            for pid in left:
                _kill(pid, signal.SIGKILL)
            time.sleep(_POLL)


def _mount_ns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _remove_cgroup(top: Path) -> None:
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
                time.sleep(_POLL)
