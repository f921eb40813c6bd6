"""Walking a state root safely: no /proc here, only the files.

Everything in a root is untrusted.  Directories are opened relative to their parent's fd with
O_NOFOLLOW, so no path component can lead out of the root; a name's type comes from the
directory listing (d_type, an lstat), so a FIFO, socket or device is never opened; regular files
are opened O_NOFOLLOW | O_NONBLOCK and checked again with fstat before a single byte is read.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass

from . import layout
from .layout import FileFact, JsonDoc
from .rules import Finding, finding

_OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class ProcessRecord:
    """Everything the files of one process dir say, parsed; nothing from /proc."""

    id: str
    rel: str
    spec: JsonDoc
    pid: layout.PidFile
    starttime: layout.StartTimeFile
    exit_status: layout.ExitStatusFile
    findings: tuple[Finding, ...]
    temp_files: tuple[str, ...] = ()  # leftovers of an interrupted `recover repair`


@dataclass(frozen=True, slots=True)
class ContainerRecord:
    id: str
    rel: str
    state: JsonDoc
    processes: tuple[ProcessRecord, ...]  # sorted by id; every subdirectory, as containerd sees it
    findings: tuple[Finding, ...]

    @property
    def shim(self) -> str:
        value = (self.state.value or {}).get("shim")
        return value if isinstance(value, str) else ""

    @property
    def bundle(self) -> str:
        value = (self.state.value or {}).get("bundle")
        return value if isinstance(value, str) else ""


class RootError(Exception):
    """The root itself cannot be scanned (not a directory, unreadable)."""


def printable(name: str) -> str:
    """A name as it may be shown on a terminal: control characters and undecodable bytes escaped."""
    if name.isprintable():
        return name
    out = []
    for ch in name:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return "".join(out)


def json_text(name: str) -> str:
    """A name for JSON: exact, except bytes that are not UTF-8, which JSON cannot hold (\\xNN)."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _name_findings(name: str, rel: str) -> list[Finding]:
    if name.isprintable():
        return []
    # quoted, not repr(): printable() has escaped it already, and repr() would escape it again
    return [finding("F041", f"name '{printable(name)}' holds control characters or bytes that are not UTF-8", rel)]


class Root:
    """An open state root.  Use as a context manager; `containers()` lists, `read()` reads one."""

    def __init__(self, path: str):
        self.path = path
        self.real = os.path.realpath(path)
        try:
            self._fd = os.open(self.real, _OPEN_DIR)
        except OSError as e:
            raise RootError(f"{path}: {e.strerror}") from None
        self.findings: list[Finding] = []
        self._names: list[str] | None = None

    def __enter__(self) -> Root:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def containers(self) -> list[str]:
        """Container ids (directories, as containerd lists them), sorted; other entries become findings."""
        if self._names is not None:
            return self._names
        names = []
        try:
            entries = list(os.scandir(self._fd))
        except OSError as e:
            raise RootError(f"{self.path}: cannot list: {e.strerror}") from None
        for entry in entries:
            rel = printable(entry.name)
            try:
                if entry.is_dir(follow_symlinks=False):
                    names.append(entry.name)
                    continue
                if entry.name == layout.EVENTS_LOG and entry.is_file(follow_symlinks=False):
                    continue
                what = "symbolic link (not followed)" if entry.is_symlink() else "file"
            except OSError:
                continue  # vanished while listed
            self.findings.append(finding("F040", f"a {what} in the root; containerd ignores it", rel))
        self._names = sorted(names)
        return self._names

    def has_dir(self, cid: str, process: str) -> bool:
        """Whether <cid>/<process> is a directory (not a link) in the root right now."""
        try:
            cfd = os.open(cid, _OPEN_DIR, dir_fd=self._fd)
        except (OSError, ValueError):
            return False
        try:
            return stat.S_ISDIR(os.stat(process, dir_fd=cfd, follow_symlinks=False).st_mode)
        except (OSError, ValueError):
            return False
        finally:
            os.close(cfd)

    def read(self, cid: str) -> ContainerRecord:
        """Read one container dir.  Never raises for anything inside it."""
        rel = printable(cid)
        found = _name_findings(cid, rel)
        try:
            cfd = os.open(cid, _OPEN_DIR, dir_fd=self._fd)
        except OSError as e:
            found.append(_dir_problem(e, rel))
            missing = FileFact(f"{rel}/{layout.STATE_FILE}", "missing")
            return ContainerRecord(cid, rel, layout.parse_json_doc(missing, layout.STATE_SCHEMA, "F020"),
                                   (), tuple(found))
        try:
            try:
                entries = {e.name: e for e in os.scandir(cfd)}
            except OSError as e:
                found.append(_dir_problem(e, rel))
                entries = {}
            state = layout.parse_json_doc(
                self._read_entry(cfd, entries.get(layout.STATE_FILE), f"{rel}/{layout.STATE_FILE}"),
                layout.STATE_SCHEMA, "F020")
            processes = []
            for name in sorted(entries):
                entry = entries[name]
                if name == layout.STATE_FILE:
                    continue
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                except OSError:
                    continue
                if is_dir:
                    processes.append(self._read_process(cfd, name, f"{rel}/{printable(name)}"))
                elif entry.is_symlink():
                    prel = f"{rel}/{printable(name)}"
                    found.append(finding("F040", "a symbolic link in a container dir; not followed", prel))
            return ContainerRecord(cid, rel, state, tuple(processes), tuple(found))
        finally:
            os.close(cfd)

    def _read_process(self, cfd: int, name: str, rel: str) -> ProcessRecord:
        found = _name_findings(name, rel)
        entries: dict[str, os.DirEntry] = {}
        try:
            pfd = os.open(name, _OPEN_DIR, dir_fd=cfd)
        except OSError as e:
            pfd = -1
            found.append(_dir_problem(e, rel))
        try:
            if pfd >= 0:
                try:
                    entries = {e.name: e for e in os.scandir(pfd)}
                except OSError as e:
                    found.append(_dir_problem(e, rel))
            facts = {n: self._read_entry(pfd, entries.get(n), f"{rel}/{n}") for n in layout.PROCESS_FILES}
        finally:
            if pfd >= 0:
                os.close(pfd)
        spec = layout.parse_json_doc(facts[layout.PROCESS_FILE], layout.PROCESS_SCHEMA, "F021")
        pid = layout.parse_pid(facts[layout.PID_FILE])
        starttime = layout.parse_starttime(facts[layout.STARTTIME_FILE])
        exit_status = layout.parse_exit_status(facts[layout.EXIT_STATUS_FILE])
        for parsed in (spec, pid, starttime, exit_status):
            found.extend(parsed.findings)
        if layout.PID_TEMP_FILE in entries:
            found.append(finding("F038", ".pid is left over: the runtime died while writing the pid",
                                 f"{rel}/.pid"))
        temps = tuple(sorted(n for n in entries if n.startswith(layout.RECOVER_TEMP_PREFIX)))
        for temp in temps:
            found.append(finding("F043", f"{printable(temp)} is left over by an interrupted "
                                 "`recover repair`", f"{rel}/{printable(temp)}"))
        return ProcessRecord(name, rel, spec, pid, starttime, exit_status, tuple(found), temps)

    def _read_entry(self, dir_fd: int, entry: os.DirEntry | None, rel: str) -> FileFact:
        if entry is None or dir_fd < 0:
            return FileFact(rel, "missing")
        try:
            if entry.is_symlink():
                return self._symlink_fact(dir_fd, entry.name, rel)
            if entry.is_dir(follow_symlinks=False):
                return FileFact(rel, "dir")
            if not entry.is_file(follow_symlinks=False):
                return FileFact(rel, kind_of(entry.stat(follow_symlinks=False).st_mode))
        except FileNotFoundError:
            return FileFact(rel, "file", problem="vanished")
        except OSError as e:
            return FileFact(rel, "file", problem="unreadable", detail=e.strerror or str(e))
        return read_regular(dir_fd, entry.name, rel)

    def _symlink_fact(self, dir_fd: int, name: str, rel: str) -> FileFact:
        try:
            target = os.readlink(name, dir_fd=dir_fd)
        except OSError:
            return FileFact(rel, "file", problem="vanished")
        base = os.path.dirname(os.path.join(self.real, rel))
        resolved = os.path.normpath(os.path.join(base, target))
        inside = os.path.commonpath([self.real, resolved]) == self.real
        return FileFact(rel, "symlink", problem=None if inside else "link-out", detail=printable(target))


