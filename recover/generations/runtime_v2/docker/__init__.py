"""Docker's own record beside a containerd 1.x/2.x state dir (SPEC-v2 §2b): dockerd keeps one
per container (`<data-root>/containers/<id>/config.v2.json` and `hostconfig.json`) and decides
again on its own restart (predict.py).  Docker's tasks are those of containerd namespace `moby`
(dockerd's `--containerd-namespace`).

Where: `--docker-root`, else the `--data-root` of a dockerd that runs in recover's mount namespace,
else `data-root` in daemon.json, else /var/lib/docker; inside `--image-root` when given.  Whether
live-restore is on: the running dockerd's `--live-restore`, else its `--config-file` (default
/etc/docker/daemon.json), else off (Docker's default).  Nothing here is written, nothing dialled."""

from __future__ import annotations

import os
import re
import signal
from typing import Any

import orjson

from ....around import read_small
from ....fsread import printable
from ....host import flag_value
from ....rules import Finding, finding
from ....value import Value

DATA_ROOT = "/var/lib/docker"
DAEMON_JSON = "/etc/docker/daemon.json"
NAMESPACE = "moby"
DEFAULT_STOP_TIMEOUT = 10  # s: moby's container.DefaultStopTimeout
_ID = re.compile(r"[0-9a-f]{64}")


class DockerRecord(Value):
    """One container as dockerd wrote it (the fields its restore decides with)."""

    id: str
    name: str | None = None  # without Docker's leading "/"
    running: bool = False
    paused: bool = False
    restarting: bool = False
    dead: bool = False
    pid: int = 0
    exit_code: int | None = None
    started_before: bool = False  # HasBeenStartedBefore: the restart policy applies only then
    manually_stopped: bool = False  # HasBeenManuallyStopped: `docker stop` (unless-stopped stays down)
    stop_signal: str = "SIGTERM"
    stop_timeout: int = DEFAULT_STOP_TIMEOUT
    restart_policy: str = "no"
    max_retries: int = 0
    restart_count: int = 0
    auto_remove: bool = False
    problem: str | None = None  # why the record cannot be read (nothing above is then known)

    @property
    def status(self) -> str:
        """What `docker ps -a` says of it (moby's State.StateString)."""
        if self.running:
            return "paused" if self.paused else "restarting" if self.restarting else "running"
        if self.dead:
            return "dead"
        return "exited" if self.started_before else "created"


class Dockerd(Value):
    """A dockerd process of this data root, found by its argv (identity checked where it can be)."""

    pid: int
    argv: tuple[str, ...]
    same_root: bool | None  # its data root IS ours (device and inode); None: cannot be told


class DockerView(Value):
    """Docker's side of the host: where its record is, whether it will live-restore, its dockerd."""

    data_root: str  # as the host names it
    data_root_from: str
    namespace: str
    live_restore: bool
    live_restore_from: str
    dockerd: Dockerd | None
    records: dict[str, str]  # container id -> its dir (in the image, when one is read)
    findings: tuple[Finding, ...] = ()

    def json(self) -> dict:
        return {"data_root": printable(self.data_root), "data_root_from": self.data_root_from,
                "namespace": self.namespace, "live_restore": self.live_restore,
                "live_restore_from": self.live_restore_from,
                "dockerd": None if self.dockerd is None else {"pid": self.dockerd.pid,
                                                              "same_data_root": self.dockerd.same_root}}


def _flag(argv: tuple[str, ...] | list[str], name: str) -> str | None:
    """A dockerd flag's value: `--name=V` or `--name V`."""
    return flag_value(list(argv), name)


def _bool_flag(argv: tuple[str, ...] | list[str], name: str) -> bool | None:
    for a in argv:
        if a == name:
            return True
        if a.startswith(name + "="):
            return a.partition("=")[2].lower() in ("1", "t", "true")
    return None


def _json(path: str) -> tuple[dict | None, str | None]:
    data = read_small(path)
    if data is None:
        return None, "missing" if not os.path.lexists(path) else "not a readable regular file"
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        return None, f"is not JSON ({e})"
    return (doc, None) if isinstance(doc, dict) else (None, "is not a JSON object")


def dockerds(host: Any) -> list[Dockerd]:
    """The dockerd processes that run (any root's), by pid."""
    if host is None:
        return []
    return [Dockerd(pid, tuple(argv), None) for pid, argv in sorted(host.all_argv().items())
            if argv and os.path.basename(argv[0]) == "dockerd"]


def _same_dir(proc_root: str, pid: int, inside: str, ours: str) -> bool | None:
    """Whether `inside` (a path in pid's mount namespace) is the dir `ours`: by device and inode."""
    try:
        theirs, mine = os.stat(os.path.join(proc_root, str(pid), "root", inside.lstrip("/"))), os.stat(ours)
    except (OSError, ValueError):
        return None
    return (theirs.st_dev, theirs.st_ino) == (mine.st_dev, mine.st_ino)


def _absolute(value: object) -> str | None:
    """A path a file or an argv names, when it is one (absolute, no NUL)."""
    return value if isinstance(value, str) and value.startswith("/") and "\0" not in value else None


def _mount_namespace(proc_root: str, pid: int | str) -> str | None:
    try:
        return os.readlink(os.path.join(proc_root, str(pid), "ns", "mnt"))
    except OSError:
        return None


