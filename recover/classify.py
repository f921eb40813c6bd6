"""What a directory is, decided before anything in it is judged.

recover never reads a directory as a layout it is not: a containerd 1.x/2.x state dir read as a
0.2 root looks like one container "containerd would delete", and a repair would move the whole
task dir out.  So the root is classified first, from its listing (and, for a 0.2 root, the first
container dir that shows a 0.2 file), and every command acts only on what it recognised.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from .fsread import dir_below

Kind = Literal["containerd-0.2", "empty", "containerd-runtime-v2", "containerd-root-dir", "docker-data-root",
               "other"]

# the first that exists is read when no root is named: a system containerd 1.x/2.x (Docker 20+ on
# most distributions, Kubernetes), the containerd Docker 18.09+ runs itself, Docker 1.11-1.13's 0.2
DEFAULT_ROOTS = ("/run/containerd", "/var/run/docker/containerd/daemon", "/var/run/docker/libcontainerd/containerd")

# a containerd 1.x/2.x state dir (`state` in config.toml, default /run/containerd)
RUNTIME_V2_MARKERS = ("io.containerd.runtime.v2.task", "io.containerd.runtime.v1.linux", "containerd.sock",
                      "containerd.sock.ttrpc")
# containerd 1.x/2.x's root dir (`root`, default /var/lib/containerd): it also holds task work dirs
ROOT_DIR_MARKERS = ("io.containerd.metadata.v1.bolt", "io.containerd.content.v1.content")
DOCKER_DATA_MARKERS = ("containers", "image")  # /var/lib/docker
# a filesystem root (`/`, a mounted image): its stray files may look like anything
FILESYSTEM_ROOT_DIRS = frozenset(("bin", "boot", "dev", "etc", "home", "lib", "proc", "root", "run", "sbin", "sys",
                                  "tmp", "usr", "var"))
V02_PROCESS_FILES = frozenset(("process.json", "pid", "starttime", "exitStatus"))

@dataclass(frozen=True, slots=True)
class Classification:
    kind: Kind
    evidence: str  # what was seen, for the message

    @property
    def layout(self) -> str | None:
        """The layout (recover/layouts/) that reads it; None: recover reads no such thing."""
        return {"containerd-0.2": "containerd-0.2", "empty": "containerd-0.2",
                "containerd-runtime-v2": "containerd-runtime-v2"}.get(self.kind)

    def explain(self, path: str) -> str:
        """A one-line message for a user who pointed recover at something it does not read."""
        what = {
            "containerd-root-dir": "containerd 1.x/2.x's root dir (its state dir, default /run/containerd, "
                                   "is the one to read)",
            "docker-data-root": "Docker's data root, not a containerd state root (Docker 1.11-1.13 keep "
                                "containerd's state in /var/run/docker/libcontainerd/containerd)",
            "other": "not a containerd state root",
        }.get(self.kind, self.kind)
        return f"{path} is {what} ({self.evidence})"


def classify_fd(dir_fd: int) -> Classification:
    """Classify an open directory.  Reads its listing and, until one shows a 0.2 file, its
    subdirectories' listings; opens no file."""
    try:
        entries = list(os.scandir(dir_fd))
    except OSError as e:
        return Classification("other", f"cannot be listed: {e.strerror}")
    if not entries:
        return Classification("empty", "no entries")
    names = {e.name for e in entries}
    if found := sorted(names.intersection(ROOT_DIR_MARKERS)):
        return Classification("containerd-root-dir", f"holds {found[0]}")
    if found := sorted(n for n in names if n in RUNTIME_V2_MARKERS or n.startswith("io.containerd.")):
        return Classification("containerd-runtime-v2", f"holds {found[0]}")
    if len(system := sorted(names & FILESYSTEM_ROOT_DIRS)) >= 3:
        return Classification("other", f"a filesystem root ({', '.join(system[:4])}...); --image-root reads one")
    dirs = [e.name for e in entries if _is_dir(e)]
    if any(e.name == "events.log" and e.is_file(follow_symlinks=False) for e in entries):
        return Classification("containerd-0.2", "holds events.log")
    for name in dirs:
        if "state.json" in _listing(dir_fd, name):
            return Classification("containerd-0.2", f"{name}/state.json")
    for name in dirs:
        for child in _listing(dir_fd, name):
            if _looks_like_process_dir(_listing(dir_fd, name, child)):
                return Classification("containerd-0.2", f"{name}/{child} holds a process's files")
    if all(n in names for n in DOCKER_DATA_MARKERS):
        return Classification("docker-data-root", "holds containers/ and image/")
    if dirs:
        return Classification("other", f"{len(dirs)} dir(s), none with a state.json or a process's files")
    return Classification("other", f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}, no directory")



def _looks_like_process_dir(names: list[str]) -> bool:
    """A 0.2 process dir: its process.json, or two of pid, starttime, exitStatus (a lone `pid`
    file is too common to tell a root by)."""
    found = V02_PROCESS_FILES.intersection(names)
    return "process.json" in found or len(found) >= 2


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def _listing(dir_fd: int, *path: str) -> list[str]:
    """Names in dir_fd/path..., each component opened without following a link; [] if unreadable."""
    try:
        with dir_below(dir_fd, *path) as fd:
            return os.listdir(fd)
    except (OSError, ValueError):
        return []


def is_default_root(root_real: str) -> bool:
    """Whether a root is where a daemon keeps its state by default (so it is the live one)."""
    return any(os.path.realpath(p) == root_real for p in DEFAULT_ROOTS)

