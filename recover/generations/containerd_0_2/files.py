"""The containerd 0.2.x on-disk layout: file names, and how each file is parsed.

Every parser takes the facts of one file (`FileFact`, read by root.py) and returns a value plus
findings; none of them raises on bad input.  Each file is read two ways:

* how recover reads it (lenient where the meaning is clear, with a finding), and
* how containerd 0.2.9 reads it (Go's `strconv` and `encoding/json`, byte for byte), because
  what the daemon will do on restart follows from what it can parse, not from what is true.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal, Optional

import msgspec
import orjson

from ...fsread import FileFact, content_findings, file_findings, show_bytes
from ...rules import Finding, finding
from ...value import Value

STATE_FILE = "state.json"
PROCESS_FILE = "process.json"
PID_FILE = "pid"
PID_TEMP_FILE = ".pid"  # runc writes `.pid` and renames it to `pid`
STARTTIME_FILE = "starttime"
EXIT_STATUS_FILE = "exitStatus"
EXIT_FIFO = "exit"
CONTROL_FIFO = "control"
EVENTS_LOG = "events.log"
RUNTIME_LOG = "log.json"  # runc --log-format json: one object a line, says why a start failed
INIT_PROCESS = "init"
PROCESS_FILES = (PROCESS_FILE, PID_FILE, STARTTIME_FILE, EXIT_STATUS_FILE)

UINT32_MAX = (1 << 32) - 1
UINT64_MAX = (1 << 64) - 1  # start ticks are an unsigned long long in the kernel
MAX_EXIT_STATUS = 255  # what a process can exit with (code, or 128+signal): anything above is no status
PID_MAX_LIMIT = 1 << 22  # the kernel's ceiling for /proc/sys/kernel/pid_max
# What 0.2.4-0.2.8 wrote on restore: fmt.Sprintf("%u", uint32(255)) is not a Go verb.
_DAEMON_FORMAT_BUG = re.compile(rb"%!u\(uint32=(\d+)\)")
# Decimal bytes are told by bytes.isdigit(): ASCII digits only, at least one ([0-9]+), in C
_SIGNS = (b"+", b"-")

GoReadKind = Literal["ok", "missing", "error", "blocks", "follows-link", "denied"]


def go_read(fact: FileFact) -> GoReadKind:
    """What containerd's ioutil.ReadFile would get from this name.

    A FIFO blocks the daemon forever; a symlink is followed (recover does not follow it, so the
    outcome is unknown); a file over 1 MiB is read whole by Go (its content is then unparseable
    for every small file of the layout, which is what "error" means to the callers).
    """
    if fact.problem == "denied":
        return "denied"
    if fact.kind == "file":
        return "ok" if fact.data is not None else ("missing" if fact.problem == "vanished" else "error")
    if fact.kind == "missing":
        return "missing"
    if fact.kind == "fifo":
        return "blocks"
    if fact.kind == "symlink":
        return "follows-link"
    return "error"


# --- small decimal files -------------------------------------------------------------------

class PidFile(Value):
    value: int | None  # what recover reads (surrounding white space tolerated, with a finding)
    containerd: int | None  # strconv.Atoi, or None when containerd cannot load the process
    containerd_read: GoReadKind
    mtime_ns: int | None
    findings: tuple[Finding, ...]


_MAX_DIGITS = 25  # longer than any int64 or uint64: rejected before int() (which caps at 4300 digits)


def go_atoi(data: bytes) -> int | None:
    """strconv.Atoi: optional sign, ASCII digits, nothing else (no white space), int64 range."""
    if len(data) > _MAX_DIGITS or not (data[1:] if data[:1] in _SIGNS else data).isdigit():
        return None
    n = int(data)
    return n if -(1 << 63) <= n < (1 << 63) else None


def go_parse_uint32(data: bytes) -> int | None:
    """strconv.ParseUint(s, 10, 32): ASCII digits only, no sign, at most 2^32-1."""
    if len(data) > _MAX_DIGITS or not data.isdigit():
        return None
    n = int(data)
    return n if n <= UINT32_MAX else None


def _lenient_decimal(data: bytes) -> int | None:
    stripped = data.strip(b" \t\r\n")
    return int(stripped) if len(stripped) <= _MAX_DIGITS and stripped.isdigit() else None


_PID_DIGITS = len(str(PID_MAX_LIMIT))


def parse_pid(fact: FileFact) -> PidFile:
    data = fact.data
    # the common case first: bare digits, a pid both read alike, nothing to say (`data` is set
    # only for a regular file read whole)
    if data is not None and len(data) <= _PID_DIGITS and data.isdigit() and 0 < (pid := int(data)) <= PID_MAX_LIMIT:
        return PidFile(pid, pid, "ok", fact.mtime_ns, ())
    return read_pid_in_full(fact)


def read_pid_in_full(fact: FileFact) -> PidFile:
    """parse_pid for every case (tests prove both agree where parse_pid takes its shortcut)."""
    data = fact.data
    read = go_read(fact)
    found = file_findings(fact, required=False)
    if fact.kind == "missing":
        found.append(finding("F030", f"{fact.name} is missing", fact.rel))
    value = containerd = None
    if data is not None:
        containerd = go_atoi(data)
        if containerd is not None and 0 < containerd <= PID_MAX_LIMIT and data.isdigit():
            value = containerd
        elif containerd is not None and 0 < containerd <= PID_MAX_LIMIT and data[:1] == b"+":
            value = containerd  # Go's Atoi takes the sign: containerd loads this pid too
            found.append(finding("F044", f"{fact.name} holds {show_bytes(data)}: read as pid {value}, as containerd "
                                 "reads it (runc writes bare digits)", fact.rel))
        elif (lenient := _lenient_decimal(data)) is not None and 0 < lenient <= PID_MAX_LIMIT:
            value = lenient
            found.append(finding("F032", f"{fact.name} holds {show_bytes(data)}: white space around the pid", fact.rel))
        else:
            found.extend(f for f in content_findings(fact) if f.code != "F002")
            found.append(finding("F031", f"{fact.name} holds {show_bytes(data)}, not a pid", fact.rel))
    return PidFile(value, containerd, read, fact.mtime_ns, tuple(found))


class StartTimeFile(Value):
    value: int | None  # recorded start ticks as recover reads them
    containerd_raw: bytes  # what containerd compares byte for byte ("" = not recorded: assumed same)
    containerd_read: GoReadKind
    findings: tuple[Finding, ...]


def parse_starttime(fact: FileFact) -> StartTimeFile:
    raw = fact.data
    # the common case first: bare digits of a regular file read whole, nothing to say
    if raw and len(raw) <= _MAX_DIGITS and raw.isdigit() and (ticks := int(raw)) <= UINT64_MAX:
        return StartTimeFile(ticks, raw, "ok", ())
    return read_starttime_in_full(fact)


def read_starttime_in_full(fact: FileFact) -> StartTimeFile:
    """parse_starttime for every case (tests prove both agree where it takes its shortcut)."""
    raw = fact.data
    read = go_read(fact)
    found = file_findings(fact, required=False)
    if fact.kind == "missing":
        found.append(finding("F033", f"{fact.name} is missing", fact.rel))
    value = None
    raw = raw or b""
    if raw:
        if len(raw) <= _MAX_DIGITS and raw.isdigit() and (ticks := int(raw)) <= UINT64_MAX:
            value = ticks
        else:
            lenient = _lenient_decimal(raw)
            value = lenient if lenient is not None and lenient <= UINT64_MAX else None
            found.extend(f for f in content_findings(fact) if f.code != "F002")
            found.append(finding("F034", f"{fact.name} holds {show_bytes(raw)}", fact.rel))
    return StartTimeFile(value, raw, read, tuple(found))


ExitSource = Literal["exitStatus", "daemon-format-bug"]


class ExitStatusFile(Value):
    value: int | None  # the exit status as recover reads it: only one a process can have (0-255)
    source: ExitSource | None
    # containerd's view: "valid" (ParseUint succeeds), "not-exited" (no file or empty),
    # "invalid" (present, unparseable or unreadable), "blocks" (a FIFO: ReadFile never returns),
    # "denied" (recover may not read it; containerd can)
    containerd: Literal["valid", "not-exited", "invalid", "blocks", "denied"]
    mtime_ns: int | None
    findings: tuple[Finding, ...]
    containerd_status: int | None = None  # what containerd reports when "valid" (256 included)


_NO_EXIT_STATUS = ExitStatusFile(None, None, "not-exited", None, ())  # no file: not exited, nothing to say


def parse_exit_status(fact: FileFact) -> ExitStatusFile:
    if fact.kind == "missing":  # a process that has not exited (most of them)
        return _NO_EXIT_STATUS
    data = fact.data
    # then the common case of those that have: the bare digits of a status, nothing to say
    if data and len(data) <= _MAX_DIGITS and data.isdigit() and (status := int(data)) <= MAX_EXIT_STATUS:
        return ExitStatusFile(status, "exitStatus", "valid", fact.mtime_ns, (), status)
    return read_exit_status_in_full(fact)


def read_exit_status_in_full(fact: FileFact) -> ExitStatusFile:
    """parse_exit_status for every case (tests prove both agree where it takes its shortcuts)."""
    read = go_read(fact)
    found = file_findings(fact, required=False)
    value: int | None = None
    reported: int | None = None  # ParseUint's result, when it succeeds
    source: ExitSource | None = None
    if read == "missing":
        state = "not-exited"
    elif read in ("blocks", "denied"):
        state = read
    elif fact.data is None:
        state = "invalid"
    elif not fact.data:
        state = "not-exited"
    else:
        data = fact.data
        if (strict := go_parse_uint32(data)) is not None:
            state, value, source, reported = "valid", strict, "exitStatus", strict
        elif (bug := _DAEMON_FORMAT_BUG.fullmatch(data.strip()) if len(data) < 64 else None) \
                and int(bug.group(1)) <= UINT32_MAX:
            state, value, source = "invalid", int(bug.group(1)), "daemon-format-bug"
            found.append(finding(
                "F036", f"{fact.name} holds {show_bytes(data)}: status {value} written by the daemon's "
                "own restore (containerd 0.2.4-0.2.8), not by the process", fact.rel))
        elif (lenient := _lenient_decimal(data)) is not None and lenient <= UINT32_MAX:
            state, value, source = "invalid", lenient, "exitStatus"
            found.append(finding("F037", f"{fact.name} holds {show_bytes(data)}", fact.rel))
        else:
            state = "invalid"
            found.extend(content_findings(fact))
            found.append(finding("F035", f"{fact.name} holds {show_bytes(data)}, not an exit status", fact.rel))
        if value is not None and value > MAX_EXIT_STATUS:
            found.append(finding(
                "F039", f"{fact.name} holds {value}: no process exits with a status above {MAX_EXIT_STATUS}, so "
                "the real status is lost" + (f" (containerd would report {value})" if state == "valid" else ""),
                fact.rel))
            value = source = None
    return ExitStatusFile(value, source, state, fact.mtime_ns, tuple(found), reported)


# --- runc's log ----------------------------------------------------------------------------

_ERROR_LEVELS = ("error", "fatal", "panic")


def last_runtime_error(fact: FileFact) -> str | None:
    """The last error message runc wrote to log.json (one JSON object a line, {"level","msg",
    "time"}), unescaped: whoever shows it escapes it.  None when the file says no error."""
    for line in reversed((fact.data or b"").splitlines()):
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:  # a torn line, NUL blocks, not UTF-8: not an entry
            continue
        if isinstance(entry, dict) and entry.get("level") in _ERROR_LEVELS and isinstance(entry.get("msg"), str):
            return entry["msg"]
    return None


# --- JSON documents ------------------------------------------------------------------------

# Go types of the fields containerd 0.2.9 decodes.  A value of the wrong type makes
# encoding/json fail, and containerd then deletes the whole container dir (SPEC §2 rule 1).
# Each type checks a decoded value the way encoding/json would: null decodes into anything,
# unknown object keys are ignored, keys match case-insensitively.

# Each type also says itself as a msgspec type (`typed`), so that the common case (a document
# whose every key names a field exactly) is checked in C; the Python `error` stays the reference,
# says what is wrong, and decides every other case (tests/test_layout.py proves both agree).

class _Str:
    def error(self, value: Any, where: str) -> str | None:
        return None if value is None or isinstance(value, str) else f"{where}: want a string"

    def typed(self) -> Any:
        return str


class _Bool:
    def error(self, value: Any, where: str) -> str | None:
        return None if value is None or isinstance(value, bool) else f"{where}: want true or false"

    def typed(self) -> Any:
        return bool


_INT64_MAX = (1 << 63) - 1


class _Int(Value):
    low: int
    high: int

    def error(self, value: Any, where: str) -> str | None:
        if value is None or (isinstance(value, int) and not isinstance(value, bool) and self.low <= value <= self.high):
            return None
        return f"{where}: want an integer in [{self.low}, {self.high}]"

    def typed(self) -> Any:
        # msgspec bounds only fit int64: the uint64 ceiling holds for what orjson decodes (it
        # turns a larger integer into a float), which is all the typed check is given
        if self.high > _INT64_MAX:
            return Annotated[int, msgspec.Meta(ge=self.low)]
        return Annotated[int, msgspec.Meta(ge=self.low, le=self.high)]


class _List(Value):
    item: Any

    def typed(self) -> Any:
        return list[Optional[self.item.typed()]]  # null decodes into any element

    def error(self, value: Any, where: str) -> str | None:
        if value is None:
            return None
        if not isinstance(value, list):
            return f"{where}: want a list"
        if isinstance(self.item, _Str) and all(isinstance(x, str) for x in value):
            return None  # the common case, without a call per element
        for i, item in enumerate(value):
            if err := self.item.error(item, f"{where}[{i}]"):
                return err
        return None


class _Struct:
    def __init__(self, fields: dict[str, Any]):
        self.fields = fields
        self._by_lower = {k.lower(): (k, t) for k, t in fields.items()}
        self._typed: Any = None

    def typed(self) -> Any:
        """As a msgspec Struct that refuses any key not named exactly: a document it accepts has
        no key Go's case-insensitive matching could map to a field a typed decoder missed."""
        if self._typed is None:
            self._typed = msgspec.defstruct("GoStruct", [(k, Optional[t.typed()], None) for k, t in self.fields.items()],
                                            forbid_unknown_fields=True)
        return self._typed

    def error(self, value: Any, where: str) -> str | None:
        if value is None:
            return None
        if not isinstance(value, dict):
            return f"{where}: want an object"
        fields = self.fields
        for key, item in value.items():
            kind = fields.get(key)
            if kind is None:
                known = self._by_lower.get(key.lower())
                if known is None:
                    continue  # unknown fields are ignored, as Go does
                key, kind = known
            # the common cases inline: this runs for every field of every process.json
            if item is None or (kind is _STR and type(item) is str) or (kind is _BOOL and type(item) is bool):
                continue
            if err := kind.error(item, f"{where}.{key}" if where else key):
                return err
        return None


