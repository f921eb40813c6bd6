"""Renderers: a scan to table, json or jsonl.  One registry; adding a format is one function.

Renderers write bytes to a binary stream and never print anything else.  json and jsonl write
each container as it is judged, so memory stays flat however large the root.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import BinaryIO

import orjson

from .judge import VERDICTS, ContainerJudgement, ProcessJudgement
from .repair import Action
from .root import printable
from .rules import Finding
from .scan import Scan

SCHEMA = "recover.scan/1"


class ScanFormat(str, enum.Enum):
    table = "table"
    json = "json"
    jsonl = "jsonl"


def json_text(name: str) -> str:
    """A name for JSON: exact, except bytes that are not UTF-8, which JSON cannot hold (\\xNN)."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def finding_json(f: Finding) -> dict:
    out = {"code": f.code, "severity": f.severity, "message": f.message}
    if f.path is not None:
        out["path"] = f.path
    return out


def process_json(p: ProcessJudgement) -> dict:
    return {
        "id": json_text(p.id), "exec": p.exec, "verdict": p.verdict, "pid": p.pid,
        "recorded_start": p.recorded_start, "observed_start": p.observed_start,
        "identity": p.identity, "ppid": p.ppid,
        "shim": None if p.shim_state is None else {"pid": p.shim_pid, "state": p.shim_state},
        "exit_status": p.exit_status, "exit_status_source": p.exit_status_source,
        "containerd_would": p.containerd_would,
        "findings": [finding_json(f) for f in p.findings],
    }


def container_json(c: ContainerJudgement) -> dict:
    return {
        "id": json_text(c.id), "bundle": json_text(c.bundle), "runtime": json_text(c.runtime),
        "shim": json_text(c.shim), "labels": [json_text(x) for x in c.labels],
        "containerd_would": c.containerd_would,
        "processes": [process_json(p) for p in c.processes],
        "findings": [finding_json(f) for f in c.findings],
    }


def summary_json(scan: Scan) -> dict:
    s = scan.summary
    return {"containers": s.containers, "processes": s.processes,
            "verdicts": {v: s.verdicts[v] for v in VERDICTS if s.verdicts[v]},
            "containerd_would": dict(sorted(s.containerd_would.items())),
            "findings": {sev: s.severities[sev] for sev in ("error", "warning", "info") if s.severities[sev]}}


def _tail_json(scan: Scan) -> dict:
    return {
        "orphan_shims": [{"pid": o.pid, "container": json_text(o.container),
                          "process": json_text(o.process) if o.process is not None else None,
                          "cwd": json_text(o.cwd) if o.cwd else None, "state": o.state,
                          "reason": o.reason} for o in scan.orphan_shims],
        "findings": [finding_json(f) for f in scan.findings],
        "summary": summary_json(scan),
    }


def render_json(scan: Scan, out: BinaryIO) -> None:
    head = orjson.dumps({"schema": SCHEMA, "root": scan.root.path, "host": scan.host_json()})
    out.write(head[:-1] + b',"containers":[')
    for i, c in enumerate(scan.containers()):
        out.write((b"," if i else b"") + orjson.dumps(container_json(c)))
    out.write(b"]," + orjson.dumps(_tail_json(scan))[1:] + b"\n")


def render_jsonl(scan: Scan, out: BinaryIO) -> None:
    for c in scan.containers():
        out.write(orjson.dumps(container_json(c)) + b"\n")
    tail = _tail_json(scan)
    if tail["orphan_shims"]:
        out.write(orjson.dumps({"orphan_shims": tail["orphan_shims"]}) + b"\n")
    out.write(orjson.dumps({"summary": tail["summary"], "findings": tail["findings"]}) + b"\n")


TABLE_HEADERS = ("CONTAINER", "PROCESS", "PID", "VERDICT", "EXIT", "SHIM", "CONTAINERD WOULD", "FINDINGS")


