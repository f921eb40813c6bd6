"""explain: everything recover knows about one container or process, with the evidence.

Nothing here decides anything new: the files come from root.py, the facts from host.py, the
verdict from walking judge.VERDICT_CHECKS in order (the same functions the judge runs), the
prediction from judge.predict_process and the judge's R findings, the repair from
repair.plan_repair.  This module gathers them, says in words what each check looked at, adds the
logs, the events and a timeline, and renders them.

Safety is the scan's: dirs are opened O_NOFOLLOW relative to their parent, names come from
os.scandir on those fds, only regular files are opened (root.read_regular, at most 1 MiB), and
nothing is ever written.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import re
import stat
import time
from collections.abc import Callable
from typing import Any, BinaryIO

import orjson

from .fsread import MAX_FILE_BYTES, OPEN_DIR, dir_below, json_safe, json_text, kind_of, printable, read_regular
from .host import HostView, ProcessFacts, read_stat
from .judge import ContainerJudgement, ProcessJudgement
from .generations.containerd_0_2 import files as layout
from .generations.containerd_0_2.predict import predict_process
from .records import ContainerRecord, ProcessRecord
from .repair import Options, own_procfs, plan_repair
from .scan import Scan, SelectionError, select_containers
from .verdicts import (PID_FILE_MTIME_SLACK_S, PREVIOUS_BOOT_MARGIN_S, VERDICT_CHECKS, HostFacts, identity_of,
                       lives_under_its_shim, previous_boot_evidence)

SCHEMA = "recover.explain/1"
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
EVENTS_TAIL = MAX_FILE_BYTES  # events.log can grow: read its last MiB
LOG_FILES = ("log.json", "shim-log.json")


class ExplainError(Exception):
    """The target does not name exactly one container (or process)."""


# --- small helpers -------------------------------------------------------------------------

def iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    try:
        return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).isoformat(timespec="milliseconds")
    except (OverflowError, OSError, ValueError):
        return None


_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)")


def rfc3339(value: object) -> float | None:
    """An RFC 3339 time with Go's nanoseconds, as epoch seconds."""
    if not isinstance(value, str):
        return None
    m = _RFC3339.fullmatch(value)
    if not m:
        return None
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    try:
        whole = datetime.datetime.fromisoformat(m.group(1) + zone).timestamp()
    except (ValueError, OverflowError):
        return None
    return whole + float("0" + (m.group(2) or ".0"))


def safe_text(s: str) -> str:
    """A string JSON can hold: exact, except bytes that were not UTF-8 (\\xNN) and lone
    surrogates from a \\uD800-style escape (\\uXXXX), which UTF-8 cannot carry."""
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        pass
    out = []
    for ch in s:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def plain(value: Any) -> Any:
    """A decoded JSON value from an untrusted file, made safe for the output document."""
    if isinstance(value, str):
        return safe_text(value)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if -(1 << 63) <= value < (1 << 64) else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    try:
        return safe_text(json.dumps(value, ensure_ascii=False, default=str))
    except (ValueError, RecursionError, TypeError):
        return safe_text(repr(value))


def _or(value: object, missing: str, form: str = "{}") -> str:
    """A value in its sentence, or words for its absence: text output never says None."""
    return missing if value is None else form.format(value)


def Q(text: str) -> str:
    """A name in quotes, escaped once (printable's escapes, not repr's on top of them)."""
    return f"'{printable(text)}'"


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


# --- logs and events -----------------------------------------------------------------------

_BLANK = " \t\r\n\0"


def parse_log_objects(data: bytes) -> list[dict]:
    """JSON objects written back to back (shim-log.json has no newlines; log.json one a line).

    The shim does not escape its message, so an object can be broken: what decodes is kept, and
    each stretch that does not is kept raw (escaped where it is not text), so that nothing is lost
    or hidden.  NUL bytes (a power loss) between objects are skipped.
    """
    text = data.decode("utf-8", "surrogateescape")
    decoder = json.JSONDecoder()
    out: list[dict] = []
    i, raw_start = 0, None

    def flush_raw(end: int) -> None:
        nonlocal raw_start
        if raw_start is not None:
            raw = text[raw_start:end].strip(_BLANK)
            if raw:
                out.append({"raw": safe_text(raw)})
            raw_start = None

    while i < len(text):
        if text[i] in _BLANK and raw_start is None:
            i += 1
            continue
        try:
            value, end = decoder.raw_decode(text, i)
        except (ValueError, RecursionError):
            value, end = None, -1
        if isinstance(value, dict):
            flush_raw(i)
            first = [k for k in ("level", "msg", "time") if k in value]
            rest = [k for k in value if k not in first]
            out.append({safe_text(str(k)): plain(value[k]) for k in first + rest} or {"raw": safe_text(text[i:end])})
            i = end
            continue
        if raw_start is None:
            raw_start = i
        nxt = text.find("{", i + 1)
        i = len(text) if nxt < 0 else nxt
    flush_raw(len(text))
    return out


def read_events(root_fd: int, cid: str) -> tuple[list[dict], str | None]:
    """This container's lines of events.log (its last MiB), and a note when not all was read."""
    try:
        st = os.stat(layout.EVENTS_LOG, dir_fd=root_fd, follow_symlinks=False)
    except OSError:
        return [], None
    if not stat.S_ISREG(st.st_mode):
        return [], "events.log is not a regular file: not opened"
    try:
        fd = os.open(layout.EVENTS_LOG, _FILE_FLAGS, dir_fd=root_fd)
    except OSError as e:
        return [], f"events.log cannot be opened: {e.strerror}"
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return [], "events.log is not a regular file: not opened"
        start = max(0, st.st_size - EVENTS_TAIL)
        data = os.pread(fd, EVENTS_TAIL, start)
    except OSError as e:
        return [], f"events.log cannot be read: {e.strerror}"
    finally:
        os.close(fd)
    lines = data.split(b"\n")
    note = None
    if start > 0:
        lines = lines[1:]  # the first line was cut by the tail
        note = f"events.log is {st.st_size} bytes: only its last {EVENTS_TAIL} were read"
    events = []
    for line in lines:
        if not line.strip(b" \t\r\0"):
            continue
        try:
            e = json.loads(line.decode("utf-8", "surrogateescape"))
        except (ValueError, RecursionError):
            continue
        if isinstance(e, dict) and e.get("id") == cid:
            events.append({k: plain(e[k]) for k in ("timestamp", "type", "pid", "status") if k in e})
    return events, note


# --- files ---------------------------------------------------------------------------------