_STR, _BOOL = _Str(), _Bool()
_U32 = _Int(0, UINT32_MAX)
_U64 = _UINT = _Int(0, (1 << 64) - 1)  # Go's uint is 64 bits on every platform docker ran on
_INT = _Int(-(1 << 63), (1 << 63) - 1)
_STRINGS = _List(_STR)
STATE_SCHEMA = _Struct({
    "bundle": _STR, "labels": _STRINGS, "stdin": _STR, "stdout": _STR, "stderr": _STR,
    "runtime": _STR, "runtimeArgs": _STRINGS, "shim": _STR, "noPivotRoot": _BOOL,
})
PROCESS_SCHEMA = _Struct({
    "terminal": _BOOL,
    "consoleSize": _Struct({"height": _UINT, "width": _UINT}),
    "user": _Struct({"uid": _U32, "gid": _U32, "additionalGids": _List(_U32), "username": _STR}),
    "args": _STRINGS, "env": _STRINGS, "cwd": _STR,
    "capabilities": _Struct({k: _STRINGS for k in ("bounding", "effective", "inheritable", "permitted", "ambient")}),
    "rlimits": _List(_Struct({"type": _STR, "hard": _U64, "soft": _U64})),
    "noNewPrivileges": _BOOL, "apparmorProfile": _STR, "selinuxLabel": _STR,
    "exec": _BOOL, "containerdStdin": _STR, "containerdStdout": _STR, "containerdStderr": _STR,
    "runtimeArgs": _STRINGS, "noPivotRoot": _BOOL, "checkpoint": _STR,
    "rootUID": _INT, "rootGID": _INT,
})


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # Python's json takes NaN and Infinity; Go does not


