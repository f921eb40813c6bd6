"""The containerd versions the lab (recover/generations/runtime_v2/lab) runs, where their binaries are, and the
config each reads.

    1.6.20   Debian 12's package: /usr/bin/containerd, containerd-shim-runc-v2, ctr
    1.7.34   the archives in ../shared/containerd/ (the project's shared dir), extracted by
    2.3.4    .ci/run into /opt/recover-lab/containerd-<version>/ (RECOVER_LAB_BINARIES: another
             dir holding the containerd-<version>/ dirs)

1.6 and 1.7 read config version 2, 2.x version 3 (the CRI plugin split into
`io.containerd.cri.v1.images` and `io.containerd.cri.v1.runtime`).  Every config keeps the
daemon off the host's paths (the `opt` plugin would make /opt/containerd, CRI's CNI conf syncer
/etc/cni/net.d, NRI /etc/nri and /opt/nri) and keeps the shim load and clean-up timeouts at 5 s,
as the defaults say, so that a test can rely on them.  CRI may not lower a pod's oom_score_adj
below the daemon's (`restrict_oom_score_adj`): runc cannot set the -998 it asks for a sandbox
on a host (a container itself) that denies it, and fails with no more than "can't get final
child's PID from pipe".
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .proc import is_static

BUSYBOX = Path("/bin/busybox")  # busybox-static installs it here
HOST_TOOLS = ("runc", "unshare", "nsenter", "chroot")
DEBIAN = "containerd runc busybox-static"
BINARIES_ENV = "RECOVER_LAB_BINARIES"
BINARIES_DEFAULT = Path("/opt/recover-lab")
DAEMON_BINARIES = ("containerd", "containerd-shim-runc-v2", "ctr")

# The CRI pod's images (recover/lab_image.py builds them, the lab imports them).
PAUSE_IMAGE = "local.test/pause:1"
BUSYBOX_IMAGE = "local.test/busybox:1"

TIMEOUTS = """
[timeouts]
  "io.containerd.timeout.shim.cleanup" = "5s"
  "io.containerd.timeout.shim.load" = "5s"
  "io.containerd.timeout.shim.shutdown" = "3s"
  "io.containerd.timeout.task.state" = "2s"
"""

# plugins a test never uses, or that would write on the host (opt: /opt/containerd; nri)
_UNUSED = [
    "io.containerd.internal.v1.opt",
    "io.containerd.nri.v1.nri",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.snapshotter.v1.blockfile",
    "io.containerd.snapshotter.v1.erofs",
    "io.containerd.differ.v1.erofs",
    "io.containerd.mount-handler.v1.erofs",
]
_CRI_V2 = ["io.containerd.grpc.v1.cri"]
_CRI_V3 = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime",
           "io.containerd.podsandbox.controller.v1.podsandbox"]

CRI_V2 = """
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  enable_cdi = false
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni}/bin"
    conf_dir = "{cni}/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
"""

CRI_V3 = """
[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = '{pause}'
[plugins.'io.containerd.cri.v1.runtime']
  enable_cdi = false
  restrict_oom_score_adj = true
  cdi_spec_dirs = []
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ['{cni}/bin']
    conf_dir = '{cni}/net.d'
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = 'runc'
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = 'io.containerd.runc.v2'
      sandboxer = 'podsandbox'
[plugins.'io.containerd.grpc.v1.cri']
  disable_tcp_service = true
  stream_server_address = '127.0.0.1'
"""


@dataclass(frozen=True)
class Version:
    """One containerd release the lab can run."""

    name: str  # "1.6.20", "1.7.34", "2.3.4"
    config_version: int  # of config.toml: 2 (1.6, 1.7) or 3 (2.x)
    debian: bool  # the Debian package, not an extracted archive

    @property
    def major(self) -> int:
        return int(self.name.split(".")[0])

    @property
    def bin_dir(self) -> Path:
        """Where its containerd, containerd-shim-runc-v2 and ctr are."""
        if self.debian:
            return Path("/usr/bin")
        return Path(os.environ.get(BINARIES_ENV) or BINARIES_DEFAULT) / f"containerd-{self.name}"

    def binary(self, name: str) -> str:
        return str(self.bin_dir / name)

    @property
    def daemon_path(self) -> str:
        """PATH for the daemon: its own dir first, so that it runs ITS shim (containerd looks the
        shim binary up on PATH), then the system's dirs for runc."""
        return ":".join(dict.fromkeys([str(self.bin_dir), "/usr/sbin", "/usr/bin", "/sbin", "/bin"]))

    @property
    def writes_bootstrap_json(self) -> bool:
        """2.x writes `bootstrap.json` in a bundle where 1.6 and 1.7 write `address`."""
        return self.major >= 2

    def config(self, *, root: Path, state: str, address: str, cri: bool, cni: Path) -> str:
        """config.toml: the daemon's own root, state and gRPC address, debug logs, the 5 s shim
        timeouts, and CRI only when asked (it slows the start and restore)."""
        disabled = list(_UNUSED) + ([] if cri else (_CRI_V3 if self.config_version == 3 else _CRI_V2))
        head = "\n".join([
            f"version = {self.config_version}",
            f'root = "{root}"',
            f'state = "{state}"',
            "disabled_plugins = [",
            *(f'  "{p}",' for p in disabled),
            "]",
            "",
            "[grpc]",
            f'  address = "{address}"',
            "",
            "[debug]",
            '  level = "debug"',
        ])
        cri_part = ""
        if cri:
            cri_part = "\n[plugins]" + (CRI_V3 if self.config_version == 3 else CRI_V2).format(
                pause=PAUSE_IMAGE, cni=cni)
        return head + "\n" + TIMEOUTS + cri_part


VERSIONS = {v.name: v for v in (
    Version("1.6.20", 2, debian=True),
    Version("1.7.34", 2, debian=False),
    Version("2.3.4", 3, debian=False),
)}
DEFAULT = "1.6.20"


def version(name: str) -> Version:
    try:
        return VERSIONS[name]
    except KeyError:
        raise ValueError(f"the lab runs containerd {', '.join(VERSIONS)}, not {name!r}") from None


@functools.cache
def _namespace_problem() -> str | None:
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "--",
                            "mount", "-t", "tmpfs", "tmpfs", "/run"],
                           capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        return f"cannot make a private mount namespace: {probe.stderr.strip()}"
    return None


@functools.cache
def missing(name: str = DEFAULT) -> str | None:
    """Why a real containerd of this version cannot run here, or None when it can."""
    v = version(name)
    if os.geteuid() != 0:
        return "needs root (containerd, runc and a private mount namespace)"
    absent = [b for b in HOST_TOOLS if shutil.which(b) is None]
    if v.debian:
        absent += [b for b in DAEMON_BINARIES if not os.access(v.binary(b), os.X_OK)]
    if absent:
        return f"not installed: {', '.join(absent)} (apt-get install {DEBIAN})"
    if not BUSYBOX.is_file() or not is_static(BUSYBOX):
        return f"no static busybox at {BUSYBOX} (apt-get install busybox-static)"
    if not v.debian:
        gone = [b for b in DAEMON_BINARIES if not os.access(v.binary(b), os.X_OK)]
        if gone:
            return (f"containerd {v.name} not extracted: no {', '.join(gone)} in {v.bin_dir} "
                    f"(.ci/run extracts ../shared/containerd/containerd-{v.name}-linux-amd64.tar.xz "
                    f"there; {BINARIES_ENV} names another dir holding containerd-{v.name}/)")
    return _namespace_problem()