def list_dir(dir_fd: int) -> list[dict]:
    """Every entry of a dir: name, type, size, mtime.  Nothing is followed; nothing is opened."""
    out = []
    try:
        entries = sorted(os.scandir(dir_fd), key=lambda e: e.name)
    except OSError as e:
        return [{"name": ".", "type": "unlistable", "error": e.strerror}]
    for entry in entries:
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            out.append({"name": entry.name, "type": "vanished"})
            continue
        item: dict[str, Any] = {"name": entry.name, "type": kind_of(st.st_mode), "size": st.st_size,
                                "mtime": st.st_mtime}
        if item["type"] == "symlink":
            try:
                item["target"] = os.readlink(entry.name, dir_fd=dir_fd)
            except OSError:
                item["target"] = None
        out.append(item)
    return out


def read_log(dir_fd: int, entries: list[dict], name: str, rel: str) -> tuple[list[dict], str | None]:
    """A log file's entries, or why it was not read.  Only a regular file is opened."""
    entry = next((e for e in entries if e["name"] == name), None)
    if entry is None:
        return [], None
    if entry["type"] != "file":
        return [], f"a {entry['type']}, not a regular file: not opened"
    fact = read_regular(dir_fd, name, f"{rel}/{name}")
    if fact.data is None:
        return [], {"too-big": f"over {MAX_FILE_BYTES} bytes: not read"}.get(
            fact.problem or "", f"not read ({fact.problem or fact.kind}{': ' + fact.detail if fact.detail else ''})")
    return parse_log_objects(fact.data), None


def describe_process_files(p: ProcessRecord) -> dict[str, str]:
    """What each file of a process dir was read as (the findings say why where it was not)."""
    files = p.files
    spec = files.spec.value
    if spec is None:
        spec_text = "not decoded (see the findings)"
    else:
        caps = spec.get("capabilities")
        shape = ("a list (containerd 0.2.8 and older)" if isinstance(caps, list) else
                 f"an object ({', '.join(sorted(map(str, caps))) or 'empty'})" if isinstance(caps, dict)
                 else "absent" if caps is None else f"a {type(caps).__name__}")
        args = spec.get("args")
        spec_text = (f"args {_shown(args) if args is not None else '(none)'}, exec {_shown(spec.get('exec'))}, "
                     f"capabilities {shape}; containerd 0.2.9 "
                     f"{'decodes' if files.spec.containerd_decodes else 'cannot decode'} it")
    pid = (f"pid {p.pid}" if p.pid is not None else "no usable pid")
    if files.pid.containerd is None:
        pid += "; containerd cannot parse it (the process would be skipped)"
    elif files.pid.containerd != p.pid:
        pid += f"; containerd reads {files.pid.containerd}"
    start = (f"starttime {p.start} (clock ticks after boot)" if p.start is not None
             else "no start ticks recorded")
    es = files.exit_status
    if es.value is not None:
        exit_text = f"exitStatus {es.value} from " + ('"exitStatus"' if es.source == "exitStatus" else
                                                        "the daemon's %!u format bug")
        if es.containerd != "valid":
            exit_text += "; containerd cannot parse it"
    else:
        exit_text = {"not-exited": "no exit status: not exited, to containerd",
                     "valid": f"exitStatus {es.containerd_status}: no process exits with that; containerd reads it",
                     "invalid": "not an exit status (see the findings)",
                     "blocks": "a FIFO: containerd's read would block"}.get(es.containerd, es.containerd)
    return {layout.PROCESS_FILE: spec_text, layout.PID_FILE: pid, layout.STARTTIME_FILE: start,
            layout.EXIT_STATUS_FILE: exit_text}


def describe_process(p: ProcessRecord) -> dict[str, str]:
    """What each file of a process was read as: a 0.2 process dir's four files, or a runtime-v2
    process's pid file."""
    if p.start_source == "starttime" or hasattr(p.files, "spec"):
        return describe_process_files(p)
    pid = f"pid {p.pid}" if p.pid is not None else "no usable pid"
    start = (f"start tick {p.start} from runc's state" if p.start_source == "runc-state"
             else "no start ticks recorded (an exec): the pid file's mtime decides its identity")
    return {"pid file": f"{pid}; {start}"}


def _describe_state(record: ContainerRecord) -> str:
    state = record.files.state
    if state.value is None:
        return "not decoded (see the findings)"
    v = state.value
    return (f"bundle {_shown(v.get('bundle'))}, runtime {_shown(v.get('runtime'))}, shim {_shown(v.get('shim'))}; "
            f"containerd 0.2.9 {'decodes' if state.containerd_decodes else 'cannot decode'} it")


def _file_rows(entries: list[dict], parsed: dict[str, str], findings: list, prefix: str,
               expected: tuple[str, ...]) -> list[dict]:
    """Entries with what was parsed from each and the findings about it; expected names that are
    absent are listed too (type "missing"), since their absence is evidence."""
    rows = []
    present = {e["name"] for e in entries}
    for e in entries + [{"name": n, "type": "missing"} for n in expected if n not in present]:
        path = f"{prefix}/{printable(e['name'])}"
        row = {**e, "findings": [f"{f.code} {f.message}" for f in findings if f.path == path]}
        if e["name"] in parsed:
            row["parsed"] = parsed[e["name"]]
        rows.append(row)
    return rows


def _other_file_meaning(entry: dict, logs: dict[str, dict]) -> str | None:
    name, kind = entry["name"], entry["type"]
    if name in (layout.EXIT_FIFO, layout.CONTROL_FIFO):
        return "FIFO: never opened" if kind == "fifo" else f"should be a FIFO, is a {kind}"
    if name in logs:
        log = logs[name]
        if log.get("error"):
            return log["error"]
        n = len(log["entries"])
        raw = sum(1 for x in log["entries"] if "raw" in x)
        return f"{n} entr{'y' if n == 1 else 'ies'}" + (f", {raw} not decodable (shown raw)" if raw else "") if n else "empty"
    if name == layout.PID_TEMP_FILE:
        return "left over: the runtime died while writing the pid"
    if name.startswith(layout.RECOVER_TEMP_PREFIX):
        return "left over by an interrupted `recover repair`"
    if kind == "dir":
        return "a dir inside a process dir: containerd ignores it"
    return None


# --- evidence ------------------------------------------------------------------------------

