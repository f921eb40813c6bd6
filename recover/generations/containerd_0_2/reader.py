"""Reading a containerd 0.2 root into records: no /proc here, only the files.

Everything in a root is untrusted.  Directories are opened relative to their parent's fd with
O_NOFOLLOW, so no path component can lead out of the root; a name's type comes from the
directory listing (d_type, an lstat), so a FIFO, socket or device is never opened; regular files
are opened O_NOFOLLOW | O_NONBLOCK and checked again with fstat before a single byte is read.
"""

from __future__ import annotations

import errno
import operator
import os
import stat

from ...fsread import (
    OPEN_DIR,
    RECOVER_TEMP_PREFIX,
    FileFact,
    OpenRoot,
    RootError,
    kind_of,
    printable,
    read_regular,
    unreadable,
)
from ...records import ContainerRecord, ProcessRecord
from ...rules import Finding, finding
from ...value import Value
from . import files
from .files import JsonDoc


class ProcessFiles(Value):
    """Everything the files of one process dir say, parsed as recover and as containerd 0.2.9 read them."""

    spec: JsonDoc
    pid: files.PidFile
    starttime: files.StartTimeFile
    exit_status: files.ExitStatusFile
    exit_is_file: bool = False  # `exit` is a regular file where containerd expects its FIFO

    @property
    def daemon_pid(self) -> int | None:
        """The pid as containerd reads it (Go's Atoi), or None when it cannot."""
        return self.pid.containerd


class ContainerFiles(Value):
    state: JsonDoc
    shim: str  # the shim's path state.json names ("": none)
    labels: tuple[str, ...]


_is_recover_temp = operator.methodcaller("startswith", RECOVER_TEMP_PREFIX)
_STATE_FILES = (files.STATE_FILE,)
_RUNTIME_LOGS = (files.RUNTIME_LOG,)


def _name_findings(name: str, rel: str) -> list[Finding]:
    if name.isprintable():
        return []
    # quoted, not repr(): printable() has escaped it already, and repr() would escape it again
    return [finding("F041", f"name '{printable(name)}' holds control characters or bytes that are not UTF-8", rel)]


class Reader:
    """A containerd 0.2 root: `containers()` lists the container ids, `read()` reads one."""

    def __init__(self, root: OpenRoot, runc_dir: str | None = None):
        self.runc_dir = runc_dir  # runc's state dir beside the root, when it is read
        self.path = root.path
        self.real = root.real
        self._root = root
        self._fd = root.fd
        self.findings: list[Finding] = []
        self._names: list[str] | None = None

    def containers(self) -> list[str]:
        """Container ids (directories, as containerd lists them), sorted; other entries become findings."""
        if self._names is not None:
            return self._names
        try:
            entries = self._root.listing()  # sorted by name, as containerd reads them
        except OSError as e:
            raise RootError(f"{self.path}: cannot list: {e.strerror}") from None
        names = []
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    names.append(entry.name)
                    continue
                if entry.name == files.EVENTS_LOG and entry.is_file(follow_symlinks=False):
                    continue
                what = "symbolic link (not followed)" if entry.is_symlink() else "file"
            except OSError:
                continue  # vanished while listed
            self.findings.append(finding("F040", f"a {what} in the root; containerd ignores it", printable(entry.name)))
        self._names = names
        return names

    def has_dir(self, cid: str, process: str) -> bool:
        """Whether <cid>/<process> is a directory (not a link) in the root right now."""
        try:
            cfd = os.open(cid, OPEN_DIR, dir_fd=self._fd)
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
        found = [] if rel is cid else _name_findings(cid, rel)  # printable() gives a printable name back
        try:
            cfd = os.open(cid, OPEN_DIR, dir_fd=self._fd)
        except OSError as e:
            found.append(_dir_problem(e, rel))
            state = files.parse_json_doc(_unlisted(f"{rel}/{files.STATE_FILE}", e), files.STATE_SCHEMA, "F020")
            return container_record(cid, rel, state, [], found)
        try:
            try:
                entries = {e.name: e for e in os.scandir(cfd)}
            except OSError as e:
                found.append(_dir_problem(e, rel))
                state = files.parse_json_doc(_unlisted(f"{rel}/{files.STATE_FILE}", e), files.STATE_SCHEMA, "F020")
                return container_record(cid, rel, state, [], found)
            (state_fact,) = self._read_listed(cfd, entries, _STATE_FILES, rel)
            state = files.parse_json_doc(state_fact, files.STATE_SCHEMA, "F020")
            processes = []
            for name in sorted(entries):
                entry = entries[name]
                if name == files.STATE_FILE:
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
            return container_record(cid, rel, state, processes, found)
        finally:
            os.close(cfd)

    def _read_process(self, cfd: int, name: str, rel: str) -> ProcessRecord:
        found = _name_findings(name, rel)
        entries: dict[str, os.DirEntry] = {}
        listing_error: OSError | None = None
        try:
            pfd = os.open(name, OPEN_DIR, dir_fd=cfd)
        except OSError as e:
            pfd, listing_error = -1, e
        try:
            if pfd >= 0:
                try:
                    entries = {e.name: e for e in os.scandir(pfd)}
                except OSError as e:
                    listing_error = e
            if listing_error is not None:
                found.append(_dir_problem(listing_error, rel))
                facts = [_unlisted(f"{rel}/{n}", listing_error) for n in files.PROCESS_FILES]
            else:
                facts = self._read_listed(pfd, entries, files.PROCESS_FILES, rel)
            spec_fact, pid_fact, starttime_fact, exit_status_fact = facts  # in PROCESS_FILES' order
            pid = files.parse_pid(pid_fact)
            runtime_error = None
            if pid.value is None:  # why the start failed, when runc logged it
                (log,) = self._read_listed(pfd, entries, _RUNTIME_LOGS, rel)
                runtime_error = files.last_runtime_error(log)
        finally:
            if pfd >= 0:
                os.close(pfd)
        spec = files.parse_json_doc(spec_fact, files.PROCESS_SCHEMA, "F021")
        starttime = files.parse_starttime(starttime_fact)
        exit_status = files.parse_exit_status(exit_status_fact)
        found += spec.findings + pid.findings + starttime.findings + exit_status.findings
        if files.PID_TEMP_FILE in entries:
            found.append(finding("F038", ".pid is left over: the runtime died while writing the pid",
                                 f"{rel}/.pid"))
        temps = tuple(sorted(filter(_is_recover_temp, entries)))  # filter in C: most dirs have none
        for temp in temps:
            found.append(finding("F043", f"{printable(temp)} is left over by an interrupted "
                                 "`recover repair`", f"{rel}/{printable(temp)}"))
        exit_fifo = entries.get(files.EXIT_FIFO)
        try:
            exit_is_file = exit_fifo is not None and exit_fifo.is_file(follow_symlinks=False)
        except OSError:  # vanished since it was listed
            exit_is_file = False
        return process_record(name, rel, ProcessFiles(spec, pid, starttime, exit_status, exit_is_file), found,
                              temps, runtime_error)

    def _read_listed(self, dir_fd: int, entries: dict[str, os.DirEntry], names: tuple[str, ...],
                     rel: str) -> list[FileFact]:
        """The named files of a listed dir (`rel` names it), in order: a regular file read whole,
        anything else said from its listing and never opened; a name not listed is missing."""
        facts = []
        for name in names:
            entry = entries.get(name)
            name_rel = f"{rel}/{name}"
            try:
                if entry is None:
                    facts.append(FileFact(name_rel, "missing"))
                elif entry.is_file(follow_symlinks=False):  # the common case first: a regular file
                    facts.append(read_regular(dir_fd, name, name_rel))
                elif entry.is_symlink():
                    facts.append(self._symlink_fact(dir_fd, name, name_rel))
                elif entry.is_dir(follow_symlinks=False):
                    facts.append(FileFact(name_rel, "dir"))
                else:
                    facts.append(FileFact(name_rel, kind_of(entry.stat(follow_symlinks=False).st_mode)))
            except FileNotFoundError:
                facts.append(FileFact(name_rel, "file", problem="vanished"))
            except OSError as e:
                facts.append(unreadable(name_rel, e))
        return facts

    def _symlink_fact(self, dir_fd: int, name: str, rel: str) -> FileFact:
        try:
            target = os.readlink(name, dir_fd=dir_fd)
        except OSError:
            return FileFact(rel, "file", problem="vanished")
        base = os.path.dirname(os.path.join(self.real, rel))
        resolved = os.path.normpath(os.path.join(base, target))
        inside = os.path.commonpath([self.real, resolved]) == self.real
        return FileFact(rel, "symlink", problem=None if inside else "link-out", detail=printable(target))


