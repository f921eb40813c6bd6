"""explain: everything recover knows about one container or process, with the evidence.

Nothing here decides anything new: the files are read by the root's generation (its explainer:
recover/generations/*/explain.py), the facts come from host.py, the verdict from walking
verdicts.VERDICT_CHECKS in order (the same functions the judge runs), the prediction from the
judgement's own reasons, the repair from the repair plan.  This module gathers them, says in words
what each check looked at, adds the logs, the events and a timeline; explain_text.py renders it.

Safety is the scan's: dirs are opened O_NOFOLLOW relative to their parent, names come from
os.scandir on those fds, only regular files are opened (fsread.read_regular, at most 1 MiB), and
nothing is ever written.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import re
import time
from collections.abc import Callable
from typing import Any, Protocol

from .fsread import (
    MAX_FILE_BYTES,
    json_safe,
    json_text,
    kind_of,
    printable,
    read_regular,
)
from .host import HostView, ProcessFacts
from .judge import ContainerJudgement, ProcessJudgement
from .records import ContainerRecord, ProcessRecord
from .repair import Options, own_procfs
from .resources import process_resources
from .scan import Scan, SelectionError, select_containers
from .value import Value
from .verdicts import (
    PID_FILE_MTIME_SLACK_S,
    PREVIOUS_BOOT_MARGIN_S,
    VERDICT_CHECKS,
    HostFacts,
    identity_of,
    previous_boot_evidence,
)

SCHEMA = "recover.explain/1"


class ExplainedFiles(Value):
    """A container's files as a generation's explainer read them: dirs and their entries, each
    process's logs by file name, and the container's events (with a note when not all was read)."""

    files: list[dict]
    logs: dict[str, dict[str, dict]]
    events: list[dict]
    events_note: str | None


class Explainer(Protocol):
    """What explain asks the root's generation (its `explainer`): its files in words, the verdict's
    first check (how it records an exit), its daemon's reasons, and its own lines of the text."""

    written: dict[str, str]  # file name -> what its mtime means on the timeline

    def files(self, s: Scan, record: ContainerRecord, processes: list[ProcessRecord],
              process_id: str | None) -> ExplainedFiles: ...

    def dir_of(self, record: ContainerRecord, p: ProcessRecord | None = None) -> str: ...

    def describe_process(self, p: ProcessRecord) -> dict[str, str]: ...

    def why_exit(self, rec: ProcessRecord, facts: ProcessFacts, host: HostFacts) -> str: ...

    def containerd_reason(self, p: ProcessRecord, j: ProcessJudgement, facts: ProcessFacts, host: HostFacts,
                          judged: ContainerJudgement) -> str: ...

    def task_lines(self, task: dict) -> list[str]: ...

    def tail_lines(self, doc: dict) -> list[str]: ...


class ExplainError(Exception):
    """The target does not name exactly one container (or process)."""


# --- small helpers -------------------------------------------------------------------------

def iso(epoch: float | None, precision: str = "milliseconds") -> str | None:
    """An epoch as ISO 8601 UTC, to `precision` (isoformat's timespec): no finer than it is known."""
    if epoch is None:
        return None
    try:
        return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).isoformat(timespec=precision)
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


def told(value: object, missing: str, form: str = "{}") -> str:
    """A value in its sentence, or words for its absence: text output never says None."""
    return missing if value is None else form.format(value)


def Q(text: str) -> str:
    """A name in quotes, escaped once (printable's escapes, not repr's on top of them)."""
    return f"'{printable(text)}'"


def shown(value: Any) -> str:
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


