"""What `recover explain` says of a containerd 0.2 root's files: the container dir and its
process dirs, each file as it was read, their logs, the container's lines of events.log, and
containerd 0.2.9's own reasons.  The shared part (the verdict's steps, /proc, the timeline, the
rendering) is recover/explain.py's."""

from __future__ import annotations

import json
import os
import stat

from ...explain import (
    ExplainedFiles,
    ExplainError,
    file_rows,
    list_dir,
    plain,
    read_log,
    shown,
)
from ...fsread import (
    MAX_FILE_BYTES,
    OPEN_DIR,
    RECOVER_TEMP_PREFIX,
    json_text,
    printable,
)
from ...host import ProcessFacts
from ...judge import ContainerJudgement, ProcessJudgement
from ...records import ContainerRecord, ProcessRecord
from ...scan import Scan
from ...verdicts import HostFacts, lives_under_its_shim
from . import files as layout
from .predict import predict_process

_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
EVENTS_TAIL = MAX_FILE_BYTES  # events.log can grow: read its last MiB
LOG_FILES = ("log.json", "shim-log.json")  # runc's, and the shim's


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
        spec_text = (f"args {shown(args) if args is not None else '(none)'}, exec {shown(spec.get('exec'))}, "
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


def _describe_state(record: ContainerRecord) -> str:
    state = record.files.state
    if state.value is None:
        return "not decoded (see the findings)"
    v = state.value
    return (f"bundle {shown(v.get('bundle'))}, runtime {shown(v.get('runtime'))}, shim {shown(v.get('shim'))}; "
            f"containerd 0.2.9 {'decodes' if state.containerd_decodes else 'cannot decode'} it")


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
    if name.startswith(RECOVER_TEMP_PREFIX):
        return "left over by an interrupted `recover repair`"
    if kind == "dir":
        return "a dir inside a process dir: containerd ignores it"
    return None


def dir_of(record: ContainerRecord, p: ProcessRecord | None = None) -> str:
    """Where a container's (or a process's) files are, relative to the root, names exact."""
    return json_text(record.id) + ("" if p is None else f"/{json_text(p.id)}")


def files_of(s: Scan, record: ContainerRecord, processes: list[ProcessRecord], process_id: str | None
             ) -> ExplainedFiles:
    """A 0.2 container's dir and its process dirs, their logs, and its lines of events.log."""
    cid = record.id
    cdir = dir_of(record)
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
                files.append({"dir": cdir, "entries": file_rows(
                    list_dir(cfd), {layout.STATE_FILE: _describe_state(record)}, state_findings, record.rel,
                    (layout.STATE_FILE,))})
                for e in files[-1]["entries"]:
                    if e["type"] == "dir":
                        e.setdefault("parsed", "a process dir")
                    elif e["name"] != layout.STATE_FILE and e["type"] != "missing":
                        e.setdefault("parsed", "not used by containerd")
            for p in processes:
                pdir = dir_of(record, p)
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
                rows = file_rows(entries, describe_process_files(p), list(p.findings), p.rel, layout.PROCESS_FILES)
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
    return ExplainedFiles(files, logs, events, events_note)


def containerd_reason(p: ProcessRecord, j: ProcessJudgement, facts: ProcessFacts, host: HostFacts,
                      judged: ContainerJudgement) -> str:
    """Why the daemon would do what the judge predicted (containerd 0.2.9's own words where it has them)."""
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


class Explainer:
    """recover/explain.py's questions, answered for a containerd 0.2 root."""

    written = {layout.STATE_FILE: "state.json written", layout.PROCESS_FILE: "process.json written",
               layout.PID_FILE: "pid written", layout.STARTTIME_FILE: "starttime written",
               layout.EXIT_STATUS_FILE: "exitStatus written"}
    files = staticmethod(files_of)
    dir_of = staticmethod(dir_of)
    describe_process = staticmethod(describe_process_files)
    containerd_reason = staticmethod(containerd_reason)

    def why_exit(self, rec: ProcessRecord, facts: ProcessFacts, host: HostFacts) -> str:
        """The verdict table's first check, said of exitStatus."""
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


    def task_lines(self, task: dict) -> list[str]:
        return []  # a 0.2 container has no task-wide state beside its processes'

    def tail_lines(self, doc: dict) -> list[str]:
        """The container's lines of events.log."""
        lines = ["", "== events.log (this container)" + (f": {doc['events_note']}" if doc["events_note"] else "")]
        return lines + (["  " + printable(" ".join(f"{k}={shown(v)}" for k, v in e.items())) for e in doc["events"]]
                        or ["  none"])


EXPLAINER = Explainer()