_DECODER = json.JSONDecoder(parse_constant=_no_constants)


def decode_first_value(data: bytes) -> tuple[Any, int, str]:
    """Decode the first JSON value as Go's json.Decoder does: (value, end, text).  Raises
    ValueError or RecursionError when there is none."""
    try:
        value = orjson.loads(data)  # the common case: exactly one value, fast
        return value, len(data), ""
    except orjson.JSONDecodeError:
        pass
    text = data.decode("utf-8", "replace")  # Go replaces invalid UTF-8 the same way
    start = len(text) - len(text.lstrip(" \t\r\n"))
    value, end = _DECODER.raw_decode(text, start)
    return value, end, text


class JsonDoc(Value):
    value: dict[str, Any] | None  # the decoded object (all fields kept), when recover could decode it
    containerd_decodes: bool  # json.NewDecoder(f).Decode(&s) succeeds in containerd 0.2.9
    containerd_read: GoReadKind
    findings: tuple[Finding, ...]


def parse_json_doc(fact: FileFact, schema: _Struct, shape_code: str) -> JsonDoc:
    """Decode state.json or process.json as recover and as containerd would.

    Go's Decoder reads the FIRST JSON value and ignores what follows, so an object followed by
    NUL blocks from a power loss still loads in containerd; recover decodes it the same way and
    reports the trailing bytes.
    """
    data = fact.data
    if data:  # the common case first: one JSON object, decoded and checked in C
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
        else:
            # orjson refuses NUL bytes, bytes that are not UTF-8, trailing bytes and an empty file:
            # a document it decodes has no finding about its content
            if type(value) is dict and _checked_in_c(schema, value):
                return JsonDoc(value, True, "ok", ())
    return read_json_doc_in_full(fact, schema, shape_code)


