"""Renderers: a scan to table, json or jsonl.  One registry; adding a format is one function.

Renderers write bytes to a binary stream and never print anything else.  json and jsonl write
each container as it is judged, so memory stays flat however large the root.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO

import orjson

from .judge import ContainerJudgement, ProcessJudgement
from .fsread import json_safe, json_text, printable
from .rules import Finding
from .scan import Scan
from .verdicts import VERDICTS

if TYPE_CHECKING:  # a scan needs neither: they load with the commands that use them
    from .check import CheckReport, Gate, Located
    from .repair import Action

SCHEMA = "recover.scan/1"


class ScanFormat(str, enum.Enum):
    table = "table"
    json = "json"
    jsonl = "jsonl"
    prometheus = "prometheus"


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
    """SPEC §5's container; a runtime-v2 task adds its namespace and the layout's own fields
    (sandbox, its shim's pid, state and socket, runc's state, CRI's checkpoint and cri_would)."""
    out = {
        "id": json_text(c.id), "bundle": json_text(c.bundle), "runtime": json_text(c.runtime),
        "shim": json_text(c.shim), "labels": [json_text(x) for x in c.labels],
        "containerd_would": c.containerd_would,
        "processes": [process_json(p) for p in c.processes],
        "findings": [finding_json(f) for f in c.findings],
    }
    if c.namespace is not None:
        out["namespace"] = json_text(c.namespace)
    out.update(json_safe(dict(c.extra)))
    return out


def layout_json(scan: Scan) -> dict:
    """Which reader read the root, what it looked like, and which daemon's restore is predicted."""
    c = scan.classification
    return {"layout": scan.layout.name, "daemon": scan.layout.daemon,
            "classified_as": {"kind": c.kind, "evidence": json_text(c.evidence)}}


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
                          "started": o.started, "age_s": _age(o.started),
                          "reason": o.reason} for o in scan.orphan_shims],
        "findings": [finding_json(f) for f in scan.findings],
        "summary": summary_json(scan),
    }


def render_json(scan: Scan, out: BinaryIO) -> None:
    head = orjson.dumps({"schema": SCHEMA, "root": json_text(scan.root.path), **layout_json(scan),
                         "host": scan.host_json()})
    out.write(head[:-1] + b',"containers":[')
    for i, c in enumerate(scan.encoded(_container_bytes)):
        out.write(b"," + c if i else c)
    out.write(b"]," + orjson.dumps(_tail_json(scan))[1:] + b"\n")


def _container_bytes(c: ContainerJudgement) -> bytes:
    return orjson.dumps(container_json(c))


def _container_line(c: ContainerJudgement) -> bytes:
    return orjson.dumps(container_json(c), option=orjson.OPT_APPEND_NEWLINE)


def render_jsonl(scan: Scan, out: BinaryIO) -> None:
    for line in scan.encoded(_container_line):
        out.write(line)
    tail = _tail_json(scan)
    if tail["orphan_shims"]:
        out.write(orjson.dumps({"orphan_shims": tail["orphan_shims"]}) + b"\n")
    out.write(orjson.dumps({"summary": tail["summary"], "findings": tail["findings"], **layout_json(scan)}) + b"\n")


TABLE_HEADERS = ("CONTAINER", "PROCESS", "PID", "VERDICT", "EXIT", "SHIM", "CONTAINERD WOULD", "FINDINGS")


def short_key(c: ContainerJudgement) -> str:
    """A container as the table names it: 12 characters of its id (after its namespace)."""
    short = printable(c.id)[:12]
    return short if c.namespace is None else f"{printable(c.namespace)}/{short}"


def table_rows(containers: list[ContainerJudgement]) -> list[tuple[str, ...]]:
    rows = []
    for c in containers:
        for p in c.processes:
            shim = "-" if p.shim_state is None else (p.shim_state if p.shim_pid is None else f"{p.shim_state} {p.shim_pid}")
            rows.append((short_key(c), printable(p.id), _dash(p.pid), p.verdict,
                         _dash(p.exit_status), shim, p.containerd_would or "?", str(len(p.findings))))
        if not c.processes:
            rows.append((short_key(c), "-", "-", "-", "-", "-", c.containerd_would or "?",
                         str(len(c.findings))))
    return rows


def summary_line(scan: Scan) -> str:
    s = scan.summary
    counts = ", ".join(f"{v} {s.verdicts[v]}" for v in VERDICTS if s.verdicts[v]) or "nothing to judge"
    return f"{s.processes} process(es) in {s.containers} container(s): {counts}"


def finding_line(f: Finding) -> str:
    return f"{f.code} {f.severity:<7} {f.path + ': ' if f.path else ''}{f.message}"


