"""explain: everything recover knows about one container or process, with the evidence.

Nothing here decides anything new: the files come from root.py, the facts from host.py, the
verdict from walking judge.VERDICT_CHECKS in order (the same functions the judge runs), the
prediction from judge.predict_process, the repair from repair.plan_repair.  This module only
gathers them, adds the logs, the events and a timeline, and renders them.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import stat
import time
from typing import BinaryIO

import orjson

from . import layout
from .host import HostView, ProcessFacts
from .judge import VERDICT_CHECKS, ContainerJudgement, HostFacts, identity_of, predict_process
from .repair import Options, plan_repair
from .root import ContainerRecord, ProcessRecord, RootError, json_text, printable, read_regular
from .scan import Scan, SelectionError

SCHEMA = "recover.explain/1"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
EVENTS_TAIL = 1 << 20  # events.log can grow: read its last MiB


class ExplainError(Exception):
    """The target does not name exactly one container (or process)."""


def iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).isoformat(timespec="milliseconds")


_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)")


def rfc3339(value: object) -> float | None:
    """An RFC 3339 time with Go's nanoseconds, as epoch seconds."""
    m = _RFC3339.fullmatch(str(value))
    if not m:
        return None
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    try:
        whole = datetime.datetime.fromisoformat(m.group(1) + zone).timestamp()
    except ValueError:
        return None
    return whole + float("0" + (m.group(2) or ".0"))


# --- logs and events -----------------------------------------------------------------------

def parse_log_objects(data: bytes) -> list[dict]:
    """JSON objects written back to back (shim-log.json has no newlines; log.json one a line).

    The shim does not escape its message, so an object can be broken: what decodes is kept, and
    each stretch that does not is kept raw (escaped), so that nothing is lost or hidden.
    """
    text = data.decode("utf-8", "replace")
    decoder = json.JSONDecoder()
    out: list[dict] = []
    i, raw_start = 0, None
    while i < len(text):
        if text[i] in " \t\r\n\0":
            i += 1
            continue
        try:
            value, end = decoder.raw_decode(text, i)
        except (ValueError, RecursionError):
            value, end = None, -1
        if isinstance(value, dict):
            if raw_start is not None:
                out.append({"raw": text[raw_start:i].strip()})
                raw_start = None
            out.append({k: value.get(k) for k in ("level", "msg", "time") if k in value} or {"raw": text[i:end]})
            i = end
            continue
        if raw_start is None:
            raw_start = i
        nxt = text.find("{", i + 1)
        i = len(text) if nxt < 0 else nxt
    if raw_start is not None and text[raw_start:].strip(" \t\r\n\0"):
        out.append({"raw": text[raw_start:].strip(" \t\r\n\0")})
    return out


def container_events(root_fd: int, cid: str) -> list[dict]:
    """This container's lines of events.log (its last MiB), as the daemon wrote them."""
    try:
        st = os.stat(layout.EVENTS_LOG, dir_fd=root_fd, follow_symlinks=False)
    except OSError:
        return []
    if not stat.S_ISREG(st.st_mode):
        return []
    fd = os.open(layout.EVENTS_LOG, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=root_fd)
    try:
        data = os.pread(fd, EVENTS_TAIL, max(0, st.st_size - EVENTS_TAIL))
    finally:
        os.close(fd)
    events = []
    for line in data.splitlines():
        try:
            e = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(e, dict) and e.get("id") == cid:
            events.append({k: e.get(k) for k in ("timestamp", "type", "pid", "status") if k in e})
    return events


# --- files ---------------------------------------------------------------------------------

