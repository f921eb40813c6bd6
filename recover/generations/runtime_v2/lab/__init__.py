"""A lab: a real containerd (1.6.20, 1.7.34 or 2.3.4) in a private mount namespace, for the tests
and for `recover demo --layout containerd-runtime-v2`.

containerd and containerd-shim-runc-v2 (1.6 to 2.x) hard-code /run/containerd for the shim
sockets (`s/`), runc's root (`runc/<ns>`) and ctr's FIFOs (`fifo/`), whatever the config says.  So
the daemon, its shims and ctr run in a private mount namespace held by a `sleep` (the holder),
where /run is a fresh tmpfs with two bind mounts into the test's base dir:

    /run/<name>        -> <base>/state            the daemon's state dir (config `state`)
    /run/containerd    -> <base>/run-containerd   shim sockets, runc state, ctr FIFOs
    <base>/root        (same path on both sides)  the daemon's root dir (config `root`)

where <name> is the base dir's name (unique: it also makes the grpc address, written in every
shim's argv, unique, and names the cgroup parent of every container).  With
`create(default_state=True)` the state dir is /run/containerd itself, as on a host with the default
config: shim sockets, runc state and the tasks then share <base>/state, bound at /run/containerd,
and the grpc address is the default /run/containerd/containerd.sock (the same in every such
harness: its shims are told apart by their mount namespace).  The host's /run/containerd and
/var/lib/containerd are never touched.  `Containerd.in_ns` runs any command (recover itself)
where it sees the paths as containerd does.

Which containerd: recover/generations/runtime_v2/lab/versions.py (the binaries, the config each version reads, what is
missing); with `cri=True` the CRI plugin is on and the lab imports a pause and a busybox image
(recover/lab_image.py) into `k8s.io` at its first start: tests/cri.py makes pods through the CRI
API.  Several labs may run at once in threads of one process, each with its own base dir.

    with Containerd.create(version="2.3.4") as d:   # tests: tests/lab_fixtures.py
        d.start()
        task = d.run("t1")                          # init + detached exec e1, both trapping SIGTERM
        d.crash(); d.start()
        assert d.task_list()["t1"] == (task.init, "RUNNING")

`close()` kills everything the harness started (daemon, shims, container processes, spawned
processes, the holder), which also drops the namespace and its mounts, and removes the base dir.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .image import busybox_rootfs, image_archive
from .proc import POLL as _POLL
from .proc import (
    HarnessError,
    alive,
    cmdline,
    kill,
    mount_ns,
    pids,
    proc_stat,
    remove_cgroup,
    restore_subreaper,
    shim_args,
    stop_being_subreaper,
    traps_sigterm,
    wait_until,
)
from .versions import DEFAULT, VERSIONS, Version, missing
from .versions import version as find_version

__all__ = ["RUNTIME_DIR", "CRI_NAMESPACE", "INIT_CMD", "EXEC_CMD", "Containerd", "HarnessError", "Paths",
           "Task", "VERSIONS", "Version", "alive", "busybox_rootfs", "cmdline", "image_archive", "missing", "proc_stat",
           "wait_until"]

RUNTIME_DIR = "io.containerd.runtime.v2.task"
CRI_NAMESPACE = "k8s.io"  # the containerd namespace CRI keeps its pods in

# init and exec as the reference captures ran them: each traps SIGTERM into a known exit status
INIT_CMD = 'trap "exit 42" TERM; sleep 1000000 & wait'
EXEC_CMD = 'trap "exit 43" TERM; sleep 1000000 & wait'


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
    def cni(self) -> Path:  # CRI's CNI dirs (never used: pods run in the host's network)
        return self.base / "cni"

    @property
    def cgroup_parent(self) -> str:
        return f"/{self.name}"

    def host_path(self, inside: str) -> Path:
        """The host path of a path as containerd sees it (under its state dir or /run/containerd)."""
        for ns_top, host_top in ((self.ns_state, self.state), ("/run/containerd", self.run_containerd)):
            if inside == ns_top or inside.startswith(ns_top + "/"):
                return host_top / inside[len(ns_top):].lstrip("/")
        if inside.startswith(str(self.root) + "/"):
            return Path(inside)
        raise ValueError(f"{inside} is not under the lab's state, /run/containerd or root")

    def bundle(self, ns: str, cid: str) -> Path:
        return self.state / RUNTIME_DIR / ns / cid

    def ns_bundle(self, ns: str, cid: str) -> str:
        return f"{self.ns_state}/{RUNTIME_DIR}/{ns}/{cid}"

    def work(self, ns: str, cid: str) -> Path:
        return self.root / RUNTIME_DIR / ns / cid

    def runc_state(self, ns: str, cid: str) -> Path:  # /run/containerd/runc/<ns>/<id> inside
        return self.run_containerd / "runc" / ns / cid

    def socket_name(self, ns: str, cid: str) -> str:
        """The shim socket's name: sha256 of `<grpc address>/<ns>/<id>` (1.6 to 2.x; for a CRI
        container, the id is its sandbox's)."""
        return hashlib.sha256(f"{self.address}/{ns}/{cid}".encode()).hexdigest()

    def socket(self, ns: str, cid: str) -> Path:
        return self.run_containerd / "s" / self.socket_name(ns, cid)

    def cri_status(self, cid: str) -> Path:
        """CRI's checkpoint of a container (its state, pid, exit code and reason)."""
        return self.root / "io.containerd.grpc.v1.cri" / "containers" / cid / "status"

    def shim_address(self, ns: str, cid: str) -> str | None:
        """The address a bundle names for its shim, as containerd reads it: 2.x's bootstrap.json
        when there (its `address`), else the `address` file (1.6/1.7, or a bundle 1.6 made),
        whose text may itself be JSON on 1.7.  None when the bundle names none."""
        bundle = self.bundle(ns, cid)
        for name in ("bootstrap.json", "address"):
            try:
                text = (bundle / name).read_text()
            except FileNotFoundError:
                continue
            if text.lstrip().startswith("{"):
                return json.loads(text).get("address")
            return text
        return None

    def shim_socket(self, ns: str, cid: str) -> Path | None:
        """The host path of the socket the bundle names (bootstrap.json or address)."""
        address = self.shim_address(ns, cid)
        if not address or not address.startswith("unix://"):
            return None
        return self.host_path(address.removeprefix("unix://").rstrip("\n"))