def render_table(scan: Scan, out: BinaryIO) -> None:
    from tabulate import tabulate  # only the table needs it: keeps json start-up lean

    containers = list(scan.containers())
    lines = [tabulate(table_rows(containers), headers=TABLE_HEADERS, tablefmt="simple",
                      disable_numparse=True) if containers else "(no containers)", "", summary_line(scan)]
    for o in scan.orphan_shims:
        age = _age(o.started)
        namespace, _, cid = o.container.rpartition("/")  # a runtime-v2 key is namespace/id
        watched = (f"{printable(namespace)}/" if namespace else "") + printable(cid)[:12] + (
            f"/{printable(o.process)}" if o.process is not None else "")
        lines.append(f"orphan shim: pid {o.pid} {watched} "
                     f"({o.state}{f', {age:.0f} s old' if age is not None else ''}): {o.reason}")
    every = [f for c in containers for f in (*c.findings, *(f for p in c.processes for f in p.findings))]
    every.extend(scan.findings)
    if every:
        lines += ["", "findings:"] + ["  " + finding_line(f) for f in every]
    out.write(("\n".join(lines) + "\n").encode("utf-8", "backslashreplace"))


# --- check ----------------------------------------------------------------------------------

class CheckFormat(str, enum.Enum):
    text = "text"
    json = "json"
    jsonl = "jsonl"
    junit = "junit"
    github = "github"
    sarif = "sarif"
    prometheus = "prometheus"


def located_json(f: Located, gate: Gate) -> dict:
    return {"code": f.code, "severity": f.severity,
            "container": None if f.container is None else json_text(f.container),
            "process": None if f.process is None else json_text(f.process),
            "path": f.path, "message": f.message, "fingerprint": f.fingerprint,
            "baselined": f.fingerprint in gate.baseline, "fails": gate.fails(f)}


def check_text(r: CheckReport, out: BinaryIO) -> None:
    lines = [f"{f.code} {f.severity} {printable(f.subject)}: {f.message}" for f in r.reported]
    s = r.summary()
    sev = ", ".join(f"{n} {k}" for k, n in s["by_severity"].items())
    verdict = "passed" if r.passed else "FAILED"
    lines.append(f"{verdict}: {s['failing']} finding(s) at or above {r.gate.fail_on} fail the gate "
                 f"({s['findings']} reported: {sev}; {s['baselined']} in the baseline)")
    out.write(("\n".join(lines) + "\n").encode("utf-8", "backslashreplace"))


def check_json(r: CheckReport, out: BinaryIO) -> None:
    out.write(orjson.dumps({"schema": "recover.check/1", "root": json_text(r.root),
                            "findings": [located_json(f, r.gate) for f in r.reported],
                            "summary": r.summary()}) + b"\n")


def check_jsonl(r: CheckReport, out: BinaryIO) -> None:
    for f in r.reported:
        out.write(orjson.dumps(located_json(f, r.gate)) + b"\n")
    out.write(orjson.dumps({"summary": r.summary()}) + b"\n")


def check_junit(r: CheckReport, out: BinaryIO) -> None:
    """One test case per container (its own findings) and per process; `failures` counts the
    test cases that fail, as JUnit readers expect."""
    import xml.etree.ElementTree as ET

    by_subject: dict[str, list[Located]] = {}
    for f in r.failing:
        by_subject.setdefault(f.subject, []).append(f)
    subjects = list(r.subjects) + (["(root)"] if "(root)" in by_subject else [])
    suite = ET.Element("testsuite", name="recover", tests=str(len(subjects)),
                       failures=str(sum(1 for s in subjects if s in by_subject)), errors="0")
    for subject in subjects:
        container, _, process = subject.partition("/")
        case = ET.SubElement(suite, "testcase", classname=printable(container), name=printable(process or container))
        for f in by_subject.get(subject, []):
            failure = ET.SubElement(case, "failure", message=f"{f.code}: {printable(f.message)}", type=f.code)
            failure.text = f"{f.code} {f.severity} {printable(f.path or subject)}: {printable(f.message)}"
    out.write(ET.tostring(suite, encoding="utf-8", xml_declaration=True) + b"\n")


def _gh_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _gh_property(text: str) -> str:
    return _gh_data(text).replace(":", "%3A").replace(",", "%2C")


GITHUB_LEVEL = {"error": "error", "warning": "warning", "info": "notice"}