def read_json_doc_in_full(fact: FileFact, schema: _Struct, shape_code: str) -> JsonDoc:
    """parse_json_doc for every case (tests prove both agree where it takes its shortcut)."""
    data = fact.data
    read = go_read(fact)
    found = file_findings(fact, required=True)
    if data is None:
        return JsonDoc(None, False, read, tuple(found))
    found.extend(content_findings(fact))
    try:
        value, end, text = decode_first_value(data)
    except (ValueError, RecursionError) as e:
        if data:
            found.append(finding("F003", f"{fact.name} is not valid JSON ({_short(e)})", fact.rel))
        return JsonDoc(None, False, read, tuple(found))
    if text[end:].strip(" \t\r\n\0"):
        found.append(finding("F003", f"{fact.name} has {len(text) - end} bytes after the JSON value "
                             "(containerd ignores them)", fact.rel))
    if value is not None and not isinstance(value, dict):
        found.append(finding(shape_code, f"{fact.name} holds a JSON {type(value).__name__}, not an object", fact.rel))
        return JsonDoc(None, False, read, tuple(found))
    error = type_error(schema, value, decoded_by_orjson=not text)
    if error:
        caps = value.get("capabilities") if value else None
        if schema is PROCESS_SCHEMA and isinstance(caps, list):
            found.append(finding("F022", f"{fact.name}: capabilities is a list (containerd 0.2.8 or "
                                 "older wrote it); containerd 0.2.9 cannot decode it", fact.rel))
        else:
            found.append(finding(shape_code, f"{fact.name}: {error}", fact.rel))
    return JsonDoc(value or {}, error is None and read == "ok", read, tuple(found))


def type_error(schema: _Struct, value: Any, *, decoded_by_orjson: bool) -> str | None:
    """`schema.error(value, "")`: what makes Go's decoder fail, or None.  A document orjson
    decoded is first checked by msgspec, in C: accepted (every key exact, every value of its
    type), it is valid; refused (a bad value, or a key that is unknown or in another case), and
    for the fallback decoder's documents, the Python check decides and says why."""
    if decoded_by_orjson and type(value) is dict and _checked_in_c(schema, value):
        return None
    return schema.error(value, "")


def _checked_in_c(schema: _Struct, value: dict) -> bool:
    """Whether msgspec accepts the object as the schema's typed struct: then Go decodes it too."""
    try:
        msgspec.convert(value, schema.typed())
        return True
    except msgspec.ValidationError:
        return False


def _short(e: Exception) -> str:
    return str(e).split(":")[0] if isinstance(e, ValueError) else type(e).__name__
