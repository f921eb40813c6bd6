"""The containerd 1.x/2.x runtime-v2 state dir: what its files are, and reading them (SPEC-v2 §1).

    <state>/io.containerd.runtime.v2.task/<namespace>/<id>/   a task bundle, one per container:
        init.pid  <exec>.pid  address | bootstrap.json  config.json  options.json  runtime
        shim-binary-path  log (FIFO: never opened)  log.json  rootfs/  work -> <root>/...<ns>/<id>
    <runc root>/<namespace>/<id>/state.json                  runc's own state (init pid, start ticks)
    <containerd root>/io.containerd.grpc.v1.cri/containers/<id>/status   CRI's checkpoint

Every name is untrusted: dirs are opened relative to their parent's fd without following links,
a name's type comes from the listing, only regular files are opened, at most 1 MiB each.  What is
read here is only the files; /proc is the host view's, judging is the judge's.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from ...fsread import (
    OPEN_DIR,
    FileFact,
    OpenRoot,
    RootError,
    dir_below,
    file_findings,
    kind_of,
    printable,
    read_at,
    read_regular,
)
from ...records import ContainerRecord, ProcessRecord
from ...rules import Finding, finding
from ...value import Value
from ..containerd_0_2.files import go_atoi

TASKS_DIR = "io.containerd.runtime.v2.task"
V1_TASKS_DIR = "io.containerd.runtime.v1.linux"
INIT = "init"
PID_SUFFIX = ".pid"
# containerd 1.6-2.x and the runc shim hard-code these, whatever the state dir is
SHIM_SOCKET_DIR = "/run/containerd/s"
DEFAULT_RUNC_ROOT = "/run/containerd/runc"
DEFAULT_CONTAINERD_ROOT = "/var/lib/containerd"
DEFAULT_GRPC_ADDRESS = "/run/containerd/containerd.sock"
CRI_CONTAINERS = ("io.containerd.grpc.v1.cri", "containers")
CRI_TYPE = "io.kubernetes.cri.container-type"
CRI_SANDBOX = "io.kubernetes.cri.sandbox-id"
MAX_FILE_BYTES = 1 << 20


SocketState = Literal["present", "missing", "not-a-socket", "unknown"]


def unhidden(name: str) -> str:
    """The name a dot-named task or namespace dir had: containerd's own delete renames a bundle
    `.<id>` first, and an operator may rename either; its shim, runc's state and its work dir
    still go by the name."""
    return name.lstrip(".") or name


def socket_name(grpc_address: str, namespace: str, shim_id: str) -> str:
    """The shim socket's name: hex sha256 of filepath.Join(<grpc address>, <ns>, <id>)."""
    return hashlib.sha256(os.path.normpath(os.path.join(grpc_address, namespace, shim_id)).encode()).hexdigest()


def address_for(grpc_address: str, namespace: str, shim_id: str) -> str:
    """What the task's `address` file holds (the shim writes it at start)."""
    return f"unix://{SHIM_SOCKET_DIR}/{socket_name(grpc_address, namespace, shim_id)}"


class RuncState(Value):
    path: str  # where it was looked for
    pid: int | None = None  # init_process_pid
    start: int | None = None  # init_process_start (stat field 22 of the init)
    created: str | None = None
    problem: str | None = None  # why it could not be used ("missing", ...)


class CriStatus(Value):
    """CRI's checkpoint of a container (`.../containers/<id>/status`)."""

    path: str
    pid: int | None = None
    created_at: int = 0  # ns since the epoch
    started_at: int = 0
    finished_at: int = 0
    exit_code: int | None = None
    reason: str = ""
    problem: str | None = None

    @property
    def state(self) -> str:
        """As CRI derives it: exited, running, created or unknown."""
        if self.finished_at:
            return "exited"
        if self.started_at:
            return "running"
        return "created" if self.created_at else "unknown"