def _why_exit(rec: ProcessRecord, facts: ProcessFacts, host: HostFacts, s: Scan) -> str:
    if not hasattr(rec.files, "exit_status"):  # runtime-v2: only CRI's checkpoint records an exit on disk
        if rec.exit_status is None:
            return "no exit recorded on disk (a runtime-v2 shim holds its processes' statuses in memory)"
        alive = " but the recorded process lives under its own shim" if lives_under_its_shim(rec, facts, host) else ""
        return f"{rec.exit_source} holds {rec.exit_status}{alive}"
    es = rec.files.exit_status
    if es.value is not None and lives_under_its_shim(rec, facts, host):
        return (f"exitStatus holds {es.value}, but the recorded process lives under its own shim: "
                "decided from the pid")
    if es.value is not None:
        return f"exitStatus holds {es.value} (from {es.source})"
    if es.containerd_status is not None:
        return f"exitStatus holds {es.containerd_status}, which no process exits with: decided from the pid"
    if es.containerd == "not-exited":
        return "file absent" if es.mtime_ns is None else "empty file"
    if es.containerd == "blocks":
        return "a FIFO stands there: never opened"
    return "present but not a status (see the findings)"


def _why_proc(rec: ProcessRecord, facts: ProcessFacts, host: HostFacts, s: Scan) -> str:
    if s.host is None:
        return "offline: /proc was not read"
    if not host.proc_read:
        return f"{s.host.proc_root} cannot be read"
    return f"{s.host.proc_root} was read" + (" (live procfs)" if host.live else " (a captured proc dir)")


def _why_pid(rec: ProcessRecord, facts: ProcessFacts, host: HostFacts, s: Scan) -> str:
    if facts.pid is None:
        shim = (f"its shim (pid {facts.shim_pid}) is {facts.shim_state} with {facts.shim_children} children"
                if facts.shim_pid else "no live shim for this process dir")
        return f"no usable pid file; {shim}"
    if facts.pid_source == "shim-child":
        return f"no usable pid file, but pid {facts.pid} is the only child of its shim (pid {facts.shim_pid})"
    return f"pid {facts.pid} from the pid file"


def _why_gone(rec: ProcessRecord, facts: ProcessFacts, host: HostFacts, s: Scan) -> str:
    if facts.stat is None:
        return f"/proc/{facts.pid}/stat does not exist" + (" (hidepid: may be hidden)" if host.hidepid else "")
    return f"/proc/{facts.pid}/stat exists (state {facts.stat.state}, comm {Q(facts.stat.comm)})"


def _why_boot(rec: ProcessRecord, facts: ProcessFacts, host: HostFacts, s: Scan) -> str:
    evidence = previous_boot_evidence(rec, host)
    if evidence is not None:
        return evidence
    if host.root_on_tmpfs:
        return "the root is on a tmpfs: it cannot have outlived a boot"
    if host.root_on_tmpfs is None:
        return "the root's filesystem is unknown: a previous boot is never concluded"
    if host.btime is None:
        return "the boot time is unknown"
    if rec.pid_mtime_ns is None:
        return "the pid file has no mtime (not a file read from the root)"
    age = host.btime - rec.pid_mtime_ns / 1e9
    if age <= 0:
        return f"the pid file was written {-age:.0f} s after this boot (btime {host.btime})"
    return (f"the pid file was written {age:.0f} s before this boot, within the {PREVIOUS_BOOT_MARGIN_S} s "
            "margin for a stepped clock")


def _why_thread(rec: ProcessRecord, facts: ProcessFacts, host: HostFacts, s: Scan) -> str:
    if facts.tgid is None:
        return f"Tgid of {facts.pid} not read"
    if facts.tgid == facts.pid:
        return f"pid {facts.pid} leads its own thread group (Tgid {facts.tgid})"
    return f"pid {facts.pid} belongs to thread group {facts.tgid}"


def _why_identity(rec: ProcessRecord, facts: ProcessFacts, host: HostFacts, s: Scan) -> str:
    st = facts.stat
    observed = st.starttime if st else None
    recorded = rec.start
    if recorded is not None:
        return (f"start ticks: recorded {recorded}, observed {_or(observed, 'none')}: "
                f"{'same' if recorded == observed else 'differ'}")
    mtime_ns = rec.pid_mtime_ns if facts.pid_source == "pid-file" else None
    started = host.start_epoch(observed) if observed is not None else None
    if mtime_ns is None or started is None:
        return "no starttime recorded and no pid file mtime to compare with: identity assumed"
    late = started - mtime_ns / 1e9
    return (f"no starttime recorded; pid {facts.pid} started {iso(started)}, the pid file was written "
            f"{iso(mtime_ns / 1e9)}: started {abs(late):.1f} s {'after' if late > 0 else 'before'} it "
            f"({'more' if late > PID_FILE_MTIME_SLACK_S else 'not more'} than the {PID_FILE_MTIME_SLACK_S} s allowed)")


def _why_zombie(rec: ProcessRecord, facts: ProcessFacts, host: HostFacts, s: Scan) -> str:
    st = facts.stat
    return f"state {st.state}" if st else "no stat"


def _why_shim(rec: ProcessRecord, facts: ProcessFacts, host: HostFacts, s: Scan) -> str:
    parent = facts.parent
    if parent is None:
        return f"parent pid {facts.stat.ppid if facts.stat else '?'} cannot be read"
    is_or_not = "is" if facts.parent_is_shim else "is not"
    return f"parent pid {parent.pid} ({Q(parent.comm)}) {is_or_not} its shim"


def _why_orphan(rec: ProcessRecord, facts: ProcessFacts, host: HostFacts, s: Scan) -> str:
    return f"shim {facts.shim_state}" + (f" (pid {facts.shim_pid})" if facts.shim_pid else "")


# What each check of the judge looked at, in words (keyed by the check's name, so that a check
# added to the judge still shows up, with its verdict, even before it is described here).
_DESCRIBE: dict[str, Callable[[ProcessRecord, ProcessFacts, HostFacts, Scan], str]] = {
    "_exit_recorded": _why_exit, "_proc_unreadable": _why_proc, "_no_pid": _why_pid,
    "_pid_gone": _why_gone, "_previous_boot": _why_boot, "_thread": _why_thread,
    "_identity": _why_identity, "_zombie": _why_zombie, "_under_shim": _why_shim,
    "_orphaned": _why_orphan,
}