def check_github(r: CheckReport, out: BinaryIO) -> None:
    lines = []
    for f in r.reported:
        props = [f"title={_gh_property(f.code)}"]
        if f.path:
            props.insert(0, f"file={_gh_property(f.path)}")
        lines.append(f"::{GITHUB_LEVEL[f.severity]} {','.join(props)}::{_gh_data(f.message)}")
    out.write("".join(x + "\n" for x in lines).encode("utf-8", "backslashreplace"))


SARIF_LEVEL = {"error": "error", "warning": "warning", "info": "note"}


def check_sarif(r: CheckReport, out: BinaryIO) -> None:
    from urllib.parse import quote

    from . import __version__
    from .rules import RULES

    codes = sorted(RULES)
    rules = [{"id": c, "name": RULES[c].title, "shortDescription": {"text": RULES[c].title},
              "help": {"text": RULES[c].action},
              "defaultConfiguration": {"level": SARIF_LEVEL[RULES[c].severity]}} for c in codes]
    results = []
    for f in r.reported:
        result = {"ruleId": f.code, "ruleIndex": codes.index(f.code), "level": SARIF_LEVEL[f.severity],
                  "message": {"text": f.message},
                  "partialFingerprints": {"recoverFingerprint/v1": f.fingerprint}}
        if f.path:
            result["locations"] = [{"physicalLocation": {"artifactLocation": {
                "uri": quote(f.path.encode("utf-8", "backslashreplace")), "uriBaseId": "ROOT"}}}]
        if f.fingerprint in r.gate.baseline:
            result["baselineState"] = "unchanged"
        results.append(result)
    root_uri = "file://" + quote(os.path.realpath(r.root).encode("utf-8", "backslashreplace")).rstrip("/") + "/"
    doc = {"$schema": "https://json.schemastore.org/sarif-2.1.0.json", "version": "2.1.0",
           "runs": [{"tool": {"driver": {"name": "recover", "version": __version__, "rules": rules}},
                     "originalUriBaseIds": {"ROOT": {"uri": root_uri}},
                     "results": results}]}
    out.write(orjson.dumps(doc) + b"\n")


def _prom_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus_text(root: str, verdicts: dict[str, int], findings: dict[tuple[str, str], int],
                    timestamp: float) -> bytes:
    """node_exporter textfile metrics: HELP and TYPE once per metric, then its samples."""
    r = _prom_label(root)
    lines = ["# HELP recover_processes Processes in the containerd state root, by verdict.",
             "# TYPE recover_processes gauge"]
    lines += [f'recover_processes{{root="{r}",verdict="{v}"}} {verdicts.get(v, 0)}' for v in VERDICTS]
    lines += ["# HELP recover_findings Findings of the last scan, by code and severity.",
              "# TYPE recover_findings gauge"]
    lines += [f'recover_findings{{root="{r}",code="{code}",severity="{sev}"}} {n}'
              for (code, sev), n in sorted(findings.items())]
    lines += ["# HELP recover_scan_timestamp_seconds When the scan ran (Unix time).",
              "# TYPE recover_scan_timestamp_seconds gauge",
              f'recover_scan_timestamp_seconds{{root="{r}"}} {timestamp:.3f}']
    return ("\n".join(lines) + "\n").encode("utf-8", "backslashreplace")


def check_prometheus(r: CheckReport, out: BinaryIO) -> None:
    counts: dict[tuple[str, str], int] = {}
    for f in r.reported:
        counts[(f.code, f.severity)] = counts.get((f.code, f.severity), 0) + 1
    out.write(prometheus_text(r.root, r.verdicts, counts, r.timestamp))


def render_prometheus(scan: Scan, out: BinaryIO) -> None:
    import time

    from .check import locate

    counts: dict[tuple[str, str], int] = {}
    for c in scan.containers():
        for f in locate([c], ()):
            counts[(f.code, f.severity)] = counts.get((f.code, f.severity), 0) + 1
    for f in scan.findings:
        counts[(f.code, f.severity)] = counts.get((f.code, f.severity), 0) + 1
    out.write(prometheus_text(scan.root.path, dict(scan.summary.verdicts), counts, time.time()))


CHECK_RENDERERS: dict[CheckFormat, Callable[[CheckReport, BinaryIO], None]] = {
    CheckFormat.text: check_text,
    CheckFormat.json: check_json,
    CheckFormat.jsonl: check_jsonl,
    CheckFormat.junit: check_junit,
    CheckFormat.github: check_github,
    CheckFormat.sarif: check_sarif,
    CheckFormat.prometheus: check_prometheus,
}


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
    ScanFormat.prometheus: render_prometheus,
}


def _age(started: float | None) -> float | None:
    import time

    return None if started is None else round(max(0.0, time.time() - started), 1)


def _dash(value: object) -> str:
    return "-" if value is None else str(value)
