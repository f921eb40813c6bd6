"""A Docker lab: Debian's docker.io dockerd (20.10) run over a lab containerd (lab/__init__.py),
inside that lab's private mount namespace, to see what Docker does on restart after a fault.

dockerd runs in the namespace (`Containerd.nsenter`), so it sees the containerd grpc address and
/run/containerd as the lab's containerd and shims do; it is told `--containerd <address>` and so
never starts a containerd of its own, and it keeps its containers in containerd namespace `moby`.
Everything else it writes is under the lab's base dir (same paths inside and out):

    <base>/docker/data      --data-root (containers/<id>/config.v2.json, hostconfig.json, layers)
    <base>/docker/exec      --exec-root (containerd fifos, the netns of each container)
    <base>/docker/dockerd.pid, docker.sock, daemon.json, logs/dockerd-<n>.log (--debug)
    <base>/docker/etc       bound over /etc/docker in the namespace: dockerd 20.10 hard-codes
                            /etc/docker/key.json (its trust key) whatever flags it gets
    <base>/docker/events/<name>   bound at /log in container <name>: its init logs there

Containers run with network mode `none` (no bridge, no iptables), cgroupfs, and cgroup parent
`/<lab name>`: they sit in the cgroups the containerd lab already owns, so `Containerd.close()`
kills them too.  /var/lib/docker, /run/docker and the host's /run/containerd are never touched:
/run in the namespace is the lab's own tmpfs, and the layer mounts dockerd makes stay in the
namespace (its propagation is private).

    with Containerd.create(namespace="moby") as c, Dockerd.create(c, live_restore=False) as d:
        c.start(); d.start(); d.import_image()
        box = d.run("c1", restart_policy="always")
        d.crash(); c.crash(); c.start(); d.start()
        d.inspect("c1")["State"]
"""

from __future__ import annotations

import http.client
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from . import Containerd
from .image import busybox_rootfs
from .proc import HarnessError, alive, kill, proc_stat, traps_sigterm, wait_until

__all__ = ["DOCKERD", "IMAGE", "DOCKER_NAMESPACE", "LOGGING_INIT_CMD", "Dockerd", "DockerContainer", "missing"]

DOCKERD = "/usr/sbin/dockerd"  # Debian's docker.io (20.10.24+dfsg1 on bookworm)
API = "/v1.41"  # the API version of Docker 20.10
IMAGE = "lab/busybox:latest"
DOCKER_NAMESPACE = "moby"  # the containerd namespace dockerd keeps its containers in

# The lab's init (as INIT_CMD) that also writes what happens to it into /log/events (a bind
# mount): a line per start, and per SIGTERM / SIGUSR1 / SIGINT before it exits 42 / 44 / 45.
# SIGKILL leaves no line (exit 137).  Times are the host's /proc/uptime seconds (busybox date has no %N).
LOGGING_INIT_CMD = (
    'echo "start $(cut -d" " -f1 /proc/uptime)" >>/log/events; '
    'trap \'echo "TERM $(cut -d" " -f1 /proc/uptime)" >>/log/events; exit 42\' TERM; '
    'trap \'echo "USR1 $(cut -d" " -f1 /proc/uptime)" >>/log/events; exit 44\' USR1; '
    'trap \'echo "INT $(cut -d" " -f1 /proc/uptime)" >>/log/events; exit 45\' INT; '
    'sleep 1000000 & wait'
)


def missing() -> str | None:
    """Why a Docker lab cannot run here (None when it can)."""
    if os.geteuid() != 0:
        return "needs root"
    if not os.access(DOCKERD, os.X_OK):
        return f"{DOCKERD} is missing (apt-get install docker.io)"
    if not Path("/etc/docker").is_dir():
        return "/etc/docker is missing (docker.io ships it; the lab binds a private dir over it)"
    return None


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


@dataclass(frozen=True)
class DockerContainer:
    """A container made by Dockerd.run, as it was once its init ran its command."""

    name: str
    id: str
    pid: int  # the init, as the host sees it
    pid_start: int  # its start ticks (tells a reused pid apart)
    events: Path  # host path of the file its init logs starts and signals to