def verdict_steps(p: ProcessRecord, facts: ProcessFacts, host: HostFacts, s: Scan) -> list[dict]:
    """The judge's checks in its order: each one reached is run (the judge's own function) and
    said in words; the first that decides ends the walk, the rest are listed as not reached."""
    steps = []
    decided = False
    for title, check in VERDICT_CHECKS:
        if decided:
            steps.append({"check": title, "reached": False, "matched": False, "decided": None, "why": []})
            continue
        decision = check(p, facts, host)
        describe = _DESCRIBE.get(getattr(check, "__name__", ""))
        try:
            said = describe(p, facts, host, s) if describe else ""
        except Exception:  # a description must never hide the verdict
            said = ""
        why = [said] if said else []
        if decision is not None:
            why += [f"{f.code} {f.message}" for f in decision.findings]
            decided = True
        steps.append({"check": title, "reached": True, "matched": decision is not None,
                      "decided": decision.verdict if decision else None, "why": [safe_text(w) for w in why]})
    return steps


def _process_view(pid: int | None, view: HostView | None) -> dict | None:
    if pid is None or view is None:
        return None
    argv = view.cmdline(pid)
    cwd = view.cwd(pid)
    return {"argv": [json_text(a) for a in argv] if argv is not None else None,
            "cwd": json_text(cwd) if cwd is not None else None}


RESOURCE_LIST_MAX = 50  # open files and sockets shown per process (all are counted)


def _same_net_namespace(pid: int) -> bool | None:
    try:
        theirs, ours = os.stat(f"/proc/{pid}/ns/net"), os.stat("/proc/self/ns/net")
    except OSError:  # another user's process, without root: its namespace cannot be seen
        return None
    return (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)


def _socket_json(c: Any) -> dict:
    def address(a: Any) -> str | None:
        if not a:
            return None
        if isinstance(a, str):  # AF_UNIX: a path, or "" for an unnamed socket
            return json_text(a)
        return f"[{a.ip}]:{a.port}" if ":" in a.ip else f"{a.ip}:{a.port}"

    return {"fd": c.fd, "family": getattr(c.family, "name", str(c.family)), "type": getattr(c.type, "name", str(c.type)),
            "local": address(c.laddr), "remote": address(c.raddr), "status": c.status}


def process_resources(pid: int, start_ticks: int) -> dict:
    """What a live process of this host uses now, read with psutil: memory (rss), threads, CPU
    times, open files, sockets.  Each is None where it cannot be told, with the reason in
    `cannot_tell`: the process is gone or a zombie, another user's without root, or (sockets) in
    another network namespace, whose sockets this host's /proc/net does not list.  psutil reads
    /proc afresh and knows nothing of start ticks: if pid's start ticks are not `start_ticks`
    after the reads, they were another process's, and nothing is kept."""
    import psutil

    reads: dict[str, Callable[[Any], Any]] = {
        "rss_bytes": lambda pr: pr.memory_info().rss,
        "threads": lambda pr: pr.num_threads(),
        "cpu_user_s": lambda pr: pr.cpu_times().user,
        "cpu_system_s": lambda pr: pr.cpu_times().system,
        "open_files": lambda pr: sorted(({"fd": f.fd, "path": json_text(f.path)} for f in pr.open_files()),
                                        key=lambda f: f["fd"]),
        "sockets": lambda pr: sorted((_socket_json(c) for c in pr.net_connections(kind="all")),
                                     key=lambda c: (c["fd"], c["local"] or "")),
    }
    out: dict[str, Any] = dict.fromkeys(reads)
    cannot_tell: dict[str, str] = {}
    try:
        proc = psutil.Process(pid)
    except psutil.Error as e:
        return {**out, "cannot_tell": dict.fromkeys(reads, _psutil_reason(e))}
    same_net = _same_net_namespace(pid)
    with proc.oneshot():
        for key, read in reads.items():
            if key == "sockets" and not same_net:
                cannot_tell[key] = ("its network namespace cannot be read" if same_net is None
                                    else "another network namespace: this host's /proc/net does not list its sockets")
                continue
            try:
                out[key] = read(proc)
            except psutil.Error as e:
                cannot_tell[key] = _psutil_reason(e)
    after = read_stat("/proc", pid)
    if after is None or after.starttime != start_ticks:
        return {**dict.fromkeys(reads), "cannot_tell": dict.fromkeys(reads, "the process exited, or its pid was "
                                                                            "reused, while it was read")}
    for key in ("open_files", "sockets"):
        if out[key] is not None:
            out[f"{key}_count"] = len(out[key])
            out[key] = out[key][:RESOURCE_LIST_MAX]
    return {**out, "cannot_tell": cannot_tell}


def _psutil_reason(e: Exception) -> str:
    import psutil

    if isinstance(e, psutil.ZombieProcess):  # a NoSuchProcess: test it first
        return "a zombie"
    if isinstance(e, psutil.NoSuchProcess):
        return "the process is gone"
    if isinstance(e, psutil.AccessDenied):
        return "access denied (another user's process: run as root)"
    return str(e) or type(e).__name__


def evidence(p: ProcessRecord, facts: ProcessFacts, host: HostFacts, s: Scan) -> dict:
    view = s.host if host.proc_read else None
    st = facts.stat
    now = None
    if st is not None:
        started = host.start_epoch(st.starttime)
        now = {"pid": st.pid, "state": st.state, "ppid": st.ppid, "comm": json_text(st.comm),
               "start_ticks": st.starttime, "started": iso(started),
               "started_epoch": round(started, 2) if started is not None else None,
               "tgid": facts.tgid, "exit_code_field": st.exit_code}
        # psutil reads this host's /proc: only when that is what the judge read too
        if s.host is not None and host.live and own_procfs(s.host.proc_root) and own_procfs("/proc"):
            now["resources"] = process_resources(st.pid, st.starttime)
            now["resources_note"] = None
        else:
            now["resources"] = None
            now["resources_note"] = "not read: psutil reads only the live /proc of this pid namespace"
    parent = None
    if facts.parent is not None:
        parent = {"pid": facts.parent.pid, "comm": json_text(facts.parent.comm), "state": facts.parent.state,
                  "is_its_shim": facts.parent_is_shim, **(_process_view(facts.parent.pid, view) or {})}
    elif st is not None:
        parent = {"pid": st.ppid, "comm": None, "state": None, "is_its_shim": False, "argv": None, "cwd": None}
    shim: dict[str, Any] = {"pid": facts.shim_pid, "state": facts.shim_state if host.proc_read else None}
    if facts.shim_pid is not None:
        shim.update(_process_view(facts.shim_pid, view) or {})
    recorded_epoch = host.start_epoch(p.start) if p.start is not None else None
    return {
        "steps": verdict_steps(p, facts, host, s),
        "recorded": {"pid": p.pid, "pid_containerd": p.files.daemon_pid, "start_ticks": p.start,
                     "started_if_this_boot": iso(recorded_epoch)},
        "pid_source": facts.pid_source,
        "judged_pid": facts.pid,
        "proc_now": now,
        "identity": identity_of(p, facts, host) if st is not None else None,
        "parent": parent,
        "shim": shim,
        "frozen": facts.frozen,
    }