def file_rows(entries: list[dict], parsed: dict[str, str], findings: list, prefix: str,
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


# --- evidence ------------------------------------------------------------------------------

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
        return (f"start ticks: recorded {recorded}, observed {told(observed, 'none')}: "
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
    "_exit_recorded": lambda rec, facts, host, s: s.generation.explainer.why_exit(rec, facts, host),
    "_proc_unreadable": _why_proc, "_no_pid": _why_pid,
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


# --- timeline ------------------------------------------------------------------------------

def timeline(files: list[dict], host: HostFacts, processes: list[dict], events: list[dict],
             now: float, written: dict[str, str]) -> list[dict]:
    """Everything with a time, sorted: files written (mtime), process starts, log lines, events, now."""
    items: list[tuple[float, int, str, str | None, str]] = []  # epoch, order, what, path, precision

    def add(when: float | None, what: str, path: str | None, precision: str = "milliseconds") -> None:
        if when is not None and math.isfinite(when):
            items.append((when, len(items), what, path, precision))

    for d in files:
        for e in d["entries"]:
            if e["type"] == "file" and (e["name"] in written or e["name"].endswith(".pid")):
                add(e["mtime_epoch"], written.get(e["name"], f"{e['name']} written"), d["dir"])
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
                if when is not None:  # runc writes whole seconds: shown as such, never as .000
                    add(when, f"{name}: {entry.get('level', '?')} {shown(entry.get('msg', ''))}", path,
                        "milliseconds" if "." in str(entry.get("time")) else "seconds")
    for e in events:
        detail = " ".join(f"{k}={shown(e[k])}" for k in ("pid", "status") if k in e)
        add(rfc3339(e.get("timestamp")), f"event {shown(e.get('type'))} {detail}".rstrip(), None)
    add(now, "now", None)
    return [{"time": iso(t, precision), "epoch": round(t, 3), "what": safe_text(what), "path": path}
            for t, _, what, path, precision in sorted(items)]


# --- the whole explanation -----------------------------------------------------------------

def _finding_json(f) -> dict:
    return {"code": f.code, "severity": f.severity, "message": safe_text(f.message),
            "path": safe_text(f.path) if f.path is not None else None}


def resolve_target(s: Scan, target: str) -> tuple[str, str | None]:
    """ID[/PROCESS] (or NAMESPACE/ID[/PROCESS]) -> (container key, process id or None): the
    longest head of the target that names exactly one container is the container."""
    keys = s.reader.containers()
    parts = target.split("/")
    for n in range(len(parts), 0, -1):
        head, rest = "/".join(parts[:n]), "/".join(parts[n:])
        if not head:
            break
        try:
            (key,) = select_containers(keys, [head], s.aliases)
        except SelectionError as e:
            if e.matches:  # the longest head that names containers names several: say which
                raise ExplainError(str(e)) from None
            continue
        return key, rest or None
    raise ExplainError(f"no container matches '{printable(target)}'")


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
    explainer = s.generation.explainer
    found = explainer.files(s, record, processes, process_id)
    files, logs, events, events_note = found.files, found.logs, found.events, found.events_note
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
            "id": json_text(p.id), "dir": explainer.dir_of(record, p),
            "verdict": j.verdict, "exit_status": j.exit_status, "exit_status_source": j.exit_status_source,
            "parsed": {k: safe_text(v) for k, v in explainer.describe_process(p).items()},
            "evidence": evidence(p, f, host, s),
            "logs": logs.get(p.id, {}),
            "containerd_would": j.containerd_would,
            "containerd_why": safe_text(explainer.containerd_reason(p, j, f, host, judged)),
            "findings": [_finding_json(x) for x in j.findings],
        })
    repairer = s.generation.repairer
    if repairer is not None:
        plan = [a for a in repairer.plan(judged, Options()) if not process_id or a.process in (None, process_id)]
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
        "timeline": timeline(files, host, out_processes, events, now, explainer.written),
        "containerd_would": judged.containerd_would,
        "containerd_why": safe_text(judged.extra.get("containerd_would_why") or ""),
        "task": json_safe({k: v for k, v in judged.extra.items() if k != "containerd_would_why"}) or None,
        "container_findings": [_finding_json(x) for x in judged.findings],
        "repair_would": repair_would,
        "scan_findings": [_finding_json(x) for x in s.findings],
    }


def target_problem(target: str) -> str | None:
    """Why `target` cannot name a container, whatever the root holds (None: it may)."""
    if target.startswith("/") and os.path.isdir(target):
        return (f"'{printable(target)}' is a path, not a container: name the container (ID[/PROCESS]) and the "
                "root with --root")
    if not target.partition("/")[0]:
        return "no container id given (ID[/PROCESS])"
    return None


def build_explanation(scan: Scan, target: str) -> dict:
    """The explanation of `target` (ID[/PROCESS], NAMESPACE/ID[/PROCESS]) as a document;
    ExplainError if it names none."""
    if (problem := target_problem(target)) is not None:
        raise ExplainError(problem)
    return explain(scan, target)
