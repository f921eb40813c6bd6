"""Which containerd will restart over a runtime-v2 state dir (SPEC-v2 §3a): what it does to each
task depends on its version, not on the files alone (1.6 and 1.7 bundles look alike, and an
upgrade restarts a newer daemon over older bundles).

Found, in order: `--containerd-version`; the version in the binary that will start, read from the
file and never run (the guarded unit's ExecStart when it is containerd, else containerd.service's,
else `containerd` on systemd's PATH; inside --image-root when given); else what the bundles show (a
`bootstrap.json` is written by 2.x only); else it cannot be told, and each known behaviour is
judged.  A version recover has not seen maps to the nearest one it has, and says so.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable, Iterable
from typing import Literal

from ...gobinary import GoBinary, ldflags_value, read_go_binary, search_rodata
from ...value import Value

Behaviour = Literal["1.6", "1.7", "2.x"]
BEHAVIOURS: tuple[Behaviour, ...] = ("1.6", "1.7", "2.x")
SEEN_ON: dict[Behaviour, str] = {"1.6": "1.6.20", "1.7": "1.7.34", "2.x": "2.3.4"}  # the real daemons checked
Source = Literal["flag", "environment", "binary", "bundles", "unknown"]
ENV_VERSION = "RECOVER_CONTAINERD_VERSION"  # the flag's default, read by the CLI

UNIT = "containerd.service"
UNIT_DIRS = ("/etc/systemd/system", "/run/systemd/system", "/usr/local/lib/systemd/system", "/lib/systemd/system",
             "/usr/lib/systemd/system")
SYSTEMD_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
_VERSION = re.compile(r"v?(\d+)\.(\d+)(?:\.(\d+))?")
_DEFAULT_LITERAL = re.compile(rb"\d+\.\d+\.\d+[0-9A-Za-z.~-]*\+unknown")  # containerd's version.go default


class DaemonVersion(Value):
    """The containerd judged: its version, the behaviours predicted, and how it was found."""

    version: str | None  # as given or read ("2.3.4", "1.6.20~ds1"); None: cannot be told
    behaviours: tuple[Behaviour, ...]  # one; every known one when the version cannot be told
    source: Source
    binary: str | None = None  # the binary read (source "binary")
    note: str = ""  # how it was found, and how a version recover has not seen is judged

    @property
    def name(self) -> str:
        """How findings name it: "containerd 2.3.4", or "containerd 1.6-2.x" when unknown."""
        if self.version is not None:
            return f"containerd {self.version}"
        return "containerd " + (self.behaviours[0] if len(self.behaviours) == 1 else "1.6-2.x")

    def json(self) -> dict:
        return {"version": self.version, "judged_as": list(self.behaviours), "source": self.source,
                "binary": self.binary, "note": self.note}


def parse_version(text: str) -> tuple[int, int, int] | None:
    """(major, minor, patch) of "v2.3.4", "1.6.20~ds1", "1.7", "2.3.4+unknown"."""
    found = _VERSION.match(text.strip())
    if not found:
        return None
    return int(found.group(1)), int(found.group(2)), int(found.group(3) or 0)


def behaviour_of(version: str) -> tuple[Behaviour, str] | None:
    """The behaviour a version is judged by, and a note when recover has not seen that version
    (the nearest behaviour it has seen); None: not a containerd 1.x/2.x version."""
    parsed = parse_version(version)
    if parsed is None or parsed[0] not in (1, 2) or parsed < (1, 1, 0):
        return None
    major, minor, _ = parsed
    behaviour: Behaviour = "2.x" if major == 2 else "1.7" if minor >= 7 else "1.6"
    seen = parse_version(SEEN_ON[behaviour])
    note = ""
    if (major, minor) != seen[:2]:
        note = (f"containerd {version} was not seen restoring: judged as {SEEN_ON[behaviour]}, the nearest "
                f"release recover was checked against")
    return behaviour, note


EVERY_VERSION = "all"  # --containerd-version all: judge each known behaviour, as when it cannot be told


def from_flag(version: str, source: Source = "flag") -> DaemonVersion | str:
    """--containerd-version (or its variable, source "environment"); a message when it names no
    containerd 1.x/2.x."""
    given = "--containerd-version" if source == "flag" else f"${ENV_VERSION}"
    if version == EVERY_VERSION:
        return DaemonVersion(None, BEHAVIOURS, source, note=f"{given} all: each known behaviour is "
                             "judged (1.6, 1.7, 2.x), the worst outcome leading")
    judged = behaviour_of(version)
    if judged is None:
        return (f"{given} {version}: not a containerd 1.x or 2.x version (such as 1.6.20, 1.7.34, 2.3.4), "
                f"nor `{EVERY_VERSION}`")
    behaviour, note = judged
    return DaemonVersion(version.lstrip("v"), (behaviour,), source, note=note or f"given with {given}")


def binary_version(path: str) -> tuple[str | None, str]:
    """The containerd version in a binary (never run): the -X version its build recorded, its
    module's version, else the default of containerd's version package, which a distribution's
    own -X (such as Debian's "1.6.20~ds1") leaves in place.  (version, why not)."""
    binary = read_go_binary(path)
    if not isinstance(binary, GoBinary):
        return None, binary.problem
    if binary.main_package is None:  # a Go before 1.18 records no package we read: its name says it
        if os.path.basename(path) != "containerd":
            return None, "a Go binary of an unknown package, not named containerd"
    elif not binary.main_package.endswith("/cmd/containerd"):
        return None, f"a Go binary of {binary.main_package}, not containerd"
    if (given := ldflags_value(binary, "Version")) is not None:
        return given.lstrip("v"), ""
    if binary.main_version and binary.main_version != "(devel)":
        return binary.main_version.lstrip("v"), ""
    literals = search_rodata(path, _DEFAULT_LITERAL, b"+unknown")
    if literals:
        return literals[0].decode("ascii").removesuffix("+unknown"), ""
    return None, "it records no version"


def unit_exec_start(unit: str, resolve: Callable[[str], str]) -> str | None:
    """The program a systemd unit's ExecStart= runs (its last ExecStart, drop-ins applied in
    systemd's order), as a path to open (through `resolve`: inside an image)."""
    command = None
    for unit_dir in UNIT_DIRS:
        path = resolve(os.path.join(unit_dir, unit))
        if os.path.isfile(path):
            command = _exec_start(path, command)
            break
    dropins = sorted({name for d in UNIT_DIRS for name in _listing(resolve(os.path.join(d, unit + ".d")))
                      if name.endswith(".conf")})
    for name in dropins:
        for unit_dir in UNIT_DIRS:  # the first dir that has it wins, as systemd's
            path = resolve(os.path.join(unit_dir, unit + ".d", name))
            if os.path.isfile(path):
                command = _exec_start(path, command)
                break
    if not command:
        return None
    program = command.lstrip("@-:+!")
    if "/" not in program:
        return _on_path(program, resolve)
    return resolve(program)


def _listing(path: str) -> list[str]:
    """A dir's names; none where it is not there or cannot be read (systemd, as root, may read it)."""
    try:
        return os.listdir(path)
    except OSError:
        return []


def _exec_start(path: str, command: str | None) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read(1 << 16)
    except OSError:
        return command
    for line in text.replace("\\\n", " ").splitlines():
        key, eq, value = line.strip().partition("=")
        if eq and key.strip() == "ExecStart":
            try:
                words = shlex.split(value.strip())
            except ValueError:
                words = value.split()
            command = words[0] if words else None  # an empty ExecStart= resets the list
    return command


def _on_path(program: str, resolve: Callable[[str], str]) -> str | None:
    for directory in SYSTEMD_PATH:
        path = resolve(os.path.join(directory, program))
        if os.path.isfile(path):
            return path
    return None


def judge_version(flag: str | None, resolve: Callable[[str], str] | None, unit: str | None,
                  bundles_hold_bootstrap: Callable[[], bool], flag_source: Source = "flag") -> DaemonVersion:
    """The containerd that will start (module doc).  `resolve` maps a host path to the path to
    open (inside --image-root); `bundles_hold_bootstrap` says whether any task bundle holds a
    bootstrap.json (asked only when no binary tells).  `resolve` None: no binary here is the root's
    (beside a captured proc dir, this host's binaries are not the captured host's)."""
    if flag is not None:
        judged = from_flag(flag, flag_source)
        assert isinstance(judged, DaemonVersion), "the CLI checks the flag first"
        return judged
    tried = [] if resolve is not None else ["no binary read: this host's are not the captured host's"]
    for candidate in _candidates(unit, resolve) if resolve is not None else ():
        version, problem = binary_version(candidate)
        judged = behaviour_of(version) if version is not None else None
        if judged is not None:
            behaviour, note = judged
            return DaemonVersion(version, (behaviour,), "binary", candidate,
                                 note or f"read from {candidate} (the binary that will start)")
        tried.append(f"{candidate}: {problem or f'its version {version!r} is no containerd 1.x or 2.x version'}")
    if bundles_hold_bootstrap():
        return DaemonVersion(None, ("2.x",), "bundles", note="no binary tells the version" + _tried(tried)
                             + "; the bundles hold bootstrap.json, which only containerd 2.x writes")
    return DaemonVersion(None, BEHAVIOURS, "unknown", note="the version cannot be told" + _tried(tried)
                         + ": each known behaviour is judged (1.6, 1.7, 2.x), the worst outcome leading; "
                           "--containerd-version says which")


def _candidates(unit: str | None, resolve: Callable[[str], str]) -> Iterable[str]:
    """The binaries that may start: the unit's program, containerd.service's, `containerd` on PATH."""
    seen = set()
    for name in dict.fromkeys(u for u in (unit, UNIT) if u):
        program = unit_exec_start(name, resolve)
        if program is not None and program not in seen:
            seen.add(program)
            yield program
    program = _on_path("containerd", resolve)
    if program is not None and program not in seen:
        yield program


def _tried(tried: list[str]) -> str:
    return f" ({'; '.join(tried)})" if tried else " (no containerd binary found)"