class AddressFile(Value):
    """What one of the files that name the shim's socket holds (`address`: the plain address, or
    on 1.7 maybe JSON; `bootstrap.json`, 2.x: JSON with the task API's version).  Which file a
    daemon reads and how it takes what it finds depends on its version: the predictor's to say."""

    name: str  # "address" or "bootstrap.json"
    problem: str | None  # why nothing can be read from it (not a regular file, unreadable, empty)
    text: str | None  # what it holds, as written
    is_json: bool = False  # a JSON object
    version: int | None = None  # its "version" (JSON), as a number
    address: str | None = None  # the address in it: JSON's "address", else the text as written
    protocol: str | None = None  # JSON's "protocol"
    socket_path: str | None = None  # where the socket `address` names is, on this host (or in the image)
    socket: SocketState = "unknown"

    @property
    def plain(self) -> bool:
        """The text is the address alone, with nothing around it (no newline)."""
        return self.text is not None and not self.is_json and self.text.strip() == self.text and bool(self.text)

    @property
    def socket_state_words(self) -> str:
        return {"present": "there", "missing": "missing", "not-a-socket": "not a socket",
                "unknown": "not checked (not a unix socket on this host)"}[self.socket]


class TaskFiles(Value):
    """What the files of one task bundle say (the layout's own parse, beside the shared records)."""

    dir: str  # the bundle dir as containerd names it: <state>/io.containerd.runtime.v2.task/<ns>/<id>
    hidden: bool  # the task or its namespace is a dot-name: containerd skips it
    hidden_namespace: bool
    entries: int | None  # how many names the bundle holds (None: it cannot be listed)
    listing_problem: str | None
    address_file: AddressFile | None  # `address` (None: there is none)
    bootstrap: AddressFile | None  # `bootstrap.json` (None: there is none)
    shim_binary: str
    sandbox: str | None  # CRI sandbox id (a pod's containers share its shim)
    container_type: str | None  # CRI: "sandbox" or "container"
    runc: RuncState | None
    cri: CriStatus | None
    work_link: str | None  # where the `work` link points (never followed)
    work_dir_exists: bool | None
    containerd_root: str | None  # the root dir, as the work link (or --containerd-root) names it
    runtime_binary: str  # the `runtime` file: runc binary override ("" = runc)
    runtime_file: bool | None  # whether the bundle holds a `runtime` file (None: it cannot be listed)
    options: dict[str, Any] | None
    log_error: str | None  # the last error of runc's log.json
    made_by_2x: bool = False  # what only containerd 2.x puts in a bundle: the `s` link, a `sandbox` file

    @property
    def shim_id(self) -> str:
        """The -id its shim runs with: the sandbox's for a CRI container, its own otherwise (a
        hidden `.<id>` dir still runs as <id>)."""
        return self.sandbox or unhidden(os.path.basename(self.dir))

    @property
    def namespace(self) -> str:
        """The -namespace its shim runs with (a hidden `.<ns>` dir's tasks still run in <ns>)."""
        return unhidden(os.path.basename(os.path.dirname(self.dir)))

    @property
    def empty(self) -> bool:
        return self.entries == 0

class PidFile(Value):
    value: int | None
    mtime_ns: int | None
    daemon_pid: int | None  # strconv.Atoi, as the shim reads it


@dataclass(frozen=True, slots=True)
class Paths:
    """Where to look outside the state dir; each path already resolved for this host or image."""

    runc_root: str | None = None  # --runc-root: where options.json names no root, instead of the default
    read_runc: bool = True  # false beside a captured proc dir (this host's runc state is not its own)
    containerd_root: str | None = None  # --containerd-root: overrides the work link
    resolve: Any = None  # host path -> path to open (inside --image-root); identity when None

    def host(self, path: str) -> str:
        return path if self.resolve is None else self.resolve(path)


