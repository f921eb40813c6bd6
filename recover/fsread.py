"""Reading untrusted files safely: shared by every layout's reader.

Nothing here follows a link it was not asked to, opens a FIFO, socket or device, or reads more
than 1 MiB of a file.  A file's problems become a `FileFact` and findings, never an exception.
"""

from __future__ import annotations

import errno
import operator
import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import orjson

from .rules import Finding, finding
from .value import Value

MAX_FILE_BYTES = 1 << 20
_READ_CHUNK = 1 << 16  # what a read asks for when a file changed size while it was read
_OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY


# a dir below the root: never through a link
OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
RECOVER_TEMP_PREFIX = ".recover-tmp-"  # a file `recover repair` writes before it publishes it: never state


@contextmanager
def dir_below(dir_fd: int, *parts: str) -> Iterator[int]:
    """An fd of dir_fd/parts..., each component opened relative to the last without following a
    link: no component can lead out of the tree.  Raises OSError (or ValueError on a NUL)."""
    fds: list[int] = []
    try:
        fd = dir_fd
        for part in parts:
            fd = os.open(part, OPEN_DIR, dir_fd=fd)
            fds.append(fd)
        yield fd
    finally:
        for fd in reversed(fds):
            os.close(fd)


class RootError(Exception):
    """The root itself cannot be scanned (not a directory, unreadable)."""


class OpenRoot:
    """A root dir held open by fd (every read below it is relative to this fd).  A context manager."""

    def __init__(self, path: str):
        self.path = path
        try:  # the path as given: links on the way to the root are the user's to follow
            self.fd = os.open(path, OPEN_DIR & ~os.O_NOFOLLOW)
        except (OSError, ValueError) as e:
            raise RootError(f"{path}: {getattr(e, 'strerror', None) or e}") from None
        self.real = _real(path, self.fd)
        self._dirs: dict[tuple[str, ...], int] = {}
        self._listing: list[os.DirEntry] | None = None

    def listing(self) -> list[os.DirEntry]:
        """The root's entries, sorted by name, listed once: what classifies the root is what its
        reader then reads (and a root of 50,000 containers is listed and sorted once, not twice).
        Raises OSError when the root cannot be listed."""
        if self._listing is None:
            with os.scandir(self.fd) as entries:
                self._listing = sorted(entries, key=_BY_NAME)
        return self._listing

    def dir_fd(self, *parts: str) -> int:
        """An fd of the dir root/parts..., opened as dir_below opens it (no link followed) and kept
        until another path is asked for or the root closes: the containers of one dir, read one
        after another, open it once, and at most one path's dirs are open at a time (a root of
        thousands of namespaces must not run out of fds)."""
        fd = self._dirs.get(parts)
        if fd is None:
            for elsewhere in [kept for kept in self._dirs if parts[:len(kept)] != kept]:
                os.close(self._dirs.pop(elsewhere))
            parent = self.fd if len(parts) == 1 else self.dir_fd(*parts[:-1])
            fd = self._dirs[parts] = os.open(parts[-1], OPEN_DIR, dir_fd=parent)
        return fd

    def close(self) -> None:
        for fd in self._dirs.values():
            os.close(fd)
        self._dirs.clear()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> OpenRoot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _real(path: str, fd: int) -> str:
    """A path to the dir `fd` holds: its real path, where that names the same dir; else the path
    as given, made absolute.  A dir reached through /proc/<pid>/root (another mount namespace's)
    has no real path here: realpath() would name a dir of this namespace that merely has its name."""
    real = os.path.realpath(path)
    try:
        st, opened = os.stat(real), os.fstat(fd)
    except OSError:
        return os.path.abspath(path)
    return real if (st.st_dev, st.st_ino) == (opened.st_dev, opened.st_ino) else os.path.abspath(path)


_BY_NAME = operator.attrgetter("name")

Kind = Literal["file", "missing", "fifo", "socket", "device", "dir", "symlink", "other"]


class FileFact(Value):
    """What reading one name in the root found.  `data` is set only for a regular file read whole."""

    rel: str
    kind: Kind
    data: bytes | None = None
    size: int | None = None
    mtime_ns: int | None = None
    # denied: recover may not read it (not root); containerd, as root, can: nothing is predicted from it
    problem: Literal["too-big", "vanished", "unreadable", "denied", "link-out"] | None = None
    detail: str = ""  # errno text, or a symlink's target

    @property
    def readable(self) -> bool:
        return self.data is not None

    @property
    def name(self) -> str:
        """The file's own name: messages say it; the finding's path says where it is."""
        return self.rel.rsplit("/", 1)[-1]


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
    if name.isascii():  # most names: told without encoding a copy
        return name
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def json_safe(value):
    """A value built from names in a root, made safe for JSON: every string through json_text.
    Most values need nothing, and orjson says so at once: it refuses exactly what must change
    (a string holding surrogates, a key that is not a string)."""
    try:
        orjson.dumps(value)
        return value
    except orjson.JSONEncodeError:
        return _json_escaped(value)


