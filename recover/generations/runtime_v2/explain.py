"""What `recover explain` says of a containerd 1.x/2.x task: its bundle, each file as it was read
(and which version reads it), runc's state and CRI's checkpoint, runc's log, and the task's shim as
the restore sees it.  The shared part is recover/explain.py's."""

from __future__ import annotations

import json

from ...explain import ExplainedFiles, file_rows, list_dir, read_log, told
from ...fsread import dir_below, json_text, printable
from ...host import ProcessFacts
from ...judge import ContainerJudgement, ProcessJudgement
from ...records import ContainerRecord, ProcessRecord
from ...scan import Scan
from ...verdicts import HostFacts, lives_under_its_shim


def dir_of(record: ContainerRecord, p: ProcessRecord | None = None) -> str:
    """Where a task's files are, relative to the root, names exact: one bundle for the whole task."""
    return "/".join(json_text(x) for x in (record.rel.split("/", 1)[0], record.namespace or "", record.id))


def describe_pid_file(p: ProcessRecord) -> dict[str, str]:
    """What a task's process's pid file was read as, with its start ticks."""
    pid = f"pid {p.pid}" if p.pid is not None else "no usable pid"
    start = (f"start tick {p.start} from runc's state" if p.start_source == "runc-state"
             else "no start ticks recorded (an exec): the pid file's mtime decides its identity")
    return {"pid file": f"{pid}; {start}"}


def files_of(s: Scan, record: ContainerRecord, processes: list[ProcessRecord], process_id: str | None
             ) -> ExplainedFiles:
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
        return ExplainedFiles([{"dir": dir_of(record), "entries": [], "error": e.strerror}], {}, [], None)
    parsed = {p.rel.rsplit("/", 1)[-1]: describe_pid_file(p)["pid file"] for p in record.processes}
    parsed.update(_describe_task_files(t, log))
    findings = list(record.findings) + [f for p in record.processes for f in p.findings]
    rows = file_rows(entries, parsed, findings, record.rel, ("init.pid", "address"))
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
    return ExplainedFiles([{"dir": dir_of(record), "entries": rows + extra}], {p.id: log for p in record.processes},
                          [], None)


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


def task_lines(task: dict) -> list[str]:
    """A runtime-v2 task's shim, runc state and CRI checkpoint, as the restore sees them."""
    P = printable
    shim = task["shim"]
    lines = [f"  shim: {told(shim['state'], 'not judged')}" + told(shim["pid"], "", ", pid {}")
             + f"; address {P(shim['address']) if shim['address'] else '(' + P(shim['address_problem'] or '?') + ')'}"
             + f"; socket {told(shim['socket'] and P(shim['socket']), 'none')} ({shim['socket_state']})"]
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


def containerd_reason(p: ProcessRecord, j: ProcessJudgement, facts: ProcessFacts, host: HostFacts,
                      judged: ContainerJudgement) -> str:
    return j.containerd_why  # the task's prediction says it


class Explainer:
    """recover/explain.py's questions, answered for a containerd 1.x/2.x state dir."""

    written = {"address": "address written", "bootstrap.json": "bootstrap.json written",
               "config.json": "config.json written"}
    files = staticmethod(files_of)
    dir_of = staticmethod(dir_of)
    describe_process = staticmethod(describe_pid_file)
    containerd_reason = staticmethod(containerd_reason)
    task_lines = staticmethod(task_lines)

    def why_exit(self, rec: ProcessRecord, facts: ProcessFacts, host: HostFacts) -> str:
        """The verdict table's first check: only CRI's checkpoint records an exit on disk."""
        if rec.exit_status is None:
            return "no exit recorded on disk (a runtime-v2 shim holds its processes' statuses in memory)"
        alive = " but the recorded process lives under its own shim" if lives_under_its_shim(rec, facts, host) else ""
        return f"{rec.exit_source} holds {rec.exit_status}{alive}"

    def tail_lines(self, doc: dict) -> list[str]:
        return []  # a task has no events.log


EXPLAINER = Explainer()
