"""What a Go binary says of itself, read from the file, never run: its build info (the main
package, its module's version, the build settings such as -ldflags) and, for a program whose
version package keeps a default like containerd's (`Version = "1.7.34+unknown"`), that default.

Only the ELF headers, the `.go.buildinfo` section and, when asked, a search of `.rodata` are read
(a daemon's binary is 40-60 MB: a whole read would cost every scan).  A file that is not an ELF
Go binary, or is damaged, is `None` with the reason, never an exception.
"""

from __future__ import annotations

import mmap
import os
import re
import struct

from .value import Value

BUILDINFO_MAGIC = b"\xff Go buildinf:"
MAX_BUILDINFO = 1 << 20  # the section holds the module graph: a few KB, 64 KB at most seen
_SENTINEL = 16  # modinfo is framed by 16 bytes on each side


class GoBinary(Value):
    path: str
    go_version: str | None  # "go1.23.4"
    main_package: str | None  # build info's `path`: "github.com/containerd/containerd/v2/cmd/containerd"
    main_module: str | None  # `mod`: the main module's path
    main_version: str | None  # its version ("(devel)" when built from a checkout)
    ldflags: str | None  # the `-ldflags` build setting, where the build recorded it
    identity: tuple[int, int, int, int]  # (st_dev, st_ino, st_size, st_mtime_ns): the file read


class NotGo(Value):
    path: str
    problem: str


def read_go_binary(path: str) -> GoBinary | NotGo:
    """The build info of the Go binary at `path` (a link is followed: /proc/<pid>/exe is one)."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if not (st.st_mode & 0o170000 == 0o100000):
                return NotGo(path, "not a regular file")
            identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            elf = _Elf.read(f)
            if isinstance(elf, str):
                return NotGo(path, elf)
            section = elf.sections.get(".go.buildinfo")
            if section is None:
                return NotGo(path, "no .go.buildinfo section: not a Go binary")
            offset, size = section[1], min(section[2], MAX_BUILDINFO)
            f.seek(offset)
            data = f.read(size)
            parsed = _parse_buildinfo(data, elf, f)
    except OSError as e:
        return NotGo(path, e.strerror or str(e))
    if isinstance(parsed, str):
        return NotGo(path, parsed)
    go_version, modinfo = parsed
    main_package = main_module = main_version = ldflags = None
    for line in modinfo.splitlines():
        kind, _, rest = line.partition("\t")
        if kind == "path":
            main_package = rest
        elif kind == "mod":
            fields = rest.split("\t")
            main_module, main_version = fields[0], fields[1] if len(fields) > 1 else None
        elif kind == "build" and rest.startswith("-ldflags="):
            ldflags = _unquote(rest[len("-ldflags="):])
    return GoBinary(path, go_version or None, main_package, main_module, main_version, ldflags, identity)


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
        with open(path, "rb") as f:
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
    except (OSError, ValueError):
        return []


# --- ELF and the build info -----------------------------------------------------------------

class _Elf:
    """The section headers of an ELF file: name -> (address, file offset, size)."""

    def __init__(self, little: bool, is64: bool, sections: dict[str, tuple[int, int, int]]):
        self.little, self.is64, self.sections = little, is64, sections

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
        f.seek(str_offset)
        names = f.read(min(str_size, 1 << 16))
        sections = {}
        for name, addr, offset, size in raw:
            end = names.find(b"\0", name)
            if 0 <= name < len(names) and end > name:
                sections[names[name:end].decode("ascii", "replace")] = (addr, offset, size)
        return cls(little, is64, sections)

    def file_offset(self, address: int) -> int | None:
        for addr, offset, size in self.sections.values():
            if addr and addr <= address < addr + size:
                return offset + address - addr
        return None


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


def _parse_buildinfo(data: bytes, elf: _Elf, f) -> tuple[str, str] | str:
    """(go version, modinfo) from the .go.buildinfo section: the inline strings of Go 1.18 and
    later, or the pointers to Go strings of earlier releases."""
    if len(data) < 32 or not data.startswith(BUILDINFO_MAGIC):
        return "no build info"
    ptr_size, flags = data[14], data[15]
    try:
        if flags & 2:  # Go 1.18+: varint-prefixed strings right after the 32-byte header
            n, at = _uvarint(data, 32)
            version = data[at:at + n].decode("utf-8", "replace")
            n, at = _uvarint(data, at + n)
            modinfo = data[at:at + n]
        else:
            if ptr_size not in (4, 8):
                return "bad build info"
            e = ("<" if not flags & 1 else ">") + ("Q" if ptr_size == 8 else "I")
            version = _go_string(f, elf, struct.unpack_from(e, data, 16)[0], e, ptr_size)
            modinfo = _go_string(f, elf, struct.unpack_from(e, data, 16 + ptr_size)[0], e, ptr_size).encode(
                "utf-8", "surrogateescape")
    except (ValueError, struct.error):
        return "damaged build info"
    if len(modinfo) > 2 * _SENTINEL:
        modinfo = modinfo[_SENTINEL:-_SENTINEL]
    return version, modinfo.decode("utf-8", "replace")


def _go_string(f, elf: _Elf, header: int, e: str, ptr_size: int) -> str:
    """A Go string whose (pointer, length) header is at virtual address `header`."""
    at = elf.file_offset(header)
    if at is None:
        raise ValueError("unmapped")
    f.seek(at)
    pointer, length = struct.unpack(e + e[-1], f.read(2 * ptr_size))
    start = elf.file_offset(pointer)
    if start is None or length > MAX_BUILDINFO:
        raise ValueError("unmapped")
    f.seek(start)
    return f.read(length).decode("utf-8", "surrogateescape")


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