@dataclass(frozen=True)
class Task:
    """A task made by Containerd.run: its pids as they were once both processes ran."""

    namespace: str
    id: str
    init: int
    init_start: int
    execs: dict[str, int]
    shim: int


@dataclass
class Containerd:
    """One containerd daemon of one version with its own state, root and mount namespace (see
    the module doc)."""

    paths: Paths
    version: Version
    namespace: str = "default"
    cri: bool = False  # the CRI plugin runs (and the pod images are imported at the first start)
    holder: subprocess.Popen | None = None
    daemon: subprocess.Popen | None = None
    starts: int = 0
    _spawned: list[subprocess.Popen] = field(default_factory=list)
    _not_subreaper: bool = False
    _images_imported: bool = False
    _closed: bool = False

    # -- life cycle

    @classmethod
    def create(cls, base: Path | None = None, namespace: str = "default",
               default_state: bool = False, version: str = DEFAULT, cri: bool = False) -> Containerd:
        """Make the base dir (a fresh one in /tmp when None) and the namespace; no daemon yet.
        default_state: the daemon's state dir is /run/containerd (see the module doc).
        version: one of VERSIONS.  cri: run the CRI plugin (tests/cri.py makes pods)."""
        v = find_version(version)
        reason = missing(v.name)
        if reason:
            raise HarnessError(f"containerd {v.name}: {reason}")
        if base is None:
            base = Path(tempfile.mkdtemp(prefix=f"ctrd{v.name.replace('.', '')}-", dir="/tmp"))
        else:
            base.mkdir(parents=True)
        paths = Paths(base, base.name, default_state)
        self = cls(paths, v, namespace, cri)
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
        if self.cri:
            for d in (p.cni, p.cni / "bin", p.cni / "net.d"):
                d.mkdir()
        p.config.write_text(self.version.config(root=p.root, state=p.ns_state, address=p.address,
                                                cri=self.cri, cni=p.cni))
        stop_being_subreaper()
        self._not_subreaper = True
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
            ready = self.holder.stdout.readline() == b"ready\n"  # EOF when the script fails
        if not ready:
            self.holder.wait(30)
            raise HarnessError(f"mount namespace setup failed: {errors.read_text().strip()}")

    def __enter__(self) -> Containerd:
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

        containerd (1.6 to 2.x) restores every task (loads shims, cleans up dead ones) while it
        loads the io.containerd.runtime.v2.task plugin, before it listens: once it answers, the
        task restore is over (the socket file of a killed daemon stays behind, refusing
        connections).  CRI's own recovery (its checkpoints) runs after that: tests/cri.py waits
        for it.  With cri, the first start imports the pod images.
        """
        if self.daemon is not None and self.daemon.poll() is None:
            raise HarnessError("the daemon is already running")
        self.starts += 1
        log = open(self.log_path(self.starts), "wb")
        env = {"PATH": self.version.daemon_path, "HOME": "/root", "LANG": "C.UTF-8"}
        t0 = time.monotonic()
        with log:
            self.daemon = subprocess.Popen(
                self.nsenter([self.version.binary("containerd"), "--config", str(self.paths.config)]),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, env=env)
        wait_until(lambda: self._listening(), timeout, "containerd's gRPC socket")
        took = time.monotonic() - t0
        self.ctr("version")
        if self.cri and not self._images_imported:
            self.ctr("images", "import", str(image_archive()), namespace=CRI_NAMESPACE, timeout=120)
            self._images_imported = True
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

    def upgrade(self, to: str) -> None:
        """The next start runs containerd `to` over the same state and root dirs (and the same
        shims and containers), as a host upgraded while its daemon was down: its config is
        rewritten in the format `to` reads, and ctr is `to`'s."""
        if self.daemon is not None and self.daemon.poll() is None:
            raise HarnessError("stop the daemon (crash()) before an upgrade")
        new = find_version(to)
        if reason := missing(new.name):
            raise HarnessError(f"containerd {new.name}: {reason}")
        p = self.paths
        self.version = new
        p.config.write_text(new.config(root=p.root, state=p.ns_state, address=p.address, cri=self.cri, cni=p.cni))

    def capture(self, dest: Path) -> Path:
        """A crash capture of the daemon's dirs and processes, as it stands (lab/capture.py): scan
        it with `scan_capture_args`."""
        p = self.paths
        dirs = [p.ns_state] + ([] if p.default_state else ["/run/containerd"]) + [str(p.root)]
        self.in_ns([sys.executable, "-m", "recover.generations.runtime_v2.lab.capture", str(dest), *dirs], check=True)
        return dest

    def scan_capture_args(self, dest: Path) -> list[str]:
        """`recover scan` of a capture (Containerd.capture) as of the host it was made on."""
        return [str(dest / "root" / self.paths.ns_state.lstrip("/")), "--image-root", str(dest / "root"),
                "--proc-root", str(dest / "proc"), "--containerd-root", str(self.paths.root)]

    # -- driving it

    def ctr(self, *args: str, namespace: str | None = None, check: bool = True,
            timeout: float = 30) -> subprocess.CompletedProcess:
        argv = [self.version.binary("ctr"), "-a", self.paths.address, "-n", namespace or self.namespace, *args]
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
        init = int(wait_until(lambda: _read(bundle / "init.pid"), 10, f"{bundle}/init.pid"))
        started = [(init, cmd)]
        execs = {}
        if exec_id is not None:
            self.ctr("task", "exec", "-d", "--exec-id", exec_id, cid, "/bin/sh", "-c", exec_cmd,
                     namespace=ns)
            execs[exec_id] = int(wait_until(lambda: _read(bundle / f"{exec_id}.pid"), 10, f"{exec_id}.pid"))
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
        for pid in pids():
            flags = shim_args(cmdline(pid))
            if flags and flags.get("address") == self.paths.address and (ns is None or mount_ns(pid) == ns):
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

    def cri_checkpoint(self, cid: str) -> dict | None:
        """CRI's status checkpoint of a container, parsed; None when there is none."""
        try:
            return json.loads(self.paths.cri_status(cid).read_bytes())
        except FileNotFoundError:
            return None

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
        return mount_ns(self.holder.pid) if self.holder is not None else None

    def processes(self) -> dict[int, int]:
        """Every live process the harness started, pid -> start ticks: the daemon and all in
        its mount namespace (holder, shims, runc, ctr), shims' children, containers, spawned."""
        ours: set[int] = set(self.container_pids())
        ours |= set(self.shims())
        ns = self.mount_ns()
        children: dict[int, list[int]] = {}
        for pid in pids():
            st = proc_stat(pid)
            if st is None:
                continue
            children.setdefault(st.ppid, []).append(pid)
            if ns is not None and mount_ns(pid) == ns:
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
                kill(pid, signal.SIGCONT)
            seen: dict[int, int] = {}
            self._kill_until_gone(self._container_processes, seen)
            holder = self.holder.pid if self.holder is not None else None
            self._kill_until_gone(
                lambda: {p: s for p, s in self.processes().items() if p != holder}, seen)
            for p in self._spawned:
                p.wait(5)
            for top in self.cgroup_dirs():
                remove_cgroup(top)
            if self.holder is not None and self.holder.poll() is None:
                self.holder.kill()
                self.holder.wait()
        finally:
            if self._not_subreaper:
                restore_subreaper()
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
                kill(pid, signal.SIGKILL)
            time.sleep(_POLL)



def _read(path: Path) -> str | None:
    """A small file's text once it has some (runc writes init.pid as ctr returns), else None."""
    try:
        return path.read_text() or None
    except FileNotFoundError:
        return None