def containerd_reason(p: ProcessRecord, j: ProcessJudgement, facts: ProcessFacts, host: HostFacts,
                      judged: ContainerJudgement) -> str:
    """Why the daemon would do what the judge predicted (containerd 0.2.9's own words where it has them)."""
    if not hasattr(p.files, "spec"):
        return j.containerd_why  # runtime-v2: the task's prediction says it
    if j.containerd_would == "drop-container":
        why = [f.message for f in judged.findings if f.code in ("R001", "R002", "R003")]
        return "; ".join(why) or "the container dir is deleted"
    spec = p.files.spec
    if spec.containerd_read == "blocks" and j.containerd_would == "hang-daemon":
        return "process.json is a FIFO: containerd's read never returns"
    if j.containerd_would is None and judged.containerd_would in ("crash-daemon", "hang-daemon"):
        if not spec.containerd_decodes or spec.containerd_read == "blocks":
            return "containerd stops before it reaches this process"
    if spec.containerd_decodes:
        prediction = predict_process(p, facts, host)
        if prediction.would == j.containerd_would:
            return prediction.why
    if j.containerd_would is None and judged.containerd_would in ("crash-daemon", "hang-daemon"):
        return "containerd stops (on another process) before it reaches this process"
    why = [f.message for f in j.findings if f.code.startswith("R") and f.code != "R009"]
    return "; ".join(why) or "cannot be told"


# --- timeline ------------------------------------------------------------------------------

_WRITTEN = {"address": "address written", "bootstrap.json": "bootstrap.json written",
            "config.json": "config.json written",
            layout.STATE_FILE: "state.json written", layout.PROCESS_FILE: "process.json written",
            layout.PID_FILE: "pid written", layout.STARTTIME_FILE: "starttime written",
            layout.EXIT_STATUS_FILE: "exitStatus written"}


def timeline(files: list[dict], host: HostFacts, processes: list[dict], events: list[dict],
             now: float) -> list[dict]:
    """Everything with a time, sorted: files written (mtime), process starts, log lines, events, now."""
    items: list[tuple[float, int, str, str | None]] = []  # epoch, order, what, path

    def add(when: float | None, what: str, path: str | None) -> None:
        if when is not None and math.isfinite(when):
            items.append((when, len(items), what, path))

    for d in files:
        for e in d["entries"]:
            if e["type"] == "file" and (e["name"] in _WRITTEN or e["name"].endswith(".pid")):
                add(e["mtime_epoch"], _WRITTEN.get(e["name"], f"{e['name']} written"), d["dir"])
    for p in processes:
        path = p["dir"]
        ev, verdict = p["evidence"], p["verdict"]
        now_ = ev["proc_now"]
        ticks = ev["recorded"]["start_ticks"]
        if now_ is not None and verdict in ("running", "orphaned", "zombie"):
            add(now_["started_epoch"], f"process started (pid {now_['pid']}; /proc start tick "
                f"{now_['start_ticks']}, " + (f"boot + ticks / {host.clock_ticks})" if host.boot is not None else
                                              f"btime + ticks / {host.clock_ticks}, ±1 s)"), path)
        elif ticks is not None and host.btime is not None:
            add(host.start_epoch(ticks), f"process started (recorded start tick {ticks}, with this "
                "boot's btime: wrong if the root is from a previous boot)", path)
        if now_ is not None and verdict == "pid-reused":
            add(now_["started_epoch"], f"another process started under pid {now_['pid']} "
                f"(start tick {now_['start_ticks']})", path)
        for name, log in p["logs"].items():
            for entry in log["entries"]:
                when = rfc3339(entry.get("time"))
                if when is not None:
                    add(when, f"{name}: {entry.get('level', '?')} {_shown(entry.get('msg', ''))}", path)
    for e in events:
        detail = " ".join(f"{k}={_shown(e[k])}" for k in ("pid", "status") if k in e)
        add(rfc3339(e.get("timestamp")), f"event {_shown(e.get('type'))} {detail}".rstrip(), None)
    add(now, "now", None)
    return [{"time": iso(t), "epoch": round(t, 3), "what": safe_text(what), "path": path}
            for t, _, what, path in sorted(items)]


# --- the whole explanation -----------------------------------------------------------------

def _finding_json(f) -> dict:
    return {"code": f.code, "severity": f.severity, "message": safe_text(f.message),
            "path": safe_text(f.path) if f.path is not None else None}


def resolve_target(s: Scan, target: str) -> tuple[str, str | None]:
    """ID[/PROCESS] (or NAMESPACE/ID[/PROCESS]) -> (container key, process id or None): the
    longest head of the target that names exactly one container is the container."""
    keys = s.reader.containers()
    parts = target.split("/")
    ambiguous = None  # the longest head that matched several: said when no longer one matches one
    for n in range(len(parts), 0, -1):
        head, rest = "/".join(parts[:n]), "/".join(parts[n:])
        if not head:
            break
        try:
            (key,) = select_containers(keys, [head])
        except SelectionError as e:
            if "ambiguous" in str(e) and ambiguous is None:
                ambiguous = str(e)
            continue
        return key, rest or None
    raise ExplainError(f"no container matches '{printable(target)}'" + (f" ({ambiguous})" if ambiguous else ""))


