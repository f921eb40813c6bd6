"""Kubernetes pods on a lab daemon (recover/generations/runtime_v2/lab, created with `cri=True`), through the CRI API
as the kubelet calls it: a pod sandbox (the pause image: busybox sleeping) in the host's network
(no CNI), and one container (busybox) whose init traps SIGTERM into exit 42.

    with Containerd.create(version="2.3.4", cri=True) as d:
        d.start()
        with Cri(d) as cri:
            pod = cri.run_pod("web")
            cri.status(pod.container)["state"] == "CONTAINER_RUNNING"
            d.cri_checkpoint(pod.container)   # <root>/io.containerd.grpc.v1.cri/containers/<id>/status

Needs grpcio (pyproject's `test` extra); the stubs are in tests/cri_v1/.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import grpc
from cri_v1 import api_pb2 as pb
from cri_v1 import api_pb2_grpc as pb_grpc

from recover.generations.runtime_v2.lab import (
    CRI_NAMESPACE,
    INIT_CMD,
    Containerd,
    HarnessError,
    proc_stat,
    wait_until,
)
from recover.generations.runtime_v2.lab.versions import BUSYBOX_IMAGE

CALL_TIMEOUT = 60  # s: a pod start pulls nothing, but a busy 2-core host is slow


@dataclass(frozen=True)
class Pod:
    """A pod as run: its sandbox and its one container, with the pids they ran with."""

    sandbox: str  # the sandbox id: the pod's shim runs with `-id <sandbox>`
    container: str
    shim: int  # the pod's one shim, serving sandbox and container
    sandbox_init: int  # the pause process
    init: int  # the container's init
    init_start: int


class Cri:
    """A CRI client of one lab daemon (over the daemon's gRPC socket, from the host side)."""

    def __init__(self, lab: Containerd, ready_timeout: float = 60):
        if not lab.cri:
            raise HarnessError("the lab runs without the CRI plugin: Containerd.create(cri=True)")
        self.lab = lab
        self.channel = grpc.insecure_channel(f"unix:{lab.paths.host_address}")
        self.runtime = pb_grpc.RuntimeServiceStub(self.channel)
        self.wait_ready(ready_timeout)

    def __enter__(self) -> Cri:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def wait_ready(self, timeout: float = 60) -> None:
        """Until CRI answers: it refuses every call until its own recovery (reading its
        checkpoints against the restored tasks) is over, which runs after the daemon listens."""
        def answers() -> bool:
            try:
                self.runtime.Version(pb.VersionRequest(), timeout=2)
                return True
            except grpc.RpcError:
                return False
        wait_until(answers, timeout, f"CRI on containerd {self.lab.version.name} to answer")

    def run_pod(self, name: str, command: str = INIT_CMD) -> Pod:
        """A pod sandbox in the host network, and one started container running `command`."""
        paths = self.lab.paths
        logs = paths.base / "pod-logs" / name
        logs.mkdir(parents=True)
        sandbox_config = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, uid=f"uid-{name}-{uuid.uuid4().hex[:8]}",
                                           namespace="default", attempt=0),
            log_directory=str(logs),  # no hostname: the host network means the host UTS namespace
            linux=pb.LinuxPodSandboxConfig(
                cgroup_parent=paths.cgroup_parent,  # under the lab's cgroup, which close() removes
                security_context=pb.LinuxSandboxSecurityContext(
                    namespace_options=pb.NamespaceOption(network=pb.NODE, pid=pb.CONTAINER, ipc=pb.POD))))
        sandbox = self.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=sandbox_config),
                                             timeout=CALL_TIMEOUT).pod_sandbox_id
        container_config = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name="main", attempt=0), image=pb.ImageSpec(image=BUSYBOX_IMAGE),
            command=["/bin/sh", "-c", command], log_path="main.log", linux=pb.LinuxContainerConfig())
        container = self.runtime.CreateContainer(
            pb.CreateContainerRequest(pod_sandbox_id=sandbox, config=container_config,
                                      sandbox_config=sandbox_config), timeout=CALL_TIMEOUT).container_id
        self.runtime.StartContainer(pb.StartContainerRequest(container_id=container), timeout=CALL_TIMEOUT)
        sandbox_init = int(self._pid_file(sandbox))
        init = int(self._pid_file(container))
        shim = wait_until(lambda: self.lab.shim_pid(sandbox, CRI_NAMESPACE), 10, f"the shim of pod {name}")
        return Pod(sandbox, container, shim, sandbox_init, init, proc_stat(init).start)

    def _pid_file(self, task: str) -> str:
        path = self.lab.paths.bundle(CRI_NAMESPACE, task) / "init.pid"
        return wait_until(lambda: path.exists() and path.read_text(), 10, str(path))

    def status(self, container: str) -> dict:
        """ContainerStatus: state (CONTAINER_RUNNING, CONTAINER_EXITED ...), times in ns,
        exit_code, reason, message."""
        s = self.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=container),
                                         timeout=CALL_TIMEOUT).status
        return {"id": s.id, "state": pb.ContainerState.Name(s.state), "created_at": s.created_at,
                "started_at": s.started_at, "finished_at": s.finished_at, "exit_code": s.exit_code,
                "reason": s.reason, "message": s.message}

    def containers(self) -> dict[str, str]:
        """ListContainers: id -> state name."""
        reply = self.runtime.ListContainers(pb.ListContainersRequest(), timeout=CALL_TIMEOUT)
        return {c.id: pb.ContainerState.Name(c.state) for c in reply.containers}

    def sandboxes(self) -> dict[str, str]:
        """ListPodSandbox: id -> state name."""
        reply = self.runtime.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=CALL_TIMEOUT)
        return {s.id: pb.PodSandboxState.Name(s.state) for s in reply.items}
