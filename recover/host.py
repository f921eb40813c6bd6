"""The host view: what /proc (live, or a captured proc dir laid out the same way) says.

One HostView per run.  Each pid's stat is read at most once (cached); the pass over every
process that shim discovery needs is made at most once, and only when a process asks for it.
Pointing the same code at a captured proc dir is how tests and forensics work.
"""

from __future__ import annotations

import os
import stat
import time
from typing import Literal, Protocol

from .fsread import filesystem_type
from .gobinary import GoBinary, NotGo, read_go_binary
from .sockets import Listeners, held_sockets, unix_listeners
from .value import Value

ShimStateName = Literal["alive", "stopped", "zombie", "gone"]
PF_EXITING = 0x4
_PROC_PAGE = 4096


class ProcStat(Value):
    """The fields of /proc/<pid>/stat that recover uses, plus the raw line for containerd's parser."""

    pid: int
    comm: str
    state: str
    ppid: int
    starttime: int  # field 22: clock ticks since boot, exact
    exit_code: int | None  # field 52 (Linux 3.5+): wait status of a zombie
    raw: bytes
    flags: int = 0  # field 9: the kernel's PF_* flags

    @property
    def exiting(self) -> bool:
        """PF_EXITING: killed and dying, but not yet a zombie (a SIGKILLed container init waits in
        state S while a zombie of its pid namespace is unreaped)."""
        return bool(self.flags & PF_EXITING)

    @property
    def exited(self) -> bool:
        """A zombie, a dead task, or one that is exiting: it runs no more."""
        return self.state in ("Z", "X", "x") or self.exiting


def parse_stat(data: bytes) -> ProcStat | None:
    """Parse a stat line, splitting at the FIRST "(" and the LAST ")": comm may hold anything."""
    open_at = data.find(b"(")
    close_at = data.rfind(b")")
    if open_at < 0 or close_at < open_at:
        return None
    fields = data[close_at + 1:].split()
    try:
        pid = int(data[:open_at])
        state = fields[0].decode("ascii")
        ppid, flags, starttime = int(fields[1]), int(fields[6]), int(fields[19])
        exit_code = int(fields[49]) if len(fields) > 49 else None
    except (ValueError, IndexError, UnicodeDecodeError):
        return None
    if not (0 <= pid < 1 << 32 and 0 <= ppid < 1 << 32 and 0 <= flags < 1 << 32 and 0 <= starttime < 1 << 64
            and (exit_code is None or 0 <= exit_code < 1 << 32)):
        return None  # not what a kernel writes: a damaged or hostile capture
    comm = data[open_at + 1:close_at].decode("utf-8", "surrogateescape")
    return ProcStat(pid, comm, state, ppid, starttime, exit_code, data, flags)


