"""Generate a benchmark containerd 1.6 state dir of N tasks, with the files containerd 1.6 and
the runc shim write, runc's state beside it and CRI's checkpoints in a root dir.

    python bench/make_state_v2.py DEST N

DEST/state is the state dir (`recover scan DEST/state --runc-root DEST/runc --containerd-root
DEST/root`).  Its shapes come from the real capture fixtures/containerd-1.6/ctrd16-cri-d.tar.gz:
two in five tasks are Docker's (namespace moby: config.json with Docker's env, mounts and a
seccomp profile), the other three a Kubernetes pod (namespace k8s.io: its sandbox and two
containers, CRI's annotations, a CRI checkpoint for each container, a quarter of them exited).  Every task has
init.pid, address, config.json, options.json, runtime, shim-binary-path, the `log` FIFO, an empty
log.json, rootfs/ and the `work` link (its work dir exists); one in ten has an exec's pid file.
runc's state names the init with its start ticks.  Half the pids are live processes (alive when
the dir was made, pid 1 first), half dead ones.  The shims are gone (their sockets are missing):
the state after a crash that killed them.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import sys
import tarfile

from make_root import _dead_pids, _stat_start

CAPTURE = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "containerd-1.6" / "ctrd16-cri-d.tar.gz"
SANDBOX = "b55ce0b16aa89f93495a022910b879459d740c27815b6d1830dbbce73f61747c"
CONTAINER = "eefa3c21a97d10d64904937f0265277e02e6f5ff59fee4cc8169e46ae2a49fed"
TASKS = "io.containerd.runtime.v2.task"
GRPC = "/run/containerd/containerd.sock"
SHIM = "/usr/bin/containerd-shim-runc-v2"
# what containerd's Docker and CRI specs add to the capture's minimal ones
SYSCALLS = [f"syscall_{i:03d}" for i in range(320)]
SECCOMP = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
           "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
           "syscalls": [{"names": SYSCALLS[:300], "action": "SCMP_ACT_ALLOW"},
                        {"names": SYSCALLS[300:], "action": "SCMP_ACT_ALLOW",
                         "args": [{"index": 0, "value": 2114060288, "op": "SCMP_CMP_MASKED_EQ"}]}]}
ENV = [f"SERVICE_{i}_PORT=tcp://10.96.{i}.1:{8000 + i}" for i in range(24)]
MOUNTS = [{"destination": f"/etc/config-{i}", "type": "bind", "source": f"/var/lib/kubelet/pods/uid/volumes/{i}",
           "options": ["rbind", "rprivate", "ro"]} for i in range(8)]


def _templates() -> dict[str, dict]:
    wanted = {f"{TASKS}/k8s.io/{SANDBOX}/config.json": "sandbox", f"{TASKS}/k8s.io/{CONTAINER}/config.json": "container",
              f"runc/k8s.io/{CONTAINER}/state.json": "runc",
              f"io.containerd.grpc.v1.cri/containers/{CONTAINER}/status": "cri"}
    out = {}
    with tarfile.open(CAPTURE) as tar:
        for member in tar.getmembers():
            for suffix, name in wanted.items():
                if "/before/" in member.name and member.name.endswith(suffix):
                    out[name] = json.load(tar.extractfile(member))
    return out


def _config(template: dict, annotations: dict | None, seccomp: bool) -> bytes:
    spec = json.loads(json.dumps(template))
    spec["process"]["env"] = spec["process"]["env"] + ENV
    spec["mounts"] = spec["mounts"] + MOUNTS
    if seccomp:
        spec["linux"]["seccomp"] = SECCOMP
    if annotations is None:
        spec.pop("annotations", None)
    else:
        spec["annotations"] = {**spec.get("annotations", {}), **annotations}
    return json.dumps(spec, separators=(",", ":")).encode()


def make_state(dest: pathlib.Path, tasks: int) -> pathlib.Path:
    t = _templates()
    live = sorted(int(n) for n in os.listdir("/proc") if n.isdigit())[:50]
    live_start = {p: _stat_start(p) for p in live}
    live = [p for p in live if live_start[p] is not None]
    dead = _dead_pids(200)
    tmp = dest.with_name(dest.name + ".tmp")
    state, runc, root = tmp / "state", tmp / "runc", tmp / "root"
    final_root = dest / "root"
    for i in range(tasks):  # in fives: two Docker containers, then a pod's sandbox and its two containers
        if i % 5 < 2:
            ns, tid, kind, sandbox = "moby", hashlib.sha256(f"docker-{i}".encode()).hexdigest(), None, None
        else:
            ns = "k8s.io"
            sandbox = hashlib.sha256(f"pod-{i // 5}".encode()).hexdigest()
            kind = "sandbox" if i % 5 == 2 else "container"
            tid = sandbox if kind == "sandbox" else hashlib.sha256(f"k8s-{i}".encode()).hexdigest()
        bundle = state / TASKS / ns / tid
        bundle.mkdir(parents=True, exist_ok=True)
        if i % 2:
            pid = live[i % len(live)]
            start = live_start[pid]
        else:
            pid, start = dead[i % len(dead)], 1000 + i
        (bundle / "init.pid").write_bytes(str(pid).encode())
        if i % 10 == 7:
            (bundle / f"exec-{i:06d}.pid").write_bytes(str(dead[(i + 3) % len(dead)]).encode())
        shim_id = sandbox or tid
        socket = hashlib.sha256(os.path.join(GRPC, ns, shim_id).encode()).hexdigest()
        (bundle / "address").write_bytes(f"unix:///run/containerd/s/{socket}".encode())
        if kind is None:
            (bundle / "config.json").write_bytes(_config(t["container"], None, seccomp=True))
            (bundle / "options.json").write_bytes(b"{}")
            (bundle / "runtime").write_bytes(b"")
        else:
            annotations = {"io.kubernetes.cri.container-type": kind, "io.kubernetes.cri.sandbox-id": sandbox}
            template = t["sandbox"] if kind == "sandbox" else t["container"]
            (bundle / "config.json").write_bytes(_config(template, annotations, seccomp=kind == "container"))
            options = {"binary_name": "/usr/bin/runc", "root": "/run/containerd/runc/k8s.io", "systemd_cgroup": True}
            (bundle / "options.json").write_bytes(json.dumps(options, separators=(",", ":")).encode())
            (bundle / "runtime").write_bytes(b"/usr/bin/runc")
        (bundle / "shim-binary-path").write_bytes(SHIM.encode())
        os.mkfifo(bundle / "log")
        (bundle / "log.json").write_bytes(b"")
        (bundle / "rootfs").mkdir()
        os.symlink(final_root / TASKS / ns / tid, bundle / "work")
        (root / TASKS / ns / tid).mkdir(parents=True, exist_ok=True)
        runc_state = dict(t["runc"], id=tid, init_process_pid=pid, init_process_start=start)
        (runc / ns / tid).mkdir(parents=True)
        (runc / ns / tid / "state.json").write_bytes(json.dumps(runc_state, separators=(",", ":")).encode())
        if kind == "container":
            status = dict(t["cri"], Pid=pid, FinishedAt=1795899173552491140 if i % 4 == 1 else 0,
                          ExitCode=137 if i % 4 == 1 else 0)
            checkpoint = root / "io.containerd.grpc.v1.cri" / "containers" / tid
            checkpoint.mkdir(parents=True)
            (checkpoint / "status").write_bytes(json.dumps(status, separators=(",", ":")).encode())
    tmp.rename(dest)
    return dest


if __name__ == "__main__":
    make_state(pathlib.Path(sys.argv[1]).resolve(), int(sys.argv[2]))