def docker_view(around: Any, host: Any, namespaces: set[str]) -> DockerView | None:
    """Docker's record beside the root, or None where there is none (no containers dir), or
    where the root holds no task of Docker's namespace and no --docker-root names it (a root of
    another containerd, e.g. a test's, never takes this host's Docker for its own)."""
    # this host's own /proc, and its own paths or another mount namespace's through /proc/<pid>/root
    # (a DaemonSet's view of its node): identities compare there; in an image or beside a capture not
    in_namespace = re.fullmatch(r"/proc/(\d+)/root", around.image_root or "")
    live = host is not None and host.live and (around.image_root is None or in_namespace is not None)
    running = dockerds(host)
    # the dockerds of the namespace the root's paths are read in, whose argv name its paths
    home = _mount_namespace(host.proc_root, in_namespace.group(1) if in_namespace else "self") if live else None
    ours = [d for d in running if home is not None and _mount_namespace(host.proc_root, d.pid) == home]
    argv = ours[0].argv if ours else ()
    config_path = around.docker_config or _absolute(_flag(argv, "--config-file")) or DAEMON_JSON
    config, config_problem = _json(around.path(config_path))
    findings: list[Finding] = []
    if config_problem is not None and config_problem != "missing":
        findings.append(finding("F201", f"{printable(config_path)} {config_problem}: live-restore cannot be read from "
                                "it (judged off, Docker's default)"))
        config = None
    if config is not None and "data-root" in config and _absolute(config["data-root"]) is None:
        findings.append(finding("F201", f"{printable(config_path)}: its data-root is no absolute path "
                                f"({printable(repr(config['data-root']))}): Docker's default is read"))
    if around.docker_root is not None:
        data_root, data_root_from = around.docker_root, "--docker-root"
    elif _absolute(_flag(argv, "--data-root")):
        data_root, data_root_from = _flag(argv, "--data-root"), f"dockerd's --data-root (pid {ours[0].pid})"
    elif config is not None and _absolute(config.get("data-root")):
        data_root, data_root_from = config["data-root"], f"data-root in {config_path}"
    else:
        data_root, data_root_from = DATA_ROOT, "Docker's default"
    # the dockerd of this data root: the same dir by identity (another mount namespace's dockerd
    # with the same paths is another Docker); beside a capture or in an image it cannot be told
    dockerd = None
    for d in running:
        same = _same_dir(host.proc_root, d.pid, _absolute(_flag(d.argv, "--data-root")) or DATA_ROOT,
                         around.path(data_root)) if live else None
        if same or (same is None and not live):
            dockerd = Dockerd(d.pid, d.argv, same)
            break
    try:  # a container's dir, never a link (which could lead out of the data root or the image)
        with os.scandir(around.path(os.path.join(data_root, "containers"))) as entries:
            names = sorted(e.name for e in entries if _ID.fullmatch(e.name) and e.is_dir(follow_symlinks=False))
    except (OSError, ValueError):
        return None
    containers = around.path(os.path.join(data_root, "containers"))
    flag = _bool_flag(dockerd.argv, "--live-restore") if dockerd else None
    if flag is not None:
        live_restore, source = flag, f"dockerd's argv (pid {dockerd.pid})"
    elif config is not None and isinstance(config.get("live-restore"), bool):
        live_restore, source = config["live-restore"], config_path
    else:
        live_restore, source = False, f"Docker's default: no live-restore in {config_path}"
    namespace = (_flag(dockerd.argv, "--containerd-namespace") if dockerd else None) or NAMESPACE
    if around.docker_root is None and namespace not in namespaces:
        return None
    return DockerView(data_root, data_root_from, namespace, live_restore, source, dockerd,
                      {n: os.path.join(containers, n) for n in names}, tuple(findings))


def _signal_name(value: object) -> str:
    """Config.StopSignal as a signal's name; what moby cannot parse is SIGTERM, as for moby."""
    name = value.upper() if isinstance(value, str) else ""
    if name.isdigit():
        try:
            return signal.Signals(int(name)).name
        except ValueError:
            return "SIGTERM"
    name = name if name.startswith("SIG") else "SIG" + name
    return name if name in signal.Signals.__members__ else "SIGTERM"


def read_record(container_dir: str) -> DockerRecord:
    cid = os.path.basename(container_dir)
    config, problem = _json(os.path.join(container_dir, "config.v2.json"))
    if config is None:
        return DockerRecord(cid, problem=f"config.v2.json {problem}")
    host, host_problem = _json(os.path.join(container_dir, "hostconfig.json"))
    state = config.get("State") if isinstance(config.get("State"), dict) else {}
    conf = config.get("Config") if isinstance(config.get("Config"), dict) else {}
    host = host or {}
    policy = host.get("RestartPolicy") if isinstance(host.get("RestartPolicy"), dict) else {}
    name = config.get("Name")

    def num(value: object, default: int = 0) -> int:
        return value if isinstance(value, int) and not isinstance(value, bool) else default

    return DockerRecord(
        cid, name=name.lstrip("/") if isinstance(name, str) else None,
        running=state.get("Running") is True, paused=state.get("Paused") is True,
        restarting=state.get("Restarting") is True, dead=state.get("Dead") is True, pid=num(state.get("Pid")),
        exit_code=num(state.get("ExitCode")) if "ExitCode" in state else None,
        started_before=config.get("HasBeenStartedBefore") is True,
        manually_stopped=config.get("HasBeenManuallyStopped") is True,
        stop_signal=_signal_name(conf.get("StopSignal")),
        stop_timeout=num(conf.get("StopTimeout"), DEFAULT_STOP_TIMEOUT) if conf.get("StopTimeout") is not None
        else DEFAULT_STOP_TIMEOUT,
        restart_policy=policy["Name"] if isinstance(policy.get("Name"), str) and policy["Name"] else "no",
        max_retries=num(policy.get("MaximumRetryCount")), restart_count=num(config.get("RestartCount")),
        auto_remove=host.get("AutoRemove") is True,
        problem=None if host_problem is None or host_problem == "missing" else f"hostconfig.json {host_problem}")


__all__ = ["DockerRecord", "DockerView", "docker_view", "read_record", "NAMESPACE"]