def read_proc_file(path: str, limit: int = 1 << 16) -> bytes | None:
    """A file of a proc root.  A captured proc dir is untrusted like a state root: the last
    component is not followed, and a FIFO or device there is never read (O_NONBLOCK, then fstat)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except (OSError, ValueError):
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        # procfs gives no size: read a page, and more only while reads come back full (asking
        # for the whole limit at once would allocate up to a MiB for every cmdline)
        want = min(limit, _PROC_PAGE)
        data = os.read(fd, want)
        if len(data) < want:
            return data
        chunks, total = [data], len(data)
        while total < limit:
            want = min(limit - total, total)
            chunk = os.read(fd, want)
            chunks.append(chunk)
            total += len(chunk)
            if len(chunk) < want:
                break
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def proc_root_problem(proc_root: str) -> str | None:
    """Why a directory is not a proc root (live, or captured laid out like /proc), or None.
    A proc root has a `stat` with a `btime` line and at least one process dir."""
    if not os.path.isdir(proc_root):
        return "not a directory"
    if _btime(read_proc_file(os.path.join(proc_root, "stat"))) is None:
        return "no `stat` file with a `btime` line"
    try:
        with os.scandir(proc_root) as it:
            if not any(e.name.isascii() and e.name.isdigit() for e in it):
                return "no process dir (<pid>/)"
    except OSError as e:
        return f"cannot be listed: {e.strerror}"
    return None


def is_procfs(path: str) -> bool:
    """Whether path is a mounted procfs (a live one), not a captured dir."""
    return filesystem_type(os.path.realpath(path)) == "proc"


def read_stat(proc_root: str, pid: int) -> ProcStat | None:
    """A fresh, uncached read of /proc/<pid>/stat (repair re-verifies with this)."""
    if pid <= 0:
        return None
    data = read_proc_file(os.path.join(proc_root, str(pid), "stat"), 4096)
    return parse_stat(data) if data else None


def wait_status_to_exit(status: int) -> int:
    """A wait status (stat field 52) as the shim would record it: code, or 128+signal."""
    signal = status & 0x7F
    return 128 + signal if signal else (status >> 8) & 0xFF


def shim_state(stat: ProcStat | None) -> ShimStateName:
    if stat is None:
        return "gone"
    if stat.state in ("T", "t"):
        return "stopped"
    if stat.state in ("Z", "X", "x"):
        return "zombie"
    return "alive"


class ShimRule(Protocol):
    """How a layout recognises the shim of one of its processes (see recover/generations/)."""

    key: str  # the argv value the shim names its container by: where the host's index looks
    depth: int  # how many dirs above a shim's working dir its state root is
    home: tuple[int, int] | None  # the identity of the dir the shim must work in, when known
    socket: str | None  # the socket file the daemon dials for it (a path here), when known

    def matches(self, argv: list[str], cwd: str | None) -> bool: ...

    def root_of(self, cwd: str | None) -> str | None:
        """The state root a shim with this cwd works in."""
        ...


def looks_like_shim(argv: list[str]) -> bool:
    """Any containerd shim (0.2's containerd-shim, containerd-shim-runc-v2, ...), run directly or
    as a script under an interpreter, before its container is known (for orphan shims)."""
    return len(argv) >= 3 and any("shim" in os.path.basename(a) for a in argv[:2])


def flag_value(argv: list[str] | tuple[str, ...], flag: str) -> str | None:
    """The value of a Go flag in argv: `-flag value`, `--flag value`, `-flag=value`."""
    for i, a in enumerate(argv):
        name, eq, value = a.partition("=")
        if name in (flag, "-" + flag):
            if eq:
                return value
            return argv[i + 1] if i + 1 < len(argv) else None
    return None


class ShimProcess(Value):
    pid: int
    argv: tuple[str, ...]
    cwd: str | None
    stat: ProcStat | None


class HostView:
    """Reads one proc root.  `live` is true when it is a real procfs (then pids can be signalled)."""

    def __init__(self, proc_root: str = "/proc"):
        self.proc_root = proc_root
        real = os.path.realpath(proc_root)
        self.live = is_procfs(real)
        self.btime = _btime(self._read(("stat",)))
        boot_id = self._read(("sys", "kernel", "random", "boot_id"))
        self.boot_id = boot_id.decode("ascii", "replace").strip() if boot_id else None
        self.clock_ticks = os.sysconf("SC_CLK_TCK")
        # when this host booted, to a tick: btime is floored to the second, which puts a start up to
        # a second early (before the files written just before it); a capture has only btime
        self.boot = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME) if self.live else None
        self.hidepid = self.live and os.geteuid() != 0 and _hidepid(real)
        self._stats: dict[int, ProcStat | None] = {}
        self._cmdlines: dict[int, list[str] | None] = {}
        self._cwds: dict[int, str | None] = {}
        self._removed_cwds: set[int] = set()
        self._listed: set[int] | None = None
        self._shims: dict[str, list[int]] | None = None
        self._argv: dict[int, list[str]] | None = None
        self._own_mnt: str | None = None  # our mount namespace ("": cannot be told)
        self._listeners: Listeners | None | bool = False  # False: not read yet
        self._sockets: dict[int, frozenset[int]] = {}
        self._children: dict[int, list[int]] | None = None
        self._roots: dict[tuple[int, int], tuple[int, int] | None] = {}
        self._binaries: dict[tuple[int, int, int, int], GoBinary | NotGo] = {}

    @property
    def readable(self) -> bool:
        return os.path.isdir(self.proc_root)

    def _read(self, parts: tuple[str, ...], limit: int = 1 << 16) -> bytes | None:
        return read_proc_file(os.path.join(self.proc_root, *parts), limit)

    def stat(self, pid: int) -> ProcStat | None:
        if pid not in self._stats:
            self._stats[pid] = read_stat(self.proc_root, pid)
        return self._stats[pid]

    def listed(self) -> set[int]:
        """Pids that `ls /proc` shows: thread-group leaders only (threads are reachable, not listed)."""
        if self._listed is None:
            try:
                self._listed = {int(n) for n in os.listdir(self.proc_root) if n.isascii() and n.isdigit()}
            except OSError:
                self._listed = set()
        return self._listed

    def tgid(self, pid: int) -> int | None:
        if self.live and pid in self.listed():
            return pid
        data = self._read((str(pid), "status"))
        for line in (data or b"").splitlines():
            if line.startswith(b"Tgid:"):
                try:
                    return int(line.split()[1])
                except (IndexError, ValueError):
                    return None
        return None

    def cmdline(self, pid: int) -> list[str] | None:
        """A process's argv, read once (cached like its stat: one view of the host per scan).
        The list is shared: callers do not change it."""
        if pid not in self._cmdlines:
            data = self._read((str(pid), "cmdline"), limit=1 << 20)
            # a zombie or kernel thread has none
            self._cmdlines[pid] = data.rstrip(b"\0").decode("utf-8", "surrogateescape").split("\0") if data else None
        return self._cmdlines[pid]

    def cwd(self, pid: int) -> str | None:
        """A process's working dir, read once (cached)."""
        if pid not in self._cwds:
            try:
                target = os.readlink(os.path.join(self.proc_root, str(pid), "cwd"))
            except OSError:
                target = None
            # the dir was removed: its last path still names it
            if target is not None and target.endswith(" (deleted)"):
                self._removed_cwds.add(pid)
                target = target.removesuffix(" (deleted)")
            self._cwds[pid] = target
        return self._cwds[pid]

    def cwd_removed(self, pid: int) -> bool:
        """Whether pid's working dir has been removed (the kernel says so in its link)."""
        self.cwd(pid)
        return pid in self._removed_cwds

    def all_argv(self) -> dict[int, list[str]]:
        """Every listed process's argv (none for zombies and kernel threads): one pass over
        /proc, made once, when first needed."""
        if self._argv is None:
            self._argv = {pid: argv for pid in sorted(self.listed()) if (argv := self.cmdline(pid))}
        return self._argv

    def _shim_index(self) -> dict[str, list[int]]:
        """Pids by the argv values where a shim names its container: argv[1] or argv[2] (0.2's
        shim, direct or under an interpreter) and the value of -id (runtime-v2's shims)."""
        if self._shims is None:
            self._shims = {}
            for pid, argv in self.all_argv().items():
                keys = {argv[i] for i in (1, 2) if i < len(argv)}
                if (task := flag_value(argv, "-id")) is not None:
                    keys.add(task)
                for key in keys:
                    self._shims.setdefault(key, []).append(pid)
        return self._shims

    def _shim_process(self, pid: int) -> ShimProcess | None:
        argv = self.cmdline(pid)
        return ShimProcess(pid, tuple(argv), self.cwd(pid), self.stat(pid)) if argv else None

    def shims_named(self, key: str) -> list[ShimProcess]:
        """Processes whose argv names `key` where a shim's argv would."""
        pids = self._shim_index().get(key)
        if pids is None:  # most keys: no process names them
            return []
        found = (self._shim_process(pid) for pid in pids)
        return [s for s in found if s is not None]

    def all_shims(self) -> list[ShimProcess]:
        """Every shim-like process on the host (to find orphan shims)."""
        pids = sorted({pid for group in self._shim_index().values() for pid in group})
        found = (self._shim_process(pid) for pid in pids)
        return [s for s in found if s is not None and looks_like_shim(list(s.argv))]

    def socket_inodes(self, pid: int) -> frozenset[int]:
        """The inodes of the sockets pid holds open (`socket:[N]` among /proc/<pid>/fd), read once."""
        if pid not in self._sockets:
            self._sockets[pid] = held_sockets(os.path.join(self.proc_root, str(pid)))
        return self._sockets[pid]

    def listening_paths(self, pid: int) -> list[str]:
        """The paths the unix sockets pid holds and listens on were bound at (sorted)."""
        listeners = self.listening_unix_sockets()
        if listeners is None:
            return []
        return sorted(listeners.paths[i] for i in self.socket_inodes(pid) if i in listeners.paths)

    def listener_of(self, socket_file: str) -> int | None | bool:
        """The inode of the socket listening on `socket_file` (a path here); False when nobody
        listens; None where it cannot be told (see listening_unix_sockets; the file unreadable)."""
        listeners = self.listening_unix_sockets()
        if listeners is None:
            return None
        try:
            st = os.lstat(socket_file)
        except (OSError, ValueError):
            return None
        return listeners.get((st.st_dev, st.st_ino), False)

    def listening_unix_sockets(self) -> Listeners | None:
        """(st_dev, st_ino) of every socket file a live unix socket listens on, in recover's
        network namespace (the kernel's sock_diag, read once); None where it cannot be told (not
        this host's own /proc, or no sock_diag).  A socket FILE nobody listens on cannot be dialled:
        it is not the shim's socket any more, whatever its name."""
        if self._listeners is False:
            self._listeners = unix_listeners() if self.live and self._own_proc() else None
        return self._listeners

    def in_our_network_namespace(self, pid: int) -> bool | None:
        """Whether pid shares recover's network namespace (its listeners are the ones we see)."""
        if not self.live or not self._own_proc():
            return None
        try:
            return (os.readlink(os.path.join(self.proc_root, str(pid), "ns", "net"))
                    == os.readlink(os.path.join(self.proc_root, str(os.getpid()), "ns", "net")))
        except OSError:
            return None

    def _own_proc(self) -> bool:
        try:
            return os.readlink(os.path.join(self.proc_root, "self")) == str(os.getpid())
        except OSError:
            return False

    def root_identity(self, pid: int, depth: int) -> tuple[int, int] | None:
        """(st_dev, st_ino) of the dir `depth` levels above pid's working dir, reached as pid
        reaches it: through /proc/<pid>/cwd and `..`, in pid's own mount namespace, even when its
        working dir was removed; never through a path string, which may name another dir there.
        None where it cannot be read: a captured proc dir, another user's process (not root), a
        process gone.  Read once per pid."""
        if not self.live:
            return None
        key = (pid, depth)
        if key not in self._roots:
            try:
                st = os.stat(os.path.join(self.proc_root, str(pid), "cwd", *([".."] * depth)))
                self._roots[key] = (st.st_dev, st.st_ino)
            except (OSError, ValueError):
                self._roots[key] = None
        return self._roots[key]

    def cwd_identity(self, pid: int) -> tuple[int, int] | None:
        """(st_dev, st_ino) of pid's working dir itself (see root_identity)."""
        return self.root_identity(pid, 0)

    def works_in(self, pid: int, depth: int, root: OwnRoot) -> bool | None:
        """Whether pid works in `root` (its working dir is `depth` dirs below it), by identity;
        None where that cannot be read (see root_identity)."""
        identity = self.root_identity(pid, depth)
        return None if identity is None else identity == root.identity

    def go_binary(self, pid: int) -> GoBinary | NotGo | None:
        """What the program pid runs says of itself (recover/gobinary.py), read once per binary
        (every shim of a host runs the same one); None where it cannot be read (a captured proc
        dir holds no binary, another user's process, gone)."""
        if not self.live:
            return None
        path = os.path.join(self.proc_root, str(pid), "exe")
        try:
            st = os.stat(path)
        except (OSError, ValueError):
            return None
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if key not in self._binaries:
            self._binaries[key] = read_go_binary(path)
        return self._binaries[key]

    def in_other_mount_namespace(self, pid: int) -> bool:
        """Whether pid lives in another mount namespace than recover (only this host's own /proc
        can say; elsewhere, or when it cannot be read: False)."""
        if not self.live:
            return False
        if self._own_mnt is None:
            try:
                own_pid = os.readlink(os.path.join(self.proc_root, "self"))
                self._own_mnt = os.readlink(os.path.join(self.proc_root, own_pid, "ns", "mnt")) \
                    if own_pid == str(os.getpid()) else ""
            except OSError:
                self._own_mnt = ""
        if not self._own_mnt:
            return False
        try:
            return os.readlink(os.path.join(self.proc_root, str(pid), "ns", "mnt")) != self._own_mnt
        except OSError:
            return False

    def children(self, pid: int) -> list[int]:
        """Children of pid, from one pass over every process's stat (made once, when first asked)."""
        if self._children is None:
            self._children = {}
            for child in sorted(self.listed()):
                st = self.stat(child)
                if st is not None:
                    self._children.setdefault(st.ppid, []).append(child)
        return self._children.get(pid, [])

    def frozen(self, pid: int) -> bool | None:
        """Whether pid's cgroup is frozen (paused container); None when it cannot be told."""
        if not self.live:
            return None
        data = self._read((str(pid), "cgroup"))
        if data is None:
            return None
        for line in data.decode("utf-8", "replace").splitlines():
            _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
            try:
                if "freezer" in controllers.split(","):
                    with open(f"/sys/fs/cgroup/freezer{path}/freezer.state", "rb") as f:
                        return f.read().strip() == b"FROZEN"
                if controllers == "" and line.startswith("0::"):
                    with open(f"/sys/fs/cgroup{path}/cgroup.events", "rb") as f:
                        return b"frozen 1" in f.read()
            except OSError:
                continue
        return None

    def start_epoch(self, ticks: int) -> float | None:
        return start_epoch(ticks, self.boot, self.btime, self.clock_ticks)


def start_epoch(ticks: int, boot: float | None, btime: int | None, clock_ticks: int) -> float | None:
    """When a process started ticks after boot: from the boot to a tick where known (a live host),
    else from btime's whole second."""
    since = boot if boot is not None else btime
    return None if since is None else since + ticks / clock_ticks


def _btime(data: bytes | None) -> int | None:
    for line in (data or b"").splitlines():
        if line.startswith(b"btime "):
            try:
                return int(line.split()[1])
            except (IndexError, ValueError):
                return None
    return None


def _hidepid(proc_real: str) -> bool:
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields = left.split()
                if len(fields) > 4 and fields[4] == proc_real and "hidepid=" in right:
                    opts = right.split()[-1].split(",")
                    return any(o.startswith("hidepid=") and o not in ("hidepid=0", "hidepid=off") for o in opts)
    except OSError:
        pass
    return False


class ShimReport(Value):
    """What a live shim, asked, says of one of its processes (runtime-v2: its task API's State)."""

    status: str  # running, stopped, created, paused, ... (lower case)
    pid: int
    exit_status: int | None  # once stopped
    exited_at: float | None  # seconds since the epoch, once stopped


# made by position on the hot path: a new field goes last
class ProcessFacts(Value):
    """What the host says about one recorded process: the judge's only input from /proc."""

    pid: int | None = None  # the pid judged: the pid file's, or the shim's only child
    pid_source: Literal["pid-file", "shim-child"] | None = None
    stat: ProcStat | None = None
    tgid: int | None = None
    parent: ProcStat | None = None
    parent_is_shim: bool = False
    shim_pid: int | None = None
    shim_state: ShimStateName = "gone"
    shim_children: int | None = None  # how many children the live shim has (pid file missing)
    containerd_stat: ProcStat | None = None  # /proc/<Atoi(pid file)>/stat, as containerd reads it
    frozen: bool | None = None  # the process's cgroup is frozen (only readable on a live host)
    shim_root: str | None = None  # the root the shim's cwd names (when its cwd can be read)
    # the root the shim works in, when by identity it is another dir than this root (a path, and
    # the mount namespace when not ours): this root is a copy of it, or names the same processes
    other_root: str | None = None
    shim_reports: ShimReport | None = None  # what its live shim said of it, asked (None: not asked)


class OwnRoot(Value):
    """The root being judged: its path, and its identity, which is what a process's working dir
    is compared with (the same path may name another dir in another mount namespace, and a bind
    mount gives one dir two paths)."""

    real: str  # its path, resolved (as given where resolving names another dir: /proc/<pid>/root/...)
    dev: int
    ino: int

    @property
    def identity(self) -> tuple[int, int]:
        return self.dev, self.ino

    @classmethod
    def of(cls, real: str, fd: int) -> OwnRoot:
        st = os.fstat(fd)
        return cls(real, st.st_dev, st.st_ino)


def other_root(host: HostView, root: OwnRoot, rule: ShimRule, pid: int, cwd: str | None) -> str | None:
    """The root other than ours that a shim works in (told by identity, on a live host only): the
    path its working dir names, and in which mount namespace when not ours."""
    path = rule.root_of(cwd)
    if path is None or host.works_in(pid, rule.depth, root) is not False:
        return None
    return f"{path} (in another mount namespace)" if host.in_other_mount_namespace(pid) else path


def find_shim(host: HostView, root: OwnRoot, rule: ShimRule) -> ShimProcess | None:
    """The shim the rule names, found by argv and cwd: one that works in another root is that
    root's (the same ids may live in two roots, and the same path may name another daemon's root
    in another mount namespace), and one that works in a removed dir of the same name is not the
    shim of the dir there now, unless it is the one that listens on the socket the daemon will
    dial; one whose working dir cannot be read may be ours."""
    candidates = [c for c in host.shims_named(rule.key)
                  if rule.matches(list(c.argv), c.cwd) and host.works_in(c.pid, rule.depth, root) is not False]
    if rule.socket is not None and (len(candidates) > 1 or any(
            _works_elsewhere(host, c.pid, rule.home) for c in candidates)):
        # more than one, or one left in a removed dir: the one that listens on the task's socket is
        # the shim the daemon will reach, wherever it works (a bundle made again under its live shim)
        listener = host.listener_of(rule.socket)
        for c in candidates:
            if listener and listener in host.socket_inodes(c.pid):
                return c
    return next((c for c in candidates if not _works_elsewhere(host, c.pid, rule.home)), None)


def _works_elsewhere(host: HostView, pid: int, home: tuple[int, int] | None) -> bool:
    """The shim works in another dir than the one it must (its bundle was removed and made again
    under it, and a new shim started there: the old one is leaked, not this bundle's)."""
    if home is None:
        return False
    identity = host.cwd_identity(pid)
    return identity is not None and identity != home


def gather(host: HostView, root: OwnRoot, rule: ShimRule, pid: int | None,
           containerd_pid: int | None) -> ProcessFacts:
    """Collect the host facts for one process (reads /proc; decides nothing)."""
    source: Literal["pid-file", "shim-child"] | None = "pid-file" if pid else None
    stat = host.stat(pid) if pid else None
    parent = host.stat(stat.ppid) if stat else None
    shim_cwd = host.cwd(parent.pid) if parent else None
    # the parent is the process's shim wherever its cwd lies: a copied root still names it
    parent_is_shim = parent is not None and rule.matches(host.cmdline(parent.pid) or [], shim_cwd)
    shim = parent if parent_is_shim else None
    if shim is None and (found := find_shim(host, root, rule)) is not None:
        shim, shim_cwd = found.stat, found.cwd  # not the parent: the shim found by argv
    children = None
    if pid is None and shim is not None and shim_state(shim) in ("alive", "stopped"):
        kids = host.children(shim.pid)
        children = len(kids)
        if children == 1:
            pid, source = kids[0], "shim-child"
            stat = host.stat(pid)
            parent, parent_is_shim = shim, stat is not None
    containerd_stat = stat if containerd_pid == pid else (host.stat(containerd_pid) if containerd_pid else None)
    frozen = host.frozen(containerd_stat.pid) if containerd_stat and containerd_stat.ppid == 1 else None
    return ProcessFacts(  # by position, in field order: keyword arguments cost 40 ns each
        pid, source, stat, host.tgid(pid) if stat and pid else None, parent, parent_is_shim,
        shim.pid if shim else None, shim_state(shim), children, containerd_stat, frozen,
        rule.root_of(shim_cwd) if shim is not None else None,
        other_root(host, root, rule, shim.pid, shim_cwd) if shim is not None else None)