class StateDir:
    """An open runtime-v2 state dir: `containers()` lists tasks as `ns/id`, `read()` reads one."""

    def __init__(self, root: OpenRoot, paths: Paths = Paths()):
        self.docker = None  # Docker's record beside the root (docker/), set by the generation's beside()
        self._root = root
        self._fd = root.fd
        self.path = root.path
        self.real = root.real
        self.paths = paths
        self._runc_here: bool | None = None  # the state dir holds runc's root (a default state dir does)
        self.findings: list[Finding] = []
        self._keys: list[str] | None = None
        self._key_set: frozenset[str] | None = None

    def containers(self) -> list[str]:
        """Every task dir, hidden ones too (containerd mishandles exactly those), as `ns/id`, sorted."""
        if self._keys is not None:
            return self._keys
        keys = []
        for ns, ns_is_dir in self._must_list(TASKS_DIR):
            if not ns_is_dir:
                self.findings.append(finding("F040", "a file among the namespaces; containerd ignores it",
                                             f"{TASKS_DIR}/{printable(ns)}"))
                continue
            for task, is_dir in self._must_list(TASKS_DIR, ns):
                if is_dir:
                    keys.append(f"{ns}/{task}")
                else:
                    self.findings.append(finding("F040", "a file among the tasks; containerd ignores it",
                                                 f"{TASKS_DIR}/{printable(ns)}/{printable(task)}"))
        if _listing(self._fd, V1_TASKS_DIR):
            self.findings.append(finding("H015", "io.containerd.runtime.v1.linux holds tasks of the legacy v1 "
                                         "shim: they are not judged", V1_TASKS_DIR))
        self._keys = sorted(keys)
        return self._keys

    def _must_list(self, *path: str) -> list[tuple[str, bool]]:
        """A dir of the tasks tree that must be listed for the root to be judged at all: one that
        cannot be (permissions: not root) is a RootError, never an empty root that passes a gate;
        one that is not there holds nothing."""
        try:
            with dir_below(self._fd, *path) as fd, os.scandir(fd) as it:
                return [(e.name, _kind(e) == "dir") for e in it]
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as e:
            where = os.path.join(self.path, *path)
            raise RootError(f"{printable(where)}: {getattr(e, 'strerror', None) or e}") from None

    def holds(self, key: str) -> bool:
        """Whether `ns/id` is one of the task dirs (see containers)."""
        if self._key_set is None:
            self._key_set = frozenset(self.containers())
        return key in self._key_set

    def bundle_identity(self, ns: str, tid: str) -> tuple[int, int] | None:
        """(st_dev, st_ino) of the bundle dir <ns>/<tid> (a pod's shim works in its sandbox's)."""
        try:
            st = os.stat(tid, dir_fd=self._root.dir_fd(TASKS_DIR, ns), follow_symlinks=False)
        except (OSError, ValueError):
            return None
        return st.st_dev, st.st_ino

    def holds_bootstrap(self) -> bool:
        """Whether any task bundle holds a bootstrap.json (which only containerd 2.x writes)."""
        for key in self.containers():
            ns, _, tid = key.partition("/")
            try:
                os.stat(f"{tid}/bootstrap.json", dir_fd=self._root.dir_fd(TASKS_DIR, ns), follow_symlinks=False)
                return True
            except (OSError, ValueError):
                continue
        return False

    def read(self, key: str) -> ContainerRecord:
        ns, _, tid = key.partition("/")
        rel = f"{TASKS_DIR}/{printable(ns)}/{printable(tid)}"
        bundle = _below(self.real, TASKS_DIR, ns, tid)
        found: list[Finding] = []
        entries: dict[str, str] = {}  # name -> kind
        listing_problem = None
        facts: dict[str, FileFact] = {}
        work_link = None
        try:
            fd = os.open(tid, OPEN_DIR, dir_fd=self._root.dir_fd(TASKS_DIR, ns))
            try:
                with os.scandir(fd) as it:
                    for e in it:
                        entries[e.name] = _kind(e)
                for name, kind in entries.items():
                    if kind == "file" and (name.endswith(PID_SUFFIX) or name in _SMALL_FILES):
                        facts[name] = read_regular(fd, name, f"{rel}/{name}")
                if entries.get("work") == "symlink":
                    try:
                        work_link = os.readlink("work", dir_fd=fd)
                    except OSError:
                        work_link = None
            finally:
                os.close(fd)
        except OSError as e:
            listing_problem = e.strerror or str(e)
            found.append(finding("F042", f"the task dir cannot be listed: {listing_problem}", rel))
        for name, kind in sorted(entries.items()):
            if name in _SMALL_FILES and kind != "file":
                found.extend(file_findings(FileFact(f"{rel}/{name}", kind), required=False))
        hidden_ns = ns.startswith(".")
        options = _json_object(facts.get("options.json"), found)
        config = _json_object(facts.get("config.json"), found)
        annotations = config.get("annotations") if isinstance(config, dict) else None
        annotations = annotations if isinstance(annotations, dict) else {}
        sandbox = annotations.get(CRI_SANDBOX) if isinstance(annotations.get(CRI_SANDBOX), str) else None
        ctype = annotations.get(CRI_TYPE) if isinstance(annotations.get(CRI_TYPE), str) else None
        address_file, bootstrap = (self._address_file(name, facts, entries, found, rel)
                                   for name in ("address", "bootstrap.json"))
        namespace, task_id = unhidden(ns), unhidden(tid)  # as the shim, runc and the work dir know them
        containerd_root = self.paths.containerd_root or _root_from_work_link(work_link, namespace, task_id)
        work_exists = None
        if containerd_root is not None:
            work_exists = os.path.isdir(self.paths.host(_below(containerd_root, TASKS_DIR, namespace, task_id)))
        # an empty bundle names no process, but runc's state may still name its live init
        runc = self._runc(options, namespace, task_id) if listing_problem is None and self.paths.read_runc else None
        cri = self._cri(containerd_root or DEFAULT_CONTAINERD_ROOT, task_id) if ctype == "container" else None
        task_files = TaskFiles(
            dir=bundle, hidden=tid.startswith(".") or hidden_ns, hidden_namespace=hidden_ns,
            entries=None if listing_problem else len(entries), listing_problem=listing_problem,
            address_file=address_file, bootstrap=bootstrap, shim_binary=_text(facts.get("shim-binary-path")),
            sandbox=sandbox if sandbox != tid else None, container_type=ctype, runc=runc, cri=cri,
            work_link=work_link, work_dir_exists=work_exists, containerd_root=containerd_root,
            runtime_binary=_text(facts.get("runtime")), options=options,
            runtime_file=None if listing_problem else "runtime" in entries,
            log_error=_last_error(facts.get("log.json")),
            made_by_2x=entries.get("s") == "symlink" or entries.get("sandbox") == "file")
        processes = self._processes(rel, facts, entries, task_files, found)
        return ContainerRecord(tid, rel, tuple(processes), tuple(found), namespace=ns, bundle=bundle,
                               runtime=task_files.shim_binary, files=task_files)

    def _processes(self, rel: str, facts: dict[str, FileFact], entries: dict[str, str], task: TaskFiles,
                   found: list[Finding]) -> list[ProcessRecord]:
        """init, then each exec that has a pid file, by name.  An emptied bundle names nothing, but
        runc's state may still name its init (whose start ticks then decide who it is); an unlisted
        bundle has none."""
        if not entries:
            runc = task.runc
            if task.empty and runc is not None and runc.pid is not None and runc.start is not None:
                return [ProcessRecord(INIT, f"{rel}/{INIT}{PID_SUFFIX}", False, runc.pid, None, runc.start,
                                      "runc-state", None, None, (), None, (), True)]
            return []
        out = []
        execs = sorted(n for n in entries if n.endswith(PID_SUFFIX) and n != INIT + PID_SUFFIX)
        for name in [INIT + PID_SUFFIX] + execs:
            pid_id = name[: -len(PID_SUFFIX)]
            prel = f"{rel}/{printable(name)}"
            fact = facts.get(name) or FileFact(prel, entries.get(name, "missing"))  # type: ignore[arg-type]
            pid, pfound = _pid_file(fact, required=pid_id == INIT)
            value, start, start_source = pid.value, None, None
            runc = task.runc
            if pid_id == INIT and runc is not None and runc.start is not None:
                # runc's start ticks are the container init's identity, whichever pid names it
                start, start_source = runc.start, "runc-state"
                if value is None:
                    value = runc.pid  # init.pid unusable: runc's own record of the init
            exit_status = exit_source = None
            if pid_id == INIT and task.cri is not None and task.cri.state == "exited":
                exit_status, exit_source = task.cri.exit_code, "cri-checkpoint"
            out.append(ProcessRecord(  # by position, in field order: keyword arguments cost 40 ns each
                pid_id, prel, pid_id != INIT, value, pid.mtime_ns, start, start_source, exit_status,
                exit_source, tuple(pfound), pid, (), True))
        return out

    def _address_file(self, name: str, facts: dict[str, FileFact], entries: dict[str, str], found: list[Finding],
                      rel: str) -> AddressFile | None:
        """One of the files that name the shim's socket, as it stands (see AddressFile)."""
        if name not in entries:
            return None
        fact = facts.get(name)
        if fact is None:
            return AddressFile(name, f"{name} is not a regular file", None)
        if fact.data is None:
            return AddressFile(name, f"{name} cannot be read", None)
        text = fact.data.decode("utf-8", "replace")
        if not text.strip():
            return AddressFile(name, f"{name} is empty", text)
        if not text.lstrip().startswith("{"):
            return AddressFile(name, None, text, address=text, **self._socket_fields(text))
        try:
            doc = orjson.loads(fact.data)
        except orjson.JSONDecodeError:
            found.append(finding("F102", f"{name} is not valid JSON", f"{rel}/{name}"))
            return AddressFile(name, f"{name} is not valid JSON", text, is_json=True)
        if not isinstance(doc, dict):
            return AddressFile(name, f"{name} holds a JSON {type(doc).__name__}, not an object", text, is_json=True)
        address, version, protocol = (_go_field(doc, key) for key in ("address", "version", "protocol"))
        address = address if isinstance(address, str) and address else None
        if address is None:
            found.append(finding("F102", f"{name} holds no address", f"{rel}/{name}"))
        version = version if isinstance(version, int) and not isinstance(version, bool) else None
        protocol = protocol if isinstance(protocol, str) else None
        return AddressFile(name, None if address else f"{name} holds no address", text, True, version, address,
                           protocol, **self._socket_fields(address))

    def _socket_fields(self, address: str | None) -> dict:
        socket_path, socket = self._socket(address)
        return {"socket_path": socket_path, "socket": socket}

    def _socket(self, address: str | None) -> tuple[str | None, SocketState]:
        if address is None:
            return None, "unknown"
        scheme, sep, path = address.partition("://")
        if not sep or scheme != "unix" or not path.startswith("/"):
            return None, "unknown"  # vsock, a remote shim: nothing on this filesystem to check
        host = self.paths.host(path)
        try:
            mode = os.lstat(host).st_mode
        except FileNotFoundError:
            return host, "missing"
        except (OSError, ValueError):
            return host, "unknown"
        return host, "present" if stat.S_ISSOCK(mode) else "not-a-socket"

    def _runc(self, options: dict | None, ns: str, tid: str) -> RuncState:
        """runc's state of a task: under options.json's `root` (the root the shim's runc uses,
        whatever else is said), else --runc-root, else the state dir's own `runc/` (a default state
        dir, /run/containerd, holds it), else /run/containerd/runc (where containerd 1.6 puts it
        whatever its state dir)."""
        root = None
        if isinstance(options, dict) and isinstance(options.get("root"), str) and options["root"]:
            root = options["root"]
        root = root or self.paths.runc_root
        if root is None and self._has_runc_dir():
            path = os.path.join(self.path, "runc", ns, tid, "state.json")
            try:
                with dir_below(self._fd, "runc", ns, tid) as fd:
                    fact = read_at(fd, "state.json", path)
            except FileNotFoundError:
                fact = FileFact(path, "missing")
            except (OSError, ValueError) as e:
                fact = FileFact(path, "file", problem="unreadable", detail=str(e))
        else:
            path = _below(root or DEFAULT_RUNC_ROOT, ns, tid, "state.json")
            fact = read_path(self.paths.host(path))
        if fact.kind == "missing":
            return RuncState(path, problem="missing")
        if fact.data is None:
            return RuncState(path, problem=f"cannot be read ({fact.problem or fact.kind})")
        try:
            doc = orjson.loads(fact.data)
            pid, start = int(doc["init_process_pid"]), int(doc["init_process_start"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return RuncState(path, problem="no init_process_pid and init_process_start")
        created = doc.get("created") if isinstance(doc.get("created"), str) else None
        return RuncState(path, pid, start, created)

    def _has_runc_dir(self) -> bool:
        if self._runc_here is None:
            try:
                self._runc_here = stat.S_ISDIR(os.stat("runc", dir_fd=self._fd, follow_symlinks=False).st_mode)
            except OSError:
                self._runc_here = False
        return self._runc_here

    def _cri(self, containerd_root: str | None, tid: str) -> CriStatus | None:
        if containerd_root is None:
            return None
        path = _below(containerd_root, *CRI_CONTAINERS, tid, "status")
        fact = read_path(self.paths.host(path))
        if fact.kind == "missing":
            return None
        if fact.data is None:
            return CriStatus(path, problem=f"cannot be read ({fact.problem or fact.kind})")
        try:
            doc = orjson.loads(fact.data)
            return CriStatus(path, pid=_int(doc.get("Pid")), created_at=_int(doc.get("CreatedAt")) or 0,
                             started_at=_int(doc.get("StartedAt")) or 0, finished_at=_int(doc.get("FinishedAt")) or 0,
                             exit_code=_int(doc.get("ExitCode")), reason=str(doc.get("Reason") or ""))
        except (orjson.JSONDecodeError, AttributeError):
            return CriStatus(path, problem="not a CRI status document")


_SMALL_FILES = ("address", "bootstrap.json", "config.json", "options.json", "runtime", "shim-binary-path",
                "log.json")


def _below(base: str, *names: str) -> str:
    """os.path.join(base, *names) for names that hold no slash (read from a listing, or ours),
    at a fraction of its cost: it is asked four times a task."""
    return f"{base.rstrip('/')}/{'/'.join(names)}" if base else "/".join(names)


def _kind(entry: os.DirEntry) -> str:
    try:
        if entry.is_file(follow_symlinks=False):  # most of a bundle, asked first
            return "file"
        if entry.is_symlink():
            return "symlink"
        if entry.is_dir(follow_symlinks=False):
            return "dir"
        return kind_of(entry.stat(follow_symlinks=False).st_mode)
    except OSError:
        return "missing"


def _listing(dir_fd: int, *path: str) -> list[tuple[str, bool]] | None:
    """(name, is a dir) in dir_fd/path..., each component opened without following a link."""
    try:
        with dir_below(dir_fd, *path) as fd, os.scandir(fd) as it:
            return [(e.name, _kind(e) == "dir") for e in it]
    except (OSError, ValueError):
        return None


def read_path(path: str) -> FileFact:
    """A file outside the root (runc's state, CRI's checkpoint): its dir may be reached through
    links (it is the host's or the image's own), the file itself is never followed or blocked on."""
    directory, name = os.path.split(path)
    try:
        fd = os.open(directory or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return FileFact(path, "missing")
    except (OSError, ValueError) as e:
        denied = isinstance(e, OSError) and e.errno in (errno.EACCES, errno.EPERM)
        return FileFact(path, "file", problem="denied" if denied else "unreadable", detail=str(e))
    try:
        return read_at(fd, name, path)
    finally:
        os.close(fd)


def _pid_file(fact: FileFact, *, required: bool) -> tuple[PidFile, list[Finding]]:
    found = file_findings(fact, required=False)
    if fact.kind == "missing":
        if required:
            found.append(finding("F101", f"{fact.name} is missing", fact.rel))
        return PidFile(None, None, None), found
    if not fact.readable:
        return PidFile(None, fact.mtime_ns, None), found
    data = fact.data or b""
    atoi = go_atoi(data)
    if atoi is not None and atoi > 0:
        return PidFile(atoi, fact.mtime_ns, atoi), found
    shown = repr(data[:40])[2:-1]
    found.append(finding("F101", f"{fact.name} holds \"{shown}\", not a pid", fact.rel))
    return PidFile(None, fact.mtime_ns, atoi), found


def _text(fact: FileFact | None) -> str:
    if fact is None or fact.data is None:
        return ""
    return fact.data.decode("utf-8", "surrogateescape").strip()


def _json_object(fact: FileFact | None, found: list[Finding]) -> dict | None:
    if fact is None or fact.data is None:
        return None
    try:
        doc = orjson.loads(fact.data)
    except orjson.JSONDecodeError:
        found.append(finding("F102", f"{fact.name} is not valid JSON", fact.rel))
        return None
    if not isinstance(doc, dict):
        found.append(finding("F102", f"{fact.name} holds a JSON {type(doc).__name__}, not an object", fact.rel))
        return None
    return doc


def _go_field(doc: dict, key: str) -> Any:
    """doc[key] as Go's encoding/json decodes it into a field of that name: the exact key, else
    one that differs only in case (the last such, as Go's decoder leaves it)."""
    if key in doc:
        return doc[key]
    matches = [v for k, v in doc.items() if isinstance(k, str) and k.lower() == key]
    return matches[-1] if matches else None


def _root_from_work_link(link: str | None, ns: str, tid: str) -> str | None:
    """The containerd root dir, from `work` -> <root>/io.containerd.runtime.v2.task/<ns>/<id>."""
    if not link:
        return None
    suffix = f"/{TASKS_DIR}/{ns}/{tid}"
    return link[: -len(suffix)] or "/" if link.endswith(suffix) and link.startswith("/") else None


def _last_error(fact: FileFact | None) -> str | None:
    """The last error runc logged (log.json: one JSON object a line)."""
    if fact is None or not fact.data:
        return None
    for line in reversed(fact.data.splitlines()):
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(entry, dict) and entry.get("level") in ("error", "fatal") and isinstance(entry.get("msg"), str):
            return printable(entry["msg"])[:300]
    return None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None

