"""What lies around the root: Docker's files beside it, runc's state, a mounted disk image.

None of this is in the state root, but all of it decides what happens on restart: Docker reads
`docker-containerd.pid` to decide whether containerd still runs, containerd 0.2.9 kills a
container whose bundle dir is gone, and runc keeps its own idea of each container's init.
"""

from __future__ import annotations

import os
import re
import stat

from .fsread import printable, read_regular
from .host import HostView, OwnRoot, flag_value
from .rules import Finding, finding
from .value import Value

RUNC_ROOT = "/run/runc"
MAX_LINKS = 40


def in_image(image_root: str, path: str) -> str:
    """`path` as seen from inside a mounted image: symlinks resolved inside it, never out of it.

    `/var/run` is usually a link to `/run` (an absolute target): it is re-rooted at the image.
    """
    parts = [p for p in path.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(image_root, *resolved, part)
        try:
            is_link = stat.S_ISLNK(os.lstat(candidate).st_mode)
        except (OSError, ValueError):  # ValueError: a NUL byte in a path taken from the root
            is_link = False
        if not is_link:
            resolved.append(part)
            continue
        hops += 1
        if hops > MAX_LINKS:
            break
        try:
            target = os.readlink(candidate)
        except OSError:
            break
        if target.startswith("/"):
            resolved = []
        parts = [p for p in target.split("/") if p not in ("", ".")] + parts
    return os.path.join(image_root, *resolved)


class Surroundings(Value):
    """Where to look: the host's own paths, or the same paths inside an image."""

    image_root: str | None = None
    runc_root: str | None = None  # --runc-root; None: each layout's default
    read_runc: bool = True  # false beside a captured proc dir: this host's runc state is not the capture's
    containerd_root: str | None = None  # --containerd-root (runtime-v2); None: from each task's work link
    containerd_version: str | None = None  # --containerd-version (runtime-v2): the daemon that will start
    containerd_version_source: str = "flag"  # or "environment": $RECOVER_CONTAINERD_VERSION gave it
    unit: str | None = None  # the systemd unit whose start is judged (guard --unit): its ExecStart is read
    docker_root: str | None = None  # --docker-root (runtime-v2): Docker's data root; None: as dockerd or daemon.json say
    docker_config: str | None = None  # --docker-config: dockerd's daemon.json; None: dockerd's --config-file or /etc/docker

    def path(self, host_path: str) -> str:
        return host_path if self.image_root is None else in_image(self.image_root, host_path)


def read_small(path: str) -> bytes | None:
    """A small regular file, read without following a final link or opening a FIFO."""
    directory, name = os.path.split(path)
    try:
        fd = os.open(directory or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            if not stat.S_ISREG(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
                return None
        except OSError:
            return None
        return read_regular(fd, name, name).data
    finally:
        os.close(fd)


_NAMESPACE_LINK = re.compile(r"/proc/(\d+)(?:/task/\d+)?/(root|cwd)")
_MAX_HOPS = 40  # the kernel's limit on links followed in one path


def namespace_root(path: str) -> str | None:
    """The `/proc/<pid>/root` a path leads through (another mount namespace's view: a kind node, a
    CI runner), its links followed as the kernel follows them (a link to it, `/proc/self`, a
    thread's `task/<tid>/root`, a process's `cwd`); None when it leads through none.  The paths
    the root's files name are then that namespace's: read inside it, as in an image."""
    parts = [p for p in os.path.abspath(path).split("/") if p]
    resolved = ""
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == ".":
            continue
        if part == "..":
            resolved = resolved.rpartition("/")[0]
            continue
        candidate = f"{resolved}/{part}"
        if m := _NAMESPACE_LINK.fullmatch(candidate):
            return f"/proc/{m.group(1)}/root"
        try:
            target = os.readlink(candidate)
        except (OSError, ValueError):
            resolved = candidate
            continue
        hops += 1
        if hops > _MAX_HOPS:
            return None
        if target.startswith("/"):
            resolved = ""
        parts = [p for p in target.split("/") if p] + parts
    return None


def unreachable_here(path: str) -> str | None:
    """Why a root path names a dir that its own resolved path does not name here (a relative path
    from a working dir in another mount namespace, whose path means another dir in ours), or None."""
    try:
        st, real = os.stat(path), os.stat(os.path.realpath(path))
    except (OSError, ValueError):
        return None  # said when the root is opened
    if (st.st_dev, st.st_ino) == (real.st_dev, real.st_ino):
        return None
    return (f"{printable(path)} is a dir of another mount namespace ({printable(os.path.realpath(path))} names "
            "another dir here): name it as /proc/PID/root/PATH, or run recover in that namespace (nsenter -t PID -m)")


DAEMON_NAMES = ("containerd", "docker-containerd")


class DaemonsOnRoot(Value):
    """containerd daemons running on the root, each as "pid N (argv...)"."""

    on: tuple[str, ...]  # working on this very root (by identity), or named by docker-containerd.pid beside it
    untold: tuple[str, ...]  # running, but whether on this root cannot be read (another user's, gone)


def daemons_on_root(host: HostView, root: OwnRoot) -> DaemonsOnRoot:
    """containerd daemons on this root: a daemon is on it when its state dir (see _state_dir), as
    the daemon itself reaches it (through /proc/<pid>/root, or /proc/<pid>/cwd for a relative one,
    in its own mount namespace), IS this root's dir (device and inode); the same path in another
    mount namespace is another root.  Or the live containerd that docker-containerd.pid beside the
    root names.  Only a live host's /proc can say."""
    if not host.live:
        return DaemonsOnRoot((), ())
    on, untold = [], []
    for pid, argv in host.all_argv().items():
        if os.path.basename(argv[0]) not in DAEMON_NAMES:
            continue
        shown = f"pid {pid} ({printable(' '.join(argv[:3]))})"
        state_dir = _state_dir(host, pid, argv[1:])
        base = os.path.join(host.proc_root, str(pid))
        path = os.path.join(base, "cwd", state_dir) if not os.path.isabs(state_dir) \
            else in_image(os.path.join(base, "root"), state_dir)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            continue
        except (OSError, ValueError):
            # its own view cannot be read (another user's daemon): said only when the path it names
            # is this root here too, or cannot be told; another path is another root's daemon
            if not os.path.isabs(state_dir) or _names_here(state_dir, root):
                untold.append(f"{shown}; its state dir {printable(state_dir)} cannot be read")
            continue
        if (st.st_dev, st.st_ino) == root.identity:
            on.append(shown)
    pid_file = os.path.join(os.path.dirname(root.real), "docker-containerd.pid")
    recorded = _pid_in(read_small(pid_file))
    if recorded and host.stat(recorded) is not None and _is_containerd(host.cmdline(recorded) or []):
        if not any(f.startswith(f"pid {recorded} ") for f in on):
            on.append(f"pid {recorded} (named by {pid_file})")
    return DaemonsOnRoot(tuple(on), tuple(untold))


def _names_here(path: str, root: OwnRoot) -> bool:
    """Whether `path`, in recover's own mount namespace, is the root's dir."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return False
    return (st.st_dev, st.st_ino) == root.identity


DEFAULT_STATE_DIR = "/run/containerd"  # containerd 0.2's --state-dir, and 1.x/2.x's `state`
CONTAINERD_CONFIG = "/etc/containerd/config.toml"  # containerd 1.x/2.x's default --config


def _state_dir(host: HostView, pid: int, args: list[str]) -> str:
    """Where a containerd daemon keeps its state: 0.2's --state-dir; 1.x/2.x's --state, else the
    `state` of its config file (--config/-c, default /etc/containerd/config.toml), read as the
    daemon reads it (its own root and working dir), else /run/containerd.  May be relative to its
    cwd."""
    for flag in ("-state-dir", "-state"):
        if (value := flag_value(args, flag)) is not None:
            return value
    config = flag_value(args, "-config") or flag_value(args, "-c") or CONTAINERD_CONFIG
    base = os.path.join(host.proc_root, str(pid))
    data = read_small(os.path.join(base, "cwd", config) if not os.path.isabs(config)
                      else in_image(os.path.join(base, "root"), config))
    import tomllib  # here: only a running containerd 1.x/2.x is asked (3 ms of every start otherwise)

    try:
        state = tomllib.loads(data.decode("utf-8")).get("state") if data else None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        state = None
    return state if isinstance(state, str) and state else DEFAULT_STATE_DIR


def _pid_in(data: bytes | None) -> int | None:
    try:
        pid = int((data or b"").strip())
    except ValueError:
        return None
    return pid if pid > 0 else None


def _is_containerd(argv: list[str]) -> bool:
    base = os.path.basename(argv[0]) if argv else ""
    return "containerd" in base and "shim" not in base


def daemon_findings(root: OwnRoot, host: HostView | None) -> list[Finding]:
    """Is a containerd daemon running on this root (by its state dir, or Docker's pid file)?  And
    Docker 1.12-1.13's docker-containerd.pid beside the root (SPEC §1.5): does the daemon it
    names live, and is it really containerd?"""
    pid_path = os.path.join(os.path.dirname(root.real.rstrip("/")), "docker-containerd.pid")
    data = read_small(pid_path)
    if data is not None and _pid_in(data) is None:
        return [finding("H007", f"docker-containerd.pid holds {data[:20]!r}, not a pid: Docker will start a "
                        "new containerd", pid_path)]
    if host is None or not host.readable:
        return []
    daemons = daemons_on_root(host, root)
    out = [finding("H009", f"containerd runs on this root ({daemon}): the root may change while it is read, "
                   "and repair refuses to write") for daemon in daemons.on]
    out += [finding("H016", f"containerd runs, and whether on this root cannot be told ({daemon}): repair "
                    "refuses to write, guard judges the root") for daemon in daemons.untold]
    pid = _pid_in(data)
    if pid is None or out:
        return out
    st = host.stat(pid)
    if st is None:
        return [finding("H007", f"docker-containerd.pid names pid {pid}, which is gone: the daemon is not "
                        "running, and Docker will start a new one over this root", pid_path)]
    argv = host.cmdline(pid) or []
    if not _is_containerd(argv):
        shown = printable(" ".join(argv[:3])) if argv else st.comm
        return [finding("H008", f"docker-containerd.pid names pid {pid}, which is alive but is not containerd "
                        f"({shown}): Docker would take it for a running containerd and never start one", pid_path)]
    return []
