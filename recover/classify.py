"""What a directory is, decided before anything in it is judged.

recover never reads a directory as a layout it is not: a containerd 1.x/2.x state dir read as a
0.2 root looks like one container "containerd would delete", and a repair would move the whole
task dir out.  So the root is classified first, from its listing (and, for a 0.2 root, the first
container dir that shows a 0.2 file), and every command acts only on what it recognised.
"""

from __future__ import annotations

import bisect
import os
from typing import Literal

from .fsread import OpenRoot, dir_below
from .value import Value

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

class Classification(Value):
    kind: Kind
    evidence: str  # what was seen, for the message

    @property
    def generation(self) -> str | None:
        """The generation (recover/generations/) that reads it; None: recover reads no such thing."""
        return {"containerd-0.2": "containerd-0.2", "empty": "containerd-0.2",
                "containerd-runtime-v2": "containerd-runtime-v2"}.get(self.kind)

    def explain(self, path: str) -> str:
        """A one-line message for a user who pointed recover at something it does not read."""
        what = {
            "containerd-root-dir": "containerd 1.x/2.x's root dir (its state dir, default /run/containerd, "
                                   "is the one to read)",
            "docker-data-root": "Docker's data root, not a containerd state root (Docker 20+ keeps its "
                                "containers' runtime state in containerd's state dir: /run/containerd, or "
                                "/var/run/docker/containerd/daemon when dockerd runs its own containerd; Docker "
                                "1.11-1.13 in /var/run/docker/libcontainerd/containerd" + _existing() + ")",
            "other": "not a containerd state root",
        }.get(self.kind, self.kind)
        return f"{path} is {what} ({self.evidence})"


def _existing() -> str:
    """Which of the default roots this host has, as a hint."""
    here = [p for p in DEFAULT_ROOTS if os.path.isdir(p)]
    return f"; this host has {' and '.join(here)}" if here else ""


def classify(root: OpenRoot) -> Classification:
    """Classify an open directory.  Reads its listing (the one its reader then reads) and, until
    one shows a 0.2 file, its subdirectories' listings; opens no file."""
    try:
        entries = root.listing()
    except OSError as e:
        return Classification("other", f"cannot be listed: {e.strerror}")
    if not entries:
        return Classification("empty", "no entries")
    names = [e.name for e in entries]  # sorted: the names of a prefix are found by bisection
    present = set(names)
    if found := sorted(present.intersection(ROOT_DIR_MARKERS)):
        return Classification("containerd-root-dir", f"holds {found[0]}")
    if found := sorted(present.intersection(RUNTIME_V2_MARKERS).union(_starting_with(names, "io.containerd."))):
        return Classification("containerd-runtime-v2", f"holds {found[0]}")
    if len(system := sorted(present & FILESYSTEM_ROOT_DIRS)) >= 3:
        return Classification("other", f"a filesystem root ({', '.join(system[:4])}...); --image-root reads one")
    if "events.log" in present and entries[bisect.bisect_left(names, "events.log")].is_file(follow_symlinks=False):
        return Classification("containerd-0.2", "holds events.log")
    dirs = [e.name for e in entries if _is_dir(e)]
    for name in dirs:
        if "state.json" in _listing(root.fd, name):
            return Classification("containerd-0.2", f"{name}/state.json")
    for name in dirs:
        for child in _listing(root.fd, name):
            if _looks_like_process_dir(_listing(root.fd, name, child)):
                return Classification("containerd-0.2", f"{name}/{child} holds a process's files")
    if all(n in present for n in DOCKER_DATA_MARKERS):
        return Classification("docker-data-root", "holds containers/ and image/")
    if dirs:
        return Classification("other", f"{len(dirs)} dir(s), none with a state.json or a process's files")
    return Classification("other", f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}, no directory")


def _starting_with(sorted_names: list[str], prefix: str) -> list[str]:
    """The names that start with prefix: a run of a sorted list, found without a look at the rest."""
    start = end = bisect.bisect_left(sorted_names, prefix)
    while end < len(sorted_names) and sorted_names[end].startswith(prefix):
        end += 1
    return sorted_names[start:end]


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