def _json_escaped(value):
    if isinstance(value, str):
        return json_text(value)
    if isinstance(value, dict):
        return {json_text(str(k)): _json_escaped(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_escaped(v) for v in value]
    return value


def file_findings(fact: FileFact, *, required: bool) -> list[Finding]:
    """Findings about the file itself (type, size, readability), before its content is parsed."""
    if fact.problem is None and fact.kind == "file":  # a regular file, read whole: most of them
        return []
    rel = fact.rel
    if fact.kind == "missing":
        return [finding("F001", f"{fact.name} is missing", rel)] if required else []
    if fact.kind in ("fifo", "socket", "device", "other"):
        return [finding("F007", f"{fact.name} is a {fact.kind}, not a regular file; not opened", rel)]
    if fact.kind == "dir":
        return [finding("F008", f"{fact.name} is a directory, not a regular file", rel)]
    if fact.kind == "symlink":
        if fact.problem == "link-out":
            return [finding("F010", f"{fact.name} links out of the root (to {fact.detail!r}); not followed", rel)]
        return [finding("F009", f"{fact.name} is a symbolic link (to {fact.detail!r}); not followed", rel)]
    if fact.problem == "too-big":
        return [finding("F006", f"{fact.name} is {fact.size} bytes, over the 1 MiB limit; not read", rel)]
    if fact.problem == "vanished":
        return [finding("F011", f"{fact.name} vanished between listing and reading", rel)]
    if fact.problem == "unreadable":
        return [finding("F012", f"{fact.name} cannot be read: {fact.detail}", rel)]
    if fact.problem == "denied":
        return [finding("F012", f"{fact.name} cannot be read by recover ({fact.detail}); containerd, as root, "
                        "can: what it would do with it is not predicted", rel)]
    return []


def content_findings(fact: FileFact) -> list[Finding]:
    """Findings shared by every file's content: empty, NUL-filled, not UTF-8."""
    data = fact.data or b""
    if not data:
        return [finding("F002", f"{fact.name} is empty", fact.rel)]
    out = []
    if b"\0" in data:
        out.append(finding("F004", f"{fact.name} holds {data.count(0)} NUL byte(s)", fact.rel))
    if data.isascii():  # ASCII is UTF-8: no decoding (and no copy) needed to know it
        return out
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        out.append(finding("F005", f"{fact.name} is not UTF-8 (byte {e.start})", fact.rel))
    return out


def show_bytes(data: bytes, limit: int = 40) -> str:
    """A short, escaped rendering of file bytes for a message."""
    shown = repr(data[:limit])[2:-1]
    return f'"{shown}"' + ("..." if len(data) > limit else "")


def unreadable(rel: str, e: OSError) -> FileFact:
    """A file that could not be read: for lack of permission (containerd, as root, could), or not at all."""
    denied = e.errno in (errno.EACCES, errno.EPERM)
    return FileFact(rel, "file", problem="denied" if denied else "unreadable", detail=e.strerror or str(e))


def read_at(dir_fd: int, name: str, rel: str) -> FileFact:
    """A name in a dir, not listed first: missing, something other than a regular file (never
    opened), or read as read_regular reads it."""
    try:
        mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return FileFact(rel, "missing")
    except OSError as e:
        return unreadable(rel, e)
    if not stat.S_ISREG(mode):
        return FileFact(rel, kind_of(mode))
    return read_regular(dir_fd, name, rel)


def read_regular(dir_fd: int, name: str, rel: str, limit: int = MAX_FILE_BYTES) -> FileFact:
    """Open a name that was listed as a regular file, without following links or blocking."""
    try:
        fd = os.open(name, _OPEN_FILE, dir_fd=dir_fd)
    except FileNotFoundError:
        return FileFact(rel, "file", problem="vanished")
    except OSError as e:
        if e.errno == errno.ELOOP:  # replaced by a symlink since it was listed
            return FileFact(rel, "symlink", problem="link-out", detail="(replaced while reading)")
        return unreadable(rel, e)
    try:
        st = os.fstat(fd)
        size = st.st_size
        # The common case: still a regular file, under the limit, and one read sized from fstat
        # (one byte over, to see growth) returns it whole.  Asking for the whole limit would
        # allocate a MiB per file.
        if st.st_mode & _FORMAT_BITS == stat.S_IFREG and size <= limit:
            first = os.read(fd, size + 1)
            if len(first) == size:
                return FileFact(rel, "file", first, size, st.st_mtime_ns)
            return _read_changed(fd, first, st, rel, limit)
        if not stat.S_ISREG(st.st_mode):  # swapped since it was listed: read nothing
            return FileFact(rel, kind_of(st.st_mode), mtime_ns=st.st_mtime_ns)
        return FileFact(rel, "file", size=size, mtime_ns=st.st_mtime_ns, problem="too-big")
    except OSError as e:
        return unreadable(rel, e)
    finally:
        os.close(fd)


_FORMAT_BITS = 0o170000  # st_mode's file type bits (stat.S_IFMT masks with them)


def _read_changed(fd: int, first: bytes, st: os.stat_result, rel: str, limit: int) -> FileFact:
    """A file whose first read was short or long (it changed since fstat): read on in chunks
    until EOF or past the limit."""
    chunks, total = [first], len(first)
    while total <= limit:
        chunk = os.read(fd, min(limit + 1 - total, _READ_CHUNK))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    if total > limit:  # grew while being read
        return FileFact(rel, "file", size=total, mtime_ns=st.st_mtime_ns, problem="too-big")
    data = b"".join(chunks)
    return FileFact(rel, "file", data=data, size=len(data), mtime_ns=st.st_mtime_ns)


def kind_of(mode: int) -> Kind:
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


def short_process(process_id: str) -> str:
    """A process id as the table shows it: cut to 12 characters like a container id (Docker's and
    CRI's exec ids are 64 hex digits); `explain` takes the prefix."""
    return process_id[:12]