def process_record(name: str, rel: str, parsed: ProcessFiles, found: list[Finding], temps: tuple[str, ...] = (),
                   runtime_error: str | None = None) -> ProcessRecord:
    """The shared record of a 0.2 process, from its parsed files."""
    exec_ = (parsed.spec.value or {}).get("exec")
    return ProcessRecord(  # by position, in field order: keyword arguments cost 40 ns each
        name, rel, exec_ if isinstance(exec_, bool) else None, parsed.pid.value, parsed.pid.mtime_ns,
        parsed.starttime.value, "starttime" if parsed.starttime.value is not None else None,
        parsed.exit_status.value, parsed.exit_status.source, tuple(found), parsed, temps, False, runtime_error)


def container_record(cid: str, rel: str, state: JsonDoc, processes: list[ProcessRecord],
                     found: list[Finding]) -> ContainerRecord:
    """The shared record of a 0.2 container, from its parsed state.json and its processes."""
    doc = state.value or {}
    bundle, runtime, shim, labels = doc.get("bundle"), doc.get("runtime"), doc.get("shim"), doc.get("labels")
    labels = tuple(x for x in labels if isinstance(x, str)) if isinstance(labels, list) and labels else ()
    return ContainerRecord(  # by position, in field order (namespace: none in 0.2)
        cid, rel, tuple(processes), tuple(found), None, bundle if isinstance(bundle, str) else "",
        runtime if isinstance(runtime, str) else "",
        ContainerFiles(state, shim if isinstance(shim, str) else "", labels))


def _unlisted(rel: str, e: OSError) -> FileFact:
    """A file of a dir that could not be listed: unknown when recover lacks the permission
    (containerd, as root, reads it), otherwise as good as missing."""
    if e.errno in (errno.EACCES, errno.EPERM):
        return FileFact(rel, "file", problem="denied", detail=e.strerror or str(e))
    return FileFact(rel, "missing")


def _dir_problem(e: OSError, rel: str) -> Finding:
    if e.errno == errno.ELOOP or e.errno == errno.ENOTDIR:
        return finding("F042", "no longer a directory (replaced while scanning)", rel)
    if e.errno == errno.ENOENT:
        return finding("F011", "vanished while it was scanned", rel)
    return finding("F042", f"cannot be listed: {e.strerror}", rel)