def explain(s: Scan, target: str) -> dict:
    now = time.time()
    key, process_id = resolve_target(s, target)
    record, facts, judged = s.examine(key)
    processes = [p for p in record.processes if not process_id or p.id == process_id]
    if process_id and not processes:  # a unique prefix of a process id, as tables show exec ids cut
        processes = [p for p in record.processes if p.id.startswith(process_id)]
        if len(processes) > 1:
            raise ExplainError(f"'{printable(process_id)}' is ambiguous in container {printable(key)}: it matches "
                               + ", ".join(printable(p.id) for p in processes))
    if process_id and not processes:
        names = ", ".join(printable(p.id) for p in record.processes) or "none"
        raise ExplainError(f"container {printable(key)} has no process {Q(process_id)} (it has: {names})")
    if process_id:
        process_id = processes[0].id
    host = s.host_facts
    if record.namespace is None:
        files, logs, events, events_note = _files_02(s, record, processes, process_id)
    else:
        files, logs = _files_v2(s, record)
        events, events_note = [], None
    for d in files:
        for e in d["entries"]:
            e["name"] = json_text(e["name"])
            if e.get("target") is not None:
                e["target"] = json_text(e["target"])
            e["mtime_epoch"] = e.pop("mtime", None)
            e["mtime"] = iso(e["mtime_epoch"])
            e["findings"] = [safe_text(f) for f in e["findings"]]
            if "parsed" in e:
                e["parsed"] = safe_text(e["parsed"])
    judged_by_id = {p.id: p for p in judged.processes}
    out_processes = []
    for p in processes:
        j = judged_by_id[p.id]
        f = facts[p.id]
        out_processes.append({
            "id": json_text(p.id), "dir": _dir_of(record, p),
            "verdict": j.verdict, "exit_status": j.exit_status, "exit_status_source": j.exit_status_source,
            "parsed": {k: safe_text(v) for k, v in describe_process(p).items()},
            "evidence": evidence(p, f, host, s),
            "logs": logs.get(p.id, {}),
            "containerd_would": j.containerd_would,
            "containerd_why": safe_text(containerd_reason(p, j, f, host, judged)),
            "findings": [_finding_json(x) for x in j.findings],
        })
    if s.generation.writable:
        plan = [a for a in plan_repair([judged], Options()) if not process_id or a.process in (None, process_id)]
        repair_would = [{"process": None if a.process is None else json_text(a.process), "action": a.kind,
                         "value": None if a.value is None else safe_text(a.value), "reason": safe_text(a.reason)}
                        for a in plan]
    else:
        repair_would = None  # repair refuses this layout
    return {
        "schema": SCHEMA, "root": json_text(s.root.path), "layout": s.generation.name, "daemon": s.daemon.name,
        "container": json_text(record.id), "namespace": None if record.namespace is None else json_text(record.namespace),
        "process": json_text(process_id) if process_id else None,
        "host": s.host_json(),
        "files": files,
        "processes": out_processes,
        "events": events, "events_note": events_note,
        "timeline": timeline(files, host, out_processes, events, now),
        "containerd_would": judged.containerd_would,
        "containerd_why": safe_text(judged.extra.get("containerd_would_why") or ""),
        "task": json_safe({k: v for k, v in judged.extra.items() if k != "containerd_would_why"}) or None,
        "container_findings": [_finding_json(x) for x in judged.findings],
        "repair_would": repair_would,
        "scan_findings": [_finding_json(x) for x in s.findings],
    }


def _dir_of(record: ContainerRecord, p: ProcessRecord | None = None) -> str:
    """Where a container's (or a 0.2 process's) files are, relative to the root, names exact."""
    if record.namespace is not None:  # runtime-v2: one bundle for the whole task
        return "/".join(json_text(x) for x in (record.rel.split("/", 1)[0], record.namespace, record.id))
    return json_text(record.id) + ("" if p is None else f"/{json_text(p.id)}")


def _files_02(s: Scan, record: ContainerRecord, processes: list[ProcessRecord], process_id: str | None
              ) -> tuple[list[dict], dict[str, dict[str, dict]], list[dict], str | None]:
    """A 0.2 container's dir and its process dirs, their logs, and its lines of events.log."""
    cid = record.id
    cdir = _dir_of(record)
    files: list[dict] = []
    logs: dict[str, dict[str, dict]] = {}
    root_fd = os.open(s.root.real, OPEN_DIR)
    try:
        try:
            cfd = os.open(cid, OPEN_DIR, dir_fd=root_fd)
        except OSError as e:
            raise ExplainError(f"container {printable(cid)} cannot be opened: {e.strerror}") from None
        try:
            if not process_id:
                state_findings = list(record.findings) + list(record.files.state.findings)
                files.append({"dir": cdir, "entries": _file_rows(
                    list_dir(cfd), {layout.STATE_FILE: _describe_state(record)}, state_findings, record.rel,
                    (layout.STATE_FILE,))})
                for e in files[-1]["entries"]:
                    if e["type"] == "dir":
                        e.setdefault("parsed", "a process dir")
                    elif e["name"] != layout.STATE_FILE and e["type"] != "missing":
                        e.setdefault("parsed", "not used by containerd")
            for p in processes:
                pdir = _dir_of(record, p)
                try:
                    pfd = os.open(p.id, OPEN_DIR, dir_fd=cfd)
                except OSError as e:
                    files.append({"dir": pdir, "entries": [], "error": e.strerror})
                    logs[p.id] = {}
                    continue
                try:
                    entries = list_dir(pfd)
                    plogs = {}
                    for name in LOG_FILES:
                        got, error = read_log(pfd, entries, name, p.rel)
                        if any(e["name"] == name for e in entries):
                            plogs[name] = {"entries": got, "error": error}
                    logs[p.id] = plogs
                finally:
                    os.close(pfd)
                rows = _file_rows(entries, describe_process(p), list(p.findings), p.rel, layout.PROCESS_FILES)
                for e in rows:
                    if "parsed" not in e:
                        meaning = _other_file_meaning(e, plogs)
                        if meaning:
                            e["parsed"] = meaning
                files.append({"dir": pdir, "entries": rows})
        finally:
            os.close(cfd)
        events, events_note = read_events(root_fd, cid)
    finally:
        os.close(root_fd)
    return files, logs, events, events_note


def _files_v2(s: Scan, record: ContainerRecord) -> tuple[list[dict], dict[str, dict[str, dict]]]:
    """A runtime-v2 task's bundle, what each file says, runc's state and CRI's checkpoint as two
    more rows, and runc's log.json (the task's, shown with every process)."""
    t = record.files
    rows: list[dict] = []
    log: dict[str, dict] = {}
    try:
        with dir_below(s.root.fd, record.rel.split("/", 1)[0], record.namespace or "", record.id) as fd:
            entries = list_dir(fd)
            got, error = read_log(fd, entries, "log.json", record.rel)
            if any(e["name"] == "log.json" for e in entries):
                log = {"log.json": {"entries": got, "error": error}}
    except OSError as e:
        return [{"dir": _dir_of(record), "entries": [], "error": e.strerror}], {}
    parsed = {p.rel.rsplit("/", 1)[-1]: describe_process(p)["pid file"] for p in record.processes}
    parsed.update(_describe_task_files(t, log))
    findings = list(record.findings) + [f for p in record.processes for f in p.findings]
    rows = _file_rows(entries, parsed, findings, record.rel, ("init.pid", "address"))
    for e in rows:
        if e["name"] == "address" and e["type"] == "missing" and t.bootstrap is not None:
            e["parsed"] = "absent: containerd 2.x reads bootstrap.json instead (1.6 and 1.7 read only this one)"
    extra = [{"name": "(runc state)", "type": "file" if t.runc and not t.runc.problem else "missing",
              "path": json_text(t.runc.path) if t.runc else None, "findings": [],
              "parsed": _describe_runc(t)}]
    if t.cri is not None:
        extra.append({"name": "(CRI checkpoint)", "type": "file" if not t.cri.problem else "missing",
                      "path": json_text(t.cri.path), "findings": [],
                      "parsed": f"{t.cri.state}: pid {t.cri.pid}, exit code {t.cri.exit_code}, "
                                f"finished at {t.cri.finished_at or 'not yet'}" + (
                                    f" ({t.cri.problem})" if t.cri.problem else "")})
    return [{"dir": _dir_of(record), "entries": rows + extra}], {p.id: log for p in record.processes}