def table_rows(containers: list[ContainerJudgement]) -> list[tuple[str, ...]]:
    rows = []
    for c in containers:
        for p in c.processes:
            shim = "-" if p.shim_state is None else (p.shim_state if p.shim_pid is None else f"{p.shim_state} {p.shim_pid}")
            rows.append((printable(c.id)[:12], printable(p.id), _dash(p.pid), p.verdict,
                         _dash(p.exit_status), shim, p.containerd_would or "?", str(len(p.findings))))
        if not c.processes:
            rows.append((printable(c.id)[:12], "-", "-", "-", "-", "-", c.containerd_would or "?",
                         str(len(c.findings))))
    return rows


def summary_line(scan: Scan) -> str:
    s = scan.summary
    counts = ", ".join(f"{v} {s.verdicts[v]}" for v in VERDICTS if s.verdicts[v]) or "nothing to judge"
    return f"{s.processes} process(es) in {s.containers} container(s): {counts}"


def finding_line(f: Finding) -> str:
    where = f"{f.path}: " if f.path and not f.message.startswith(f.path) else ""
    return f"{f.code} {f.severity:<7} {where}{f.message}"


def render_table(scan: Scan, out: BinaryIO) -> None:
    from tabulate import tabulate  # only the table needs it: keeps json start-up lean

    containers = list(scan.containers())
    lines = [tabulate(table_rows(containers), headers=TABLE_HEADERS, tablefmt="simple",
                      disable_numparse=True) if containers else "(no containers)", "", summary_line(scan)]
    for o in scan.orphan_shims:
        lines.append(f"orphan shim: pid {o.pid} {printable(o.container)[:12]}/{printable(o.process or '?')} "
                     f"({o.state}): {o.reason}")
    every = [f for c in containers for f in (*c.findings, *(f for p in c.processes for f in p.findings))]
    every.extend(scan.findings)
    if every:
        lines += ["", "findings:"] + ["  " + finding_line(f) for f in every]
    out.write(("\n".join(lines) + "\n").encode("utf-8", "backslashreplace"))


# --- repair -------------------------------------------------------------------------------

class RepairFormat(str, enum.Enum):
    table = "table"
    json = "json"


REPAIR_HEADERS = ("CONTAINER", "PROCESS", "ACTION", "VALUE", "RESULT", "REASON")


def action_json(a: Action) -> dict:
    return {"container": json_text(a.container), "process": None if a.process is None else json_text(a.process),
            "action": a.kind, "value": a.value, "result": a.result, "reason": a.reason,
            "detail": a.detail or None, "pid": a.pid}


def repair_summary(actions: list[Action]) -> dict:
    counts: dict[str, int] = {}
    for a in actions:
        counts[a.result] = counts.get(a.result, 0) + 1
    return dict(sorted(counts.items()))


def render_repair_table(actions: list[Action], meta: dict, out: BinaryIO) -> None:
    from tabulate import tabulate

    rows = [(printable(a.container)[:12], printable(a.process or "-"), a.kind, a.value or "-", a.result,
             a.reason + (f" [{a.detail}]" if a.detail else "")) for a in actions]
    lines = [tabulate(rows, headers=REPAIR_HEADERS, tablefmt="simple", disable_numparse=True,
                      maxcolwidths=[None, None, None, None, None, 70]) if rows else "(nothing to repair)", ""]
    counts = ", ".join(f"{k} {v}" for k, v in repair_summary(actions).items()) or "no actions"
    mode = f"applied; journal: {meta['journal']}" if meta["apply"] else "dry run: nothing was changed (add --apply)"
    lines.append(f"{len(actions)} action(s): {counts}. {mode}")
    out.write(("\n".join(lines) + "\n").encode("utf-8", "backslashreplace"))


def render_repair_json(actions: list[Action], meta: dict, out: BinaryIO) -> None:
    out.write(orjson.dumps({"schema": "recover.repair/1", **meta, "actions": [action_json(a) for a in actions],
                            "summary": repair_summary(actions)}) + b"\n")


REPAIR_RENDERERS: dict[RepairFormat, Callable[[list[Action], dict, BinaryIO], None]] = {
    RepairFormat.table: render_repair_table,
    RepairFormat.json: render_repair_json,
}


RENDERERS: dict[ScanFormat, Callable[[Scan, BinaryIO], None]] = {
    ScanFormat.table: render_table,
    ScanFormat.json: render_json,
    ScanFormat.jsonl: render_jsonl,
}


def _dash(value: object) -> str:
    return "-" if value is None else str(value)