@dataclass
class Dockerd:
    containerd: Containerd
    live_restore: bool
    storage_driver: str = "overlay2"
    daemon: subprocess.Popen | None = None
    starts: int = 0
    made: list[DockerContainer] = field(default_factory=list)
    _closed: bool = False

    # -- where things are

    @property
    def base(self) -> Path:
        return self.containerd.paths.base / "docker"

    @property
    def data_root(self) -> Path:
        return self.base / "data"

    @property
    def exec_root(self) -> Path:
        return self.base / "exec"

    @property
    def sock(self) -> Path:
        return self.base / "docker.sock"

    @property
    def config_file(self) -> Path:
        return self.base / "daemon.json"

    @property
    def pidfile(self) -> Path:
        return self.base / "dockerd.pid"

    def log_path(self, start: int | None = None) -> Path:
        return self.base / "logs" / f"dockerd-{start or self.starts}.log"

    def log(self, start: int | None = None) -> str:
        path = self.log_path(start)
        return path.read_text(errors="replace") if path.exists() else ""

    def container_dir(self, cid: str) -> Path:
        """<data-root>/containers/<id>: config.v2.json and hostconfig.json as dockerd wrote them."""
        return self.data_root / "containers" / cid

    def on_disk(self, cid: str) -> tuple[dict, dict]:
        d = self.container_dir(cid)
        return (json.loads((d / "config.v2.json").read_text()), json.loads((d / "hostconfig.json").read_text()))

    # -- life cycle

    @classmethod
    def create(cls, containerd: Containerd, live_restore: bool, storage_driver: str = "overlay2") -> Dockerd:
        """Dirs and config of a dockerd over `containerd` (a lab whose namespace exists); no
        daemon yet.  storage_driver: overlay2 works on an ext4 /tmp; vfs works anywhere."""
        if reason := missing():
            raise HarnessError(f"dockerd: {reason}")
        self = cls(containerd, live_restore, storage_driver)
        for d in (self.base, self.data_root, self.exec_root, self.base / "logs", self.base / "etc",
                  self.base / "events"):
            d.mkdir(mode=0o711, parents=True)
        self.config_file.write_text(json.dumps({
            "live-restore": live_restore,
            "debug": True,
            "storage-driver": storage_driver,
            "exec-opts": ["native.cgroupdriver=cgroupfs"],  # no systemd here
            "cgroup-parent": containerd.paths.cgroup_parent,  # the lab's cgroups: its close() kills them
        }, indent=2) + "\n")
        # /etc/docker is the only host path dockerd 20.10 writes to whatever it is told (key.json)
        containerd.in_ns(["mount", "--bind", str(self.base / "etc"), "/etc/docker"], check=True)
        return self

    def __enter__(self) -> Dockerd:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def running(self) -> bool:
        return self.daemon is not None and self.daemon.poll() is None

    def start(self, timeout: float = 120) -> float:
        """Start dockerd; return the seconds until its API answered /_ping.  dockerd listens
        early but serves only after NewDaemon, whose restore() restores, shuts down, restarts
        and removes the containers (each as its policy says): once it answers, restore is over."""
        if self.running():
            raise HarnessError("dockerd is already running")
        self.starts += 1
        argv = [DOCKERD, "--config-file", str(self.config_file),
                "--containerd", self.containerd.paths.address, "--containerd-namespace", DOCKER_NAMESPACE,
                "--data-root", str(self.data_root), "--exec-root", str(self.exec_root),
                "--pidfile", str(self.pidfile), "-H", f"unix://{self.sock}",
                "--bridge=none", "--iptables=false", "--ip-masq=false", "--ip-forward=false",
                "--userland-proxy=false"]
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}
        t0 = time.monotonic()
        with open(self.log_path(), "wb") as log:
            self.daemon = subprocess.Popen(self.containerd.nsenter(argv), stdin=subprocess.DEVNULL,
                                           stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        wait_until(self._answers, timeout, "dockerd's API (/_ping)")
        return time.monotonic() - t0

    def _answers(self) -> bool:
        if self.daemon.poll() is not None:
            raise HarnessError(f"dockerd exited {self.daemon.returncode}:\n{self.log()[-3000:]}")
        try:
            status, body = self._request("GET", "/_ping", timeout=2)
        except (OSError, http.client.HTTPException):
            return False
        return status == 200

    def crash(self) -> None:
        """SIGKILL dockerd (containerd, the shims and the containers live on)."""
        self.daemon.kill()
        self.daemon.wait()

    # -- the API

    def _request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                 timeout: float = 60) -> tuple[int, bytes]:
        conn = _UnixHTTPConnection(str(self.sock), timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def api(self, method: str, path: str, body: dict | bytes | None = None, timeout: float = 60,
            ok: tuple[int, ...] = (200, 201, 204, 304)):
        """One call of the Engine API (path without the version prefix): its JSON answer (None
        when empty); HarnessError on a status outside `ok`."""
        headers = {}
        if isinstance(body, dict):
            body = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        elif body is not None:
            headers["Content-Type"] = "application/x-tar"
        status, data = self._request(method, API + path, body, headers, timeout)
        if status not in ok:
            raise HarnessError(f"{method} {path}: {status} {data[:500].decode(errors='replace')}")
        if not data:
            return None
        try:
            return json.loads(data)
        except json.JSONDecodeError:
            return data.decode(errors="replace")  # streams (image import) are JSON lines

    def import_image(self, name: str = IMAGE) -> None:
        """The busybox-static rootfs as image `name` (no registry is reachable here)."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as t:
            t.add(busybox_rootfs(), arcname=".")
        repo, _, tag = name.rpartition(":")
        query = urllib.parse.urlencode({"fromSrc": "-", "repo": repo, "tag": tag})
        out = self.api("POST", f"/images/create?{query}", buf.getvalue(), timeout=120)
        if "error" in str(out).lower():
            raise HarnessError(f"image import: {out}")

    def run(self, name: str, cmd: str = LOGGING_INIT_CMD, restart_policy: str = "no", auto_remove: bool = False,
            stop_timeout: int | None = None, stop_signal: str | None = None, max_retries: int = 0,
            image: str = IMAGE, traps: bool = True) -> DockerContainer:
        """Create and start a container (network none, /log bound to its events file's dir);
        return once its init runs and (`traps`: a cmd that sets one) has set its SIGTERM trap."""
        events = self.base / "events" / name
        events.mkdir()
        config: dict = {
            "Image": image, "Cmd": ["/bin/sh", "-c", cmd], "Env": ["PATH=/bin"],
            "HostConfig": {"NetworkMode": "none", "AutoRemove": auto_remove, "Binds": [f"{events}:/log"],
                           # "no" as the docker CLI sends it (dockerd also takes "" for it)
                           "RestartPolicy": {"Name": restart_policy, "MaximumRetryCount": max_retries}},
        }
        if stop_timeout is not None:
            config["StopTimeout"] = stop_timeout
        if stop_signal is not None:
            config["StopSignal"] = stop_signal
        cid = self.api("POST", f"/containers/create?name={name}", config)["Id"]
        self.api("POST", f"/containers/{cid}/start")
        pid = self.inspect(cid)["State"]["Pid"]
        if traps:
            wait_until(lambda: traps_sigterm(pid), 10, f"container {name}'s init (pid {pid}) to set its trap")
        box = DockerContainer(name, cid, pid, proc_stat(pid).start, events / "events")
        self.made.append(box)
        return box

    def inspect(self, name: str) -> dict | None:
        """GET /containers/<name>/json; None when dockerd knows no such container."""
        status, data = self._request("GET", f"{API}/containers/{name}/json")
        if status == 404:
            return None
        if status != 200:
            raise HarnessError(f"inspect {name}: {status} {data[:300]!r}")
        return json.loads(data)

    def shim_pid(self, box: DockerContainer) -> int | None:
        return self.containerd.shim_pid(box.id, DOCKER_NAMESPACE)

    def bundle(self, box: DockerContainer) -> Path:
        return self.containerd.paths.bundle(DOCKER_NAMESPACE, box.id)

    # -- clean up

    def close(self, remove: bool = True) -> None:
        """Kill dockerd, the containers it made (init and every process of their cgroups) and
        their shims, unmount what dockerd mounted in the namespace, remove its dirs.  The
        containerd lab is left as it is (close it after)."""
        if self._closed:
            return
        self._closed = True
        if self.running():
            self.crash()
        victims: dict[int, int | None] = {}
        for box in self.made:
            victims[box.pid] = box.pid_start
            for top in self.containerd.cgroup_dirs():
                procs = top / box.id / "cgroup.procs"
                try:
                    victims.update({int(p): None for p in procs.read_text().split()})
                except OSError:
                    pass
        shims = {pid for pid, flags in self.containerd.shims().items() if flags.get("namespace") == DOCKER_NAMESPACE}
        for pid in shims:
            kill(pid, signal.SIGCONT)  # a stopped shim cannot reap its init
        for pid, start in victims.items():
            if alive(pid, start):
                kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(alive(p, s) for p, s in victims.items()) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in shims:
            kill(pid, signal.SIGKILL)
        self._unmount()
        if remove:
            shutil.rmtree(self.base, ignore_errors=True)

    def _unmount(self) -> None:
        """Lazily unmount, deepest first, every mount under our dir in the namespace (overlay
        layers, shm, netns files, data-root's bind onto itself) and /etc/docker's bind."""
        holder = self.containerd.holder
        if holder is None or holder.poll() is not None:
            return  # the namespace is gone with all its mounts
        try:
            lines = Path(f"/proc/{holder.pid}/mountinfo").read_text().splitlines()
        except OSError:
            return
        points = [line.split()[4] for line in lines]
        ours = [p for p in points if p == "/etc/docker" or p.startswith(str(self.base) + "/")]
        for point in sorted(set(ours), key=len, reverse=True):
            for _ in range(points.count(point)):
                self.containerd.in_ns(["umount", "-l", point])