def _describe_address_file(f, read_by: str) -> str:
    """What a file naming the shim's socket holds, and which containerd reads it."""
    if f is None:
        return "absent"
    if f.problem is not None:
        return f"{f.problem}; {read_by}"
    held = (f"JSON: version {f.version}, address {f.address}, protocol {f.protocol}" if f.is_json
            else f"the address {f.text!r}" + ("" if f.plain else " (with white space, dialled as written)"))
    return f"{held}; the socket file is {f.socket_state_words}; {read_by}"


def _describe_task_files(t, log: dict[str, dict]) -> dict[str, str]:
    out = {
        "address": _describe_address_file(t.address_file, "read by every containerd 1.x/2.x (2.x: only "
                                          "without a bootstrap.json, which it then writes as version 2)"),
        "bootstrap.json": _describe_address_file(t.bootstrap, "read by containerd 2.x only, before `address`"),
        "config.json": ("the OCI spec; CRI: " + (f"{t.container_type}" + (f" of pod sandbox {t.sandbox}" if t.sandbox else ""))
                        if t.container_type else "the OCI spec (no CRI annotations)"),
        "options.json": f"runc options: {json.dumps(t.options)}" if t.options is not None else "not read",
        "runtime": f"runc binary {t.runtime_binary!r}" if t.runtime_binary else "empty: runc",
        "shim-binary-path": f"the shim binary containerd runs for this task: {t.shim_binary or '(empty)'}",
        "log": "FIFO (the shim's stderr): never opened",
        "rootfs": "the container's root filesystem (a mount point)",
        "work": (f"link to the work dir {t.work_link} (" + ("exists" if t.work_dir_exists else "missing" if
                 t.work_dir_exists is False else "not checked") + "); never followed") if t.work_link else "no link",
    }
    if "log.json" in log:
        n = len(log["log.json"]["entries"])
        out["log.json"] = f"runc's log: {n} entr{'y' if n == 1 else 'ies'}" + (
            f"; last error: {t.log_error}" if t.log_error else "")
    return out


def _describe_runc(t) -> str:
    r = t.runc
    if r is None:
        return "not read (beside a captured proc dir; give --runc-root)"
    if r.problem:
        return f"{r.path}: {r.problem}"
    return f"{r.path}: init pid {r.pid}, start tick {r.start}, created {r.created}"


# --- text ----------------------------------------------------------------------------------

def _log_line(entry: dict) -> str:
    if "raw" in entry:
        return f"(not JSON, raw) {printable(entry['raw'])}"
    head = " ".join(f"{k}={printable(_shown(entry[k]))}" for k in ("time", "level", "msg") if k in entry)
    rest = " ".join(f"{printable(str(k))}={printable(_shown(v))}" for k, v in entry.items()
                    if k not in ("time", "level", "msg"))
    return (head + " " + rest).strip()


def _resource_lines(now: dict) -> list[str]:
    r = now["resources"]
    if r is None:
        return [f"  resources: {now['resources_note']}"]
    why = r["cannot_tell"]

    def told(key: str, form: Callable[[Any], str]) -> str:
        return form(r[key]) if r[key] is not None else f"cannot tell ({why.get(key, '?')})"

    lines = [f"  resources: rss {told('rss_bytes', lambda b: f'{b / 1048576:.1f} MiB')}, "
             f"threads {told('threads', str)}, "
             f"cpu {told('cpu_user_s', lambda t: f'{t:.2f} s user')}"
             + (f" + {r['cpu_system_s']:.2f} s system" if r["cpu_system_s"] is not None else "")]
    for key, title, line in (("open_files", "open files", lambda f: f"fd {f['fd']} {printable(f['path'])}"),
                             ("sockets", "sockets", lambda c: f"fd {c['fd']} {c['family']} {c['type']} "
                              f"{printable(c['local'] or '-')} -> {printable(c['remote'] or '-')} {c['status']}")):
        if r[key] is None:
            lines.append(f"  {title}: cannot tell ({why.get(key, '?')})")
            continue
        shown = r[key]
        lines.append(f"  {title}: {r[key + '_count']}" + (f" (first {len(shown)} shown)" if len(shown) < r[key + "_count"] else ""))
        lines += ["    " + line(x) for x in shown]
    return lines


def _task_lines(task: dict) -> list[str]:
    """A runtime-v2 task's shim, runc state and CRI checkpoint, as the restore sees them."""
    P = printable
    shim = task["shim"]
    lines = [f"  shim: {_or(shim['state'], 'not judged')}" + _or(shim["pid"], "", ", pid {}")
             + f"; address {P(shim['address']) if shim['address'] else '(' + P(shim['address_problem'] or '?') + ')'}"
             + f"; socket {_or(shim['socket'] and P(shim['socket']), 'none')} ({shim['socket_state']})"]
    runc = task["runc_state"]
    lines.append("  runc state: " + ("not read" if runc is None else P(runc["path"]) + ": " + (
        runc["problem"] or f"init pid {runc['pid']}, start tick {runc['start']}")))
    cri = task["cri"]
    if cri:
        lines.append(f"  CRI: checkpoint {cri['state']} (pid {cri['pid']}, exit code {cri['exit_code']}); "
                     f"CRI would: {cri['cri_would'] or 'cannot be told'}: {P(cri['why'])}")
    if task.get("sandbox"):
        lines.append(f"  pod sandbox: {P(task['sandbox'])} (its shim is the pod's)")
    return lines


