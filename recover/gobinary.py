"""What a Go binary says of itself, read from the file, never run: its build info (the main
package, its module's version, the build settings such as -ldflags) and, for a program whose
version package keeps a default like containerd's (`Version = "1.7.34+unknown"`), that default.

Only the ELF headers, the `.go.buildinfo` section and, when asked, a search of `.rodata` are read
(a daemon's binary is 40-60 MB: a whole read would cost every scan).  A file that is not an ELF
Go binary, or is damaged, is `NotGo` with the reason, never an exception; a FIFO is never opened.
"""

from __future__ import annotations

import mmap
import os
import re
import stat
import struct

from .value import Value

BUILDINFO_MAGIC = b"\xff Go buildinf:"
MAX_BUILDINFO = 1 << 20  # the section holds the module graph: a few KB, 64 KB at most seen
_SENTINEL = 16  # modinfo is framed by 16 bytes on each side


class GoBinary(Value):
    path: str
    main_package: str | None  # build info's `path`: "github.com/containerd/containerd/v2/cmd/containerd"
    main_version: str | None  # the main module's version (`mod`): "(devel)" when built from a checkout
    ldflags: str | None  # the `-ldflags` build setting, where the build recorded it


class NotGo(Value):
    path: str
    problem: str


def _open(path: str):
    """A regular file opened for reading without blocking (a FIFO named where a binary is expected
    is never waited on) and without a controlling terminal; ValueError when it is not one."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError("not a regular file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_go_binary(path: str) -> GoBinary | NotGo:
    """The build info of the Go binary at `path` (a link is followed: /proc/<pid>/exe is one).
    A file that is not a regular ELF Go binary, or whose headers lie, is NotGo with the reason."""
    try:
        with _open(path) as f:
            elf = _Elf.read(f)
            if isinstance(elf, str):
                return NotGo(path, elf)
            section = elf.sections.get(".go.buildinfo")
            if section is None:
                return NotGo(path, "no .go.buildinfo section: not a Go binary")
            f.seek(section[1])
            data = f.read(min(section[2], MAX_BUILDINFO))
            modinfo, problem = _parse_buildinfo(data)
    except OSError as e:
        return NotGo(path, e.strerror or str(e))
    except (ValueError, OverflowError, struct.error) as e:  # offsets out of range: a damaged file
        return NotGo(path, f"damaged ({e})")
    if modinfo is None:
        return NotGo(path, problem)
    main_package = main_version = ldflags = None  # all None: the build info of a Go before 1.18
    for line in modinfo.splitlines():
        kind, _, rest = line.partition("\t")
        if kind == "path":
            main_package = rest
        elif kind == "mod":
            fields = rest.split("\t")
            main_version = fields[1] if len(fields) > 1 else None
        elif kind == "build" and rest.startswith("-ldflags="):
            ldflags = _unquote(rest[len("-ldflags="):])
    return GoBinary(path, main_package, main_version, ldflags)


def ldflags_value(binary: GoBinary, variable: str) -> str | None:
    """The value `-X <package>.<variable>=...` set in the recorded -ldflags, where one did."""
    if binary.ldflags is None:
        return None
    found = re.search(r"(?:^|\s)-X[= ]?['\"]?[^\s=]*\." + re.escape(variable) + r"=([^\s'\"]+)", binary.ldflags)
    return found.group(1) if found else None


def search_rodata(path: str, pattern: re.Pattern[bytes], anchor: bytes) -> list[bytes]:
    """The matches of `pattern` that contain `anchor`, in the binary's read-only data (a version
    package's default string, which a distribution's -X leaves in place).  Found by the anchor
    (a plain search) first: a regular expression over 40 MB would take half a second."""
    try:
        with _open(path) as f:
            elf = _Elf.read(f)
            if isinstance(elf, str):
                return []
            section = elf.sections.get(".rodata")
            if section is None:
                return []
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                start, end = section[1], min(section[1] + section[2], len(data))
                found = []
                at = data.find(anchor, start, end)
                while at >= 0 and len(found) < 16:
                    window = data[max(start, at - 64):at + len(anchor) + 64]
                    found.extend(m.group() for m in pattern.finditer(window) if anchor in m.group())
                    at = data.find(anchor, at + len(anchor), end)
                return found
    except (OSError, ValueError, OverflowError, struct.error):
        return []


# --- ELF and the build info -----------------------------------------------------------------

class _Elf:
    """The section headers of an ELF file: name -> (address, file offset, size)."""

    def __init__(self, sections: dict[str, tuple[int, int, int]]):
        self.sections = sections

    @classmethod
    def read(cls, f) -> _Elf | str:
        head = f.read(64)
        if len(head) < 52 or head[:4] != b"\x7fELF":
            return "not an ELF file"
        is64, little = head[4] == 2, head[5] == 1
        e = "<" if little else ">"
        if is64:
            shoff, = struct.unpack_from(e + "Q", head, 0x28)
            shentsize, shnum, shstrndx = struct.unpack_from(e + "HHH", head, 0x3A)
        else:
            shoff, = struct.unpack_from(e + "I", head, 0x20)
            shentsize, shnum, shstrndx = struct.unpack_from(e + "HHH", head, 0x2E)
        if not shoff or not shnum or shnum > 4096 or shstrndx >= shnum or shentsize < (64 if is64 else 40):
            return "no section headers"
        file_size = os.fstat(f.fileno()).st_size
        if shoff + shentsize * shnum > file_size:
            return "section headers beyond the end of the file"
        f.seek(shoff)
        table = f.read(shentsize * shnum)
        if len(table) < shentsize * shnum:
            return "truncated section headers"
        raw = []
        for i in range(shnum):
            at = i * shentsize
            if is64:
                name, _, _, addr, offset, size = struct.unpack_from(e + "IIQQQQ", table, at)
            else:
                name, _, _, addr, offset, size = struct.unpack_from(e + "IIIIII", table, at)
            raw.append((name, addr, offset, size))
        _, _, str_offset, str_size = raw[shstrndx]
        if str_offset >= file_size:
            return "section names beyond the end of the file"
        f.seek(str_offset)
        names = f.read(min(str_size, 1 << 16))
        sections = {}
        for name, addr, offset, length in raw:
            end = names.find(b"\0", name)
            if 0 <= name < len(names) and end > name and offset < file_size:
                sections[names[name:end].decode("ascii", "replace")] = (addr, offset, min(length, file_size - offset))
        return cls(sections)


def _uvarint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while at < len(data) and shift < 64:
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at += 1
        if byte < 0x80:
            return value, at
        shift += 7
    raise ValueError("bad varint")


def _parse_buildinfo(data: bytes) -> tuple[str | None, str]:
    """(modinfo, why not) of a .go.buildinfo section: Go 1.18 and later keep varint-prefixed
    strings after a 32-byte header.  Earlier releases point to Go strings instead: no modinfo is
    read from them (their programs are told by what search_rodata finds)."""
    if len(data) < 32 or not data.startswith(BUILDINFO_MAGIC):
        return None, "no build info"
    if not data[15] & 2:
        return "", "the build info of a Go release before 1.18"
    try:
        n, at = _uvarint(data, 32)  # the Go version
        n, at = _uvarint(data, at + n)
    except ValueError:
        return None, "damaged build info"
    modinfo = data[at:at + n]
    if len(modinfo) > 2 * _SENTINEL:
        modinfo = modinfo[_SENTINEL:-_SENTINEL]
    return modinfo.decode("utf-8", "replace"), ""


def _unquote(value: str) -> str:
    """A build setting's value, quoted by Go's strconv.Quote when it holds spaces or quotes (its
    escapes are JSON's for what a command line holds: \\t, \\", \\\\)."""
    if len(value) >= 2 and value[0] == value[-1] == '"':
        import json

        try:
            return json.loads(value)
        except ValueError:
            return value[1:-1]
    return value