def list_dir(dir_fd: int, rel: str) -> list[dict]:
    """Every entry of a dir: name, type, size, mtime; regular files read (at most 1 MiB) only to
    say what they hold.  Nothing is followed or opened but regular files."""
    out = []
    for entry in sorted(os.scandir(dir_fd), key=lambda e: e.name):
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            out.append({"name": entry.name, "type": "vanished"})
            continue
        kind = ("dir" if stat.S_ISDIR(st.st_mode) else "fifo" if stat.S_ISFIFO(st.st_mode)
                else "symlink" if stat.S_ISLNK(st.st_mode) else "socket" if stat.S_ISSOCK(st.st_mode)
                else "file" if stat.S_ISREG(st.st_mode) else "device")
        item = {"name": entry.name, "type": kind, "size": st.st_size, "mtime": st.st_mtime}
        if kind == "symlink":
            item["target"] = json_text(os.readlink(entry.name, dir_fd=dir_fd))
        out.append(item)
    return out


def _read_file(dir_fd: int, name: str, rel: str) -> bytes | None:
    try:
        if not stat.S_ISREG(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
            return None
    except OSError:
        return None
    return read_regular(dir_fd, name, f"{rel}/{name}").data


def parsed_summary(p: ProcessRecord) -> dict[str, str]:
    """What each file of a process dir was read as (the findings say why where it was not)."""
    spec = p.spec.value or {}
    caps = spec.get("capabilities")
    caps_shape = ("a list (0.2.8 and older)" if isinstance(caps, list) else "an object" if isinstance(caps, dict)
                  else repr(caps))
    out = {
        layout.PROCESS_FILE: ("unreadable" if p.spec.value is None else
                              f"args {spec.get('args')!r}, exec {spec.get('exec')!r}, capabilities {caps_shape}; "
                              f"containerd 0.2.9 {'decodes' if p.spec.containerd_decodes else 'cannot decode'} it"),
        layout.PID_FILE: (f"pid {p.pid.value}" if p.pid.value is not None else "no usable pid")
        + ("" if p.pid.containerd is not None else "; containerd cannot parse it"),
        layout.STARTTIME_FILE: f"start tick {p.starttime.value}" if p.starttime.value is not None else "no start tick",
        layout.EXIT_STATUS_FILE: (f"exit status {p.exit_status.value} ({p.exit_status.source})"
                                  if p.exit_status.value is not None else f"no exit status ({p.exit_status.containerd})"),
    }
    return out


# --- evidence ------------------------------------------------------------------------------

def evidence(p: ProcessRecord, facts: ProcessFacts, host: HostFacts, view: HostView | None) -> dict:
    """The verdict's checks in the judge's own order, each with whether it decided; and the facts."""
    steps = []
    for title, check in VERDICT_CHECKS:
        decision = check(p, facts, host)
        steps.append({"check": title, "decided": decision.verdict if decision else None,
                      "why": [f.message for f in decision.findings] if decision else []})
        if decision:
            break
    st = facts.stat
    now = None
    if st is not None:
        now = {"state": st.state, "ppid": st.ppid, "comm": json_text(st.comm), "start_ticks": st.starttime,
               "started": iso(host.start_epoch(st.starttime))}
    parent = None
    if facts.parent is not None:
        argv = view.cmdline(facts.parent.pid) if view else None
        cwd = view.cwd(facts.parent.pid) if view else None
        parent = {"pid": facts.parent.pid, "comm": json_text(facts.parent.comm), "is_its_shim": facts.parent_is_shim,
                  "argv": [json_text(a) for a in argv] if argv is not None else None,
                  "cwd": json_text(cwd) if cwd is not None else None}
    return {"steps": steps, "recorded": {"pid": p.pid.value, "start_ticks": p.starttime.value},
            "pid_source": facts.pid_source, "proc_now": now,
            "identity": identity_of(p, facts, host) if st is not None else None,
            "parent": parent, "shim": {"pid": facts.shim_pid, "state": facts.shim_state}}


def timeline(record: ContainerRecord, files: dict[str, list[dict]], host: HostFacts,
             judged: ContainerJudgement, events: list[dict]) -> list[dict]:
    items: list[tuple[float, str]] = []
    for rel, entries in files.items():
        for e in entries:
            if e["type"] != "file":
                continue
            what = {layout.STATE_FILE: "state.json written", layout.PROCESS_FILE: "process.json written",
                    layout.PID_FILE: "pid written", layout.EXIT_STATUS_FILE: "exitStatus written"}.get(e["name"])
            if what:
                items.append((e["mtime"], f"{rel}: {what}"))
    for p in judged.processes:
        ticks = p.observed_start if p.observed_start is not None else p.recorded_start
        started = host.start_epoch(ticks) if ticks is not None else None
        if started is not None:
            items.append((started, f"{record.rel}/{printable(p.id)}: process started (tick {ticks}; "
                                   "±1 s: btime is whole seconds)"))
    for e in events:
        when = rfc3339(e.get("timestamp"))
        if when is None:
            continue
        detail = " ".join(f"{k}={e[k]}" for k in ("pid", "status") if k in e)
        items.append((when, f"event {e.get('type')} {detail}".rstrip()))
    items.append((time.time(), "now"))
    return [{"time": iso(t), "epoch": round(t, 3), "what": what} for t, what in sorted(items)]


# --- the whole explanation -----------------------------------------------------------------

def explain(s: Scan, target: str) -> dict:
    process_id = target.partition("/")[2]
    (cid,) = s.ids  # the scan was opened on one selected container
    record = s.root.read(cid)
    facts = s.facts(record)
    judged = s.judge(record, facts)
    processes = [p for p in record.processes if not process_id or p.id == process_id]
    if process_id and not processes:
        names = ", ".join(printable(p.id) for p in record.processes) or "none"
        raise ExplainError(f"container {printable(cid)} has no process {printable(process_id)!r} (it has: {names})")
    root_fd = os.open(s.root.real, _DIR_FLAGS)
    try:
        cfd = os.open(cid, _DIR_FLAGS, dir_fd=root_fd)
        try:
            files = {} if process_id else {record.rel: list_dir(cfd, record.rel)}
            logs = {}
            for p in processes:
                try:
                    pfd = os.open(p.id, _DIR_FLAGS, dir_fd=cfd)
                except OSError:
                    continue
                try:
                    files[p.rel] = list_dir(pfd, p.rel)
                    logs[p.id] = {name: parse_log_objects(_read_file(pfd, name, p.rel) or b"")
                                  for name in ("log.json", "shim-log.json")}
                finally:
                    os.close(pfd)
        finally:
            os.close(cfd)
        events = container_events(root_fd, cid)
    finally:
        os.close(root_fd)
    judged_by_id = {p.id: p for p in judged.processes}
    out_processes = []
    for p in processes:
        j = judged_by_id[p.id]
        prediction = (predict_process(p, facts[p.id], s.host_facts) if p.spec.containerd_decodes
                      else None)
        out_processes.append({
            "id": json_text(p.id), "verdict": j.verdict, "exit_status": j.exit_status,
            "exit_status_source": j.exit_status_source,
            "parsed": parsed_summary(p),
            "evidence": evidence(p, facts[p.id], s.host_facts, s.host),
            "logs": logs.get(p.id, {}),
            "containerd_would": j.containerd_would,
            "containerd_why": prediction.why if prediction else "its process.json cannot be decoded",
            "findings": [{"code": f.code, "severity": f.severity, "message": f.message, "path": f.path}
                         for f in j.findings],
        })
    plan = [a for a in plan_repair([judged], Options()) if not process_id or a.process in (None, process_id)]
    return {
        "schema": SCHEMA, "root": json_text(s.root.path), "container": json_text(cid),
        "host": s.host_json(),
        "files": {json_text(rel): [{**e, "name": json_text(e["name"]), "mtime": iso(e.get("mtime"))}
                                   for e in entries] for rel, entries in files.items()},
        "processes": out_processes,
        "events": events,
        "timeline": timeline(record, files, s.host_facts, judged, events),
        "containerd_would": judged.containerd_would,
        "container_findings": [{"code": f.code, "severity": f.severity, "message": f.message} for f in judged.findings],
        "repair_would": [{"process": None if a.process is None else json_text(a.process), "action": a.kind, "value": a.value, "reason": a.reason} for a in plan],
    }


def render_text(doc: dict, out: BinaryIO) -> None:
    lines = [f"container {printable(doc['container'])}", f"root {printable(doc['root'])}", ""]
    lines.append("files:")
    for rel, entries in doc["files"].items():
        lines.append(f"  {printable(rel)}/")
        for e in entries:
            size = f"{e['size']} B" if e.get("size") is not None and e["type"] == "file" else ""
            target = f" -> {printable(e['target'])}" if e.get("target") else ""
            lines.append(f"    {printable(e['name']):<16} {e['type']:<8} {size:>9}  {e.get('mtime') or ''}{target}")
    for p in doc["processes"]:
        lines += ["", f"process {printable(p['id'])}: {p['verdict']}"
                  + (f" (exit status {p['exit_status']}, from {p['exit_status_source']})" if p["exit_status"] is not None else "")]
        lines.append("  read from its files:")
        lines += [f"    {name:<12} {printable(what)}" for name, what in p["parsed"].items()]
        ev = p["evidence"]
        lines.append("  how the verdict was reached:")
        for step in ev["steps"]:
            lines.append(f"    - {step['check']}: {step['decided'] or 'no'}")
            lines += [f"        {printable(w)}" for w in step["why"]]
        now = ev["proc_now"]
        lines.append(f"  recorded: pid {ev['recorded']['pid']}, start tick {ev['recorded']['start_ticks']}"
                     + (f" (pid from {ev['pid_source']})" if ev["pid_source"] == "shim-child" else ""))
        lines.append("  /proc now: " + (f"state {now['state']}, ppid {now['ppid']}, comm {printable(now['comm'])!r}, "
                                        f"start tick {now['start_ticks']} ({now['started']}); identity {ev['identity']}"
                                        if now else "nothing (gone, or not read)"))
        if ev["parent"]:
            par = ev["parent"]
            lines.append(f"  parent: pid {par['pid']} ({printable(par['comm'])!r}), "
                         f"{'its shim' if par['is_its_shim'] else 'NOT its shim'}; argv "
                         f"{printable(' '.join(par['argv'] or []))!r}, cwd {printable(par['cwd'] or '?')!r}")
        lines.append(f"  shim: {ev['shim']['state']}" + (f", pid {ev['shim']['pid']}" if ev["shim"]["pid"] else ""))
        for name, entries in p["logs"].items():
            if entries:
                lines.append(f"  {name}:")
                lines += ["    " + printable(" ".join(f"{k}={v}" for k, v in e.items())) for e in entries]
        lines.append(f"  containerd 0.2.9 would: {p['containerd_would'] or '?'}: {printable(p['containerd_why'])}")
        if p["findings"]:
            lines.append("  findings:")
            lines += [f"    {f['code']} {f['severity']} {printable(f['message'])}" for f in p["findings"]]
    lines += ["", f"containerd 0.2.9 would, for the container: {doc['containerd_would'] or '?'}"]
    lines += [f"  {f['code']} {f['severity']} {printable(f['message'])}" for f in doc["container_findings"]]
    lines += ["", "recover repair would:"]
    lines += [f"  {printable(a['process'] or '(container)')}: {a['action']} {a['value'] or ''} - {printable(a['reason'])}"
              for a in doc["repair_would"]] or ["  nothing"]
    if doc["events"]:
        lines += ["", "events.log:"]
        lines += ["  " + printable(" ".join(f"{k}={v}" for k, v in e.items())) for e in doc["events"]]
    lines += ["", "timeline:"]
    lines += [f"  {t['time']}  {printable(t['what'])}" for t in doc["timeline"]]
    out.write(("\n".join(lines) + "\n").encode("utf-8", "backslashreplace"))


def run_explain(out: BinaryIO, root: str, target: str, *, proc_root: str, offline: bool, fmt: str) -> None:
    cid_prefix = target.partition("/")[0]
    try:
        s = Scan(root, proc_root=proc_root, offline=offline, select=[cid_prefix])
    except (SelectionError, RootError) as e:
        raise ExplainError(str(e)) from None
    with s:
        doc = explain(s, target)
    if fmt == "json":
        out.write(orjson.dumps(doc) + b"\n")
    else:
        render_text(doc, out)