def render_text(doc: dict, out: BinaryIO) -> None:
    P = printable
    name = doc["container"] if doc["namespace"] is None else f"{doc['namespace']}/{doc['container']}"
    lines = [f"container {P(name)}" + (f"  process {P(doc['process'])}" if doc["process"] else ""),
             f"root      {P(doc['root'])} ({doc['layout']}: {doc['daemon']} predicted)"]
    h = doc["host"]
    lines.append("host      " + (f"proc root {P(h['proc_root'])}, "
                                f"{_or(h['btime'] and iso(h['btime']), 'boot time unknown', 'booted {}')}"
                                f"{_or(h['btime'], '', ' (btime {})')}, CLK_TCK {h['clock_ticks']}"
                                if h["proc_root"] else "offline: /proc not read"))
    lines += ["", "== files"]
    for d in doc["files"]:
        lines.append(f"  {P(d['dir'])}/" + (f"  (cannot be opened: {d['error']})" if d.get("error") else ""))
        for e in d["entries"]:
            size = f"{e['size']} B" if e.get("size") is not None and e["type"] == "file" else ""
            target = f" -> {P(e['target'])}" if e.get("target") else ""
            lines.append(f"    {P(e['name']):<16} {e['type']:<8} {size:>9}  {e.get('mtime') or '':<29}{target}")
            if e.get("parsed"):
                lines.append(f"        = {P(e['parsed'])}")
            lines += [f"        ! {P(x)}" for x in e["findings"]]
    for p in doc["processes"]:
        ev = p["evidence"]
        lines += ["", f"== process {P(p['id'])}: {p['verdict']}"
                  + (f" (exit status {p['exit_status']}, from {p['exit_status_source']})" if p["exit_status"] is not None else "")]
        lines.append("  how the verdict was reached (the judge's checks, in its order; the first match decides):")
        for step in ev["steps"]:
            if not step["reached"]:
                lines.append(f"    - {step['check']}: not reached")
                continue
            said = step["why"][0] if step["why"] else None
            label = f"YES -> {step['decided']}" if step["matched"] else "no"
            lines.append(f"    - {step['check']}: {label}" + (f" ({P(said)})" if said else ""))
            lines += [f"        {P(w)}" for w in step["why"][1:]]
        rec = ev["recorded"]
        lines.append(f"  recorded:  {_or(rec['pid'], 'no usable pid', 'pid {}')}, "
                     f"{_or(rec['start_ticks'], 'no start tick', 'start tick {}')}"
                     + (f" (= {rec['started_if_this_boot']} if from this boot)" if rec["started_if_this_boot"] else ""))
        if ev["pid_source"] == "shim-child":
            lines.append(f"  judged pid {ev['judged_pid']}: the only child of its shim (no usable pid file)")
        now = ev["proc_now"]
        lines.append("  /proc now: " + (
            f"pid {now['pid']} state {now['state']}, ppid {now['ppid']}, comm {Q(now['comm'])}, "
            f"start tick {now['start_ticks']}"
            + _or(now["started"], " (when: the boot time is unknown)", " = {}") + _or(now["started_epoch"], "", " (epoch {})")
            if now else ("nothing (not read)" if not doc["host"]["proc_root"] else "no such process")))
        if now:
            lines.append(f"  identity:  {ev['identity']}")
            lines += _resource_lines(now)
        par = ev["parent"]
        if par:
            argv = " ".join(par["argv"]) if par.get("argv") else "?"
            lines.append(f"  parent:    pid {par['pid']} ({Q(par['comm'] or '?')}), "
                         f"{'its shim' if par['is_its_shim'] else 'NOT its shim'}; argv {Q(argv)}, "
                         f"cwd {Q(par.get('cwd') or '?')}")
        shim = ev["shim"]
        lines.append(f"  shim:      {shim['state'] or 'unknown'}" + (
            f", pid {shim['pid']}, argv {Q(' '.join(shim.get('argv') or []) or '?')}, cwd {Q(shim.get('cwd') or '?')}"
            if shim["pid"] else ""))
        for name, log in p["logs"].items():
            lines.append(f"  {name}: " + (log["error"] or ("" if log["entries"] else "empty")))
            lines += ["    " + _log_line(x) for x in log["entries"]]
        lines.append(f"  {doc['daemon']} would: {p['containerd_would'] or 'cannot be told'}: {P(p['containerd_why'])}")
        if p["findings"]:
            lines.append("  findings:")
            lines += [f"    {f['code']} {f['severity']:<7} {P(f['message'])}" for f in p["findings"]]
    lines += ["", f"== {doc['daemon']} on restart, for the container: {doc['containerd_would'] or 'cannot be told'}"]
    if doc["containerd_why"]:
        lines.append(f"  {P(doc['containerd_why'])}")
    task = doc["task"]
    if task:
        lines += _task_lines(task)
    lines += [f"  {f['code']} {f['severity']:<7} {P(f['message'])}" for f in doc["container_findings"]]
    lines += ["", "== recover repair would (default options, dry run):"]
    if doc["repair_would"] is None:
        lines.append(f"  nothing: repair refuses {doc['layout']} roots (it judges them)")
    else:
        lines += [f"  {P(a['process'] or '(container)')}: {a['action']}" + (f" {P(a['value'])}" if a["value"] else "")
                  + f" - {P(a['reason'])}" for a in doc["repair_would"]] or ["  nothing"]
    if doc["namespace"] is None:
        lines += ["", "== events.log (this container)" + (f": {doc['events_note']}" if doc["events_note"] else "")]
        lines += ["  " + P(" ".join(f"{k}={_shown(v)}" for k, v in e.items())) for e in doc["events"]] or ["  none"]
    lines += ["", "== timeline"]
    lines += [f"  {_or(t['time'], t['epoch'])}  " + (f"{P(t['path'])}: " if t["path"] else "") + P(t["what"])
              for t in doc["timeline"]]
    out.write(("\n".join(line.rstrip() for line in lines) + "\n").encode("utf-8", "backslashreplace"))


def build_explanation(scan: Scan, target: str) -> dict:
    """The explanation of `target` (ID[/PROCESS], NAMESPACE/ID[/PROCESS]) as a document;
    ExplainError if it names none."""
    if not target.partition("/")[0]:
        raise ExplainError("no container id given (ID[/PROCESS])")
    return explain(scan, target)


def render_explanation(doc: dict, out: BinaryIO, fmt: str) -> None:
    if fmt == "json":
        out.write(orjson.dumps(doc) + b"\n")
    else:
        render_text(doc, out)