def read_regular(dir_fd: int, name: str, rel: str, limit: int = layout.MAX_FILE_BYTES) -> FileFact:
    """Open a name that was listed as a regular file, without following links or blocking."""
    try:
        fd = os.open(name, _OPEN_FILE, dir_fd=dir_fd)
    except FileNotFoundError:
        return FileFact(rel, "file", problem="vanished")
    except OSError as e:
        if e.errno == errno.ELOOP:  # replaced by a symlink since it was listed
            return FileFact(rel, "symlink", problem="link-out", detail="(replaced while reading)")
        return FileFact(rel, "file", problem="unreadable", detail=e.strerror or str(e))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # swapped since it was listed: read nothing
            return FileFact(rel, kind_of(st.st_mode), mtime_ns=st.st_mtime_ns)
        if st.st_size > limit:
            return FileFact(rel, "file", size=st.st_size, mtime_ns=st.st_mtime_ns, problem="too-big")
        chunks, total = [], 0
        while total <= limit:
            chunk = os.read(fd, limit + 1 - total)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:  # grew while being read
            return FileFact(rel, "file", size=total, mtime_ns=st.st_mtime_ns, problem="too-big")
        data = b"".join(chunks)
        return FileFact(rel, "file", data=data, size=len(data), mtime_ns=st.st_mtime_ns)
    except OSError as e:
        return FileFact(rel, "file", problem="unreadable", detail=e.strerror or str(e))
    finally:
        os.close(fd)


def kind_of(mode: int) -> layout.Kind:
    """A file type from its st_mode, in the words recover uses."""
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "file" if stat.S_ISREG(mode) else "other"


def _dir_problem(e: OSError, rel: str) -> Finding:
    if e.errno == errno.ELOOP or e.errno == errno.ENOTDIR:
        return finding("F042", "no longer a directory (replaced while scanning)", rel)
    if e.errno == errno.ENOENT:
        return finding("F011", "vanished while it was scanned", rel)
    return finding("F042", f"cannot be listed: {e.strerror}", rel)


_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def filesystem_type(path: str, mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """The type of the filesystem holding `path` (e.g. "tmpfs"), from this machine's mount table."""
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    best, best_type = "", None
    for line in lines:
        left, _, right = line.partition(" - ")
        fields = left.split()
        if len(fields) < 5 or not right:
            continue
        mount_point = _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), fields[4])  # "\040" is a space
        inside = path == mount_point or path.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, best_type = mount_point, right.split()[0]
    return best_type


def iter_records(root: Root, ids: list[str]) -> Iterator[ContainerRecord]:
    for cid in ids:
        yield root.read(cid)
