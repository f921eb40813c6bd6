"""Renderers: a scan to text, json or jsonl.  One registry; adding a format is one function.

Renderers write bytes to a binary stream and never print anything else.  json and jsonl write
each container as it is judged, so memory stays flat however large the root.  Every renderer
takes a Display: the text ones fit their tables to its width and colour with it; the others
ignore it, so that machine output never changes with the terminal.
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, BinaryIO

import msgspec
import orjson

from .fsread import json_safe, json_text, printable, short_process
from .judge import ContainerJudgement, ProcessJudgement
from .rules import Finding, Rule
from .scan import Scan
from .value import Value
from .verdicts import VERDICTS

if TYPE_CHECKING:  # a scan needs neither: they load with the commands that use them
    from .check import CheckReport, Gate, Located

SCHEMA = "recover.scan/1"


class Display(Value):
    """Where text output goes: a width to fit tables to (None: never wrap) and whether to colour."""

    width: int | None = None
    colour: bool = False

    def paint(self, text: str, colour: str | None, bold: bool = False) -> str:
        if not self.colour or colour is None:
            return text
        from typer import style

        return style(text, fg=colour, bold=bold)


PLAIN = Display()

VERDICT_COLOUR = {"running": "green", "exited": None, "orphaned": "red", "zombie": "red",
                  "pid-reused": "red", "vanished": "red", "not-started": "yellow", "unknown": "yellow"}
SEVERITY_COLOUR = {"error": "red", "warning": "yellow", "info": "cyan"}
_GAP = 2  # tabulate's "simple" format puts two spaces between columns
_LONG_WORD = 16  # a word longer than this (a path, an id) may be broken to fit


def _words(text: str) -> list[str]:
    """The pieces textwrap keeps whole: split at spaces and after hyphens."""
    return [w for w in re.split(r"\s+|(?<=-)", text) if w]


def fit_columns(rows: Sequence[Sequence[str]], headers: Sequence[str], width: int | None,
                shrinkable: Sequence[int], caps: Sequence[int | None] | None = None) -> list[int | None]:
    """Each column's width (tabulate's maxcolwidths) for a table at most `width` wide.

    The columns in `shrinkable` share what the others leave, narrowest first, so that the widest
    give up the most; none is cut narrower than its longest word, in a cell (up to _LONG_WORD)
    or in its header: a table too wide for its terminal still beats words broken into pieces.
    A column wider than its cap always wraps.  Without a width, only the caps apply.
    """
    n = len(headers)
    caps = list(caps or [None] * n)
    natural = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    natural = [w if cap is None else min(w, max(cap, len(h))) for w, cap, h in zip(natural, caps, headers)]
    if width is None or sum(natural) + _GAP * (n - 1) <= width:
        return caps
    budget = width - _GAP * (n - 1) - sum(w for i, w in enumerate(natural) if i not in shrinkable)
    out = list(caps)
    left = sorted(shrinkable, key=lambda i: natural[i])
    while left:
        i = left.pop(0)
        floor = max([len(w) for w in _words(headers[i])]
                    + [min(len(w), _LONG_WORD) for r in rows for w in _words(r[i])])
        out[i] = max(floor, min(natural[i], budget // (len(left) + 1)))
        budget -= out[i]
    return out


def _table(rows: list[tuple[str, ...]], headers: Sequence[str], display: Display, shrinkable: Sequence[int],
           empty: str, caps: Sequence[int | None] | None = None,
           paint: dict[int, Callable[[str], str]] | None = None) -> str:
    """A tabulate "simple" table that fits display.width, or `empty` for no rows; columns in
    `paint` are coloured after their widths are known (they must not be shrinkable: escape codes
    are not text to wrap)."""
    if not rows:
        return empty
    import tabulate  # only tables need it: keeps json start-up lean

    widths = fit_columns(rows, headers, display.width, shrinkable, caps)
    if paint and display.colour:
        rows = [tuple(paint[i](cell) if i in paint else cell for i, cell in enumerate(r)) for r in rows]
    # A column as wide as its widest line, header included: tabulate's default makes it two wider
    # than its header (MIN_PADDING, a module setting), which only the gap between columns needs.
    padding, tabulate.MIN_PADDING = tabulate.MIN_PADDING, 0
    try:
        return tabulate.tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True,
                                 maxcolwidths=widths, maxheadercolwidths=widths)
    finally:
        tabulate.MIN_PADDING = padding


def _undisplayed(render: Callable[..., None]) -> Callable[..., None]:
    """A machine format, in a registry whose renderers take `display=`: the same bytes whatever
    the terminal."""
    return lambda *args, display=PLAIN: render(*args)


def short_id(key: str) -> str:
    """A container key as the table shows it: its id cut to 12 characters, after its namespace."""
    namespace, slash, cid = key.rpartition("/")
    return namespace + slash + cid[:12]


class ScanFormat(str, enum.Enum):
    text = "text"
    json = "json"
    jsonl = "jsonl"
    prometheus = "prometheus"

    @classmethod
    def _missing_(cls, value: object) -> ScanFormat | None:
        return cls.text if value == "table" else None  # its name before 0.2, still accepted


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
        "findings": p.findings,
    }


def container_json(c: ContainerJudgement) -> dict:
    """SPEC §5's container; a runtime-v2 task adds its namespace and the layout's own fields
    (sandbox, its shim's pid, state and socket, runc's state, CRI's checkpoint and cri_would).
    Its findings are Finding values, as _CONTAINER_JSON encodes them."""
    out = {
        "id": json_text(c.id), "bundle": json_text(c.bundle), "runtime": json_text(c.runtime),
        "shim": json_text(c.shim), "labels": [json_text(x) for x in c.labels],
        "containerd_would": c.containerd_would,
        "processes": [process_json(p) for p in c.processes],
        "findings": c.findings,
    }
    if c.namespace is not None:
        out["namespace"] = json_text(c.namespace)
    if c.extra:  # a runtime-v2 task's own fields (a 0.2 container has none)
        out.update(json_safe(dict(c.extra)))
    return out


def layout_json(scan: Scan) -> dict:
    """Which reader read the root, what it looked like, and which daemon's restore is predicted."""
    c = scan.classification
    return {"layout": scan.generation.name, "daemon": scan.daemon.name, "daemon_version": scan.daemon.json(),
            "classified_as": {"kind": c.kind, "evidence": json_text(c.evidence)},
            **(scan.beside.json() if scan.beside is not None else {})}


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
                          "started": None if o.started is None else round(o.started, 2), "age_s": _age(o.started),
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


# A scan's containers are encoded by msgspec: it writes each Finding value as the object
# finding_json makes (a path it has not is omitted) without a dict made for it, and writes what
# else a container holds (strings, integers, booleans, null) byte for byte as orjson does
# (tests/test_render.py); 6.8 -> 4.1 us a container of the bench.
_CONTAINER_JSON = msgspec.json.Encoder()


def _container_bytes(c: ContainerJudgement) -> bytes:
    return _CONTAINER_JSON.encode(container_json(c))


def _container_line(c: ContainerJudgement) -> bytes:
    return _CONTAINER_JSON.encode(container_json(c)) + b"\n"


def render_jsonl(scan: Scan, out: BinaryIO) -> None:
    for line in scan.encoded(_container_line):
        out.write(line)
    tail = _tail_json(scan)
    if tail["orphan_shims"]:
        out.write(orjson.dumps({"orphan_shims": tail["orphan_shims"]}) + b"\n")
    out.write(orjson.dumps({"summary": tail["summary"], "findings": tail["findings"], **layout_json(scan)}) + b"\n")


TABLE_HEADERS = ("CONTAINER", "PROCESS", "PID", "VERDICT", "EXIT", "SHIM", "CONTAINERD WOULD", "FINDINGS")


DOCKERD_HEADER = "DOCKERD WOULD"


def short_key(c: ContainerJudgement) -> str:
    """A container as the table names it: its Docker name, else 12 characters of its id (after its
    namespace)."""
    docker = c.extra.get("docker")
    if docker and docker.get("name"):
        return printable(docker["name"])
    return printable(short_id(c.key))


def _dockerd_cell(c: ContainerJudgement) -> str:
    docker = c.extra.get("docker")
    if not docker:
        return "-"
    would = docker["dockerd_would"] or "?"
    return would if docker["exit_code"] is None else f"{would} ({docker['exit_code']})"


def table_rows(containers: list[ContainerJudgement], dockerd: bool = False) -> list[tuple[str, ...]]:
    """The table's rows; with `dockerd`, a column of what dockerd would do after containerd."""
    rows = []
    for c in containers:
        tail = (_dockerd_cell(c),) if dockerd else ()
        for p in c.processes:
            shim = "-" if p.shim_state is None else (p.shim_state if p.shim_pid is None else f"{p.shim_state} {p.shim_pid}")
            rows.append((short_key(c), printable(short_process(p.id)), _dash(p.pid), p.verdict,
                         _dash(p.exit_status), shim, p.containerd_would or "?", *tail, str(len(p.findings))))
        if not c.processes:
            rows.append((short_key(c), "-", "-", "-", "-", "-", c.containerd_would or "?", *tail,
                         str(len(c.findings))))
    return rows


def summary_line(scan: Scan) -> str:
    s = scan.summary
    counts = ", ".join(f"{v} {s.verdicts[v]}" for v in VERDICTS if s.verdicts[v]) or "nothing to judge"
    return f"{s.processes} process(es) in {s.containers} container(s): {counts}"


def fitted(head: str, rest: str, severity: str, display: Display, indent: str = "", hang: str = "    ") -> str:
    """`head` (a finding's code and severity) then `rest`, wrapped at spaces to the display's width
    (never inside a word: a path or an id stays whole), continuation lines indented by `hang`; the
    severity in the head coloured once it is placed (escape codes take no width)."""
    import textwrap

    text = indent + head + rest
    lines = [text] if display.width is None else textwrap.wrap(
        text, display.width, initial_indent="", subsequent_indent=indent + hang, break_long_words=False,
        break_on_hyphens=False, drop_whitespace=True) or [text]
    if severity:
        lines[0] = lines[0].replace(severity, display.paint(severity, SEVERITY_COLOUR[severity.strip()]), 1)
    return "\n".join(lines)


def prose(text: str, display: Display, indent: str = "", hang: str = "    ") -> str:
    """Lines of prose (each may be long) wrapped to the display's width as findings are."""
    return "\n".join(fitted("", line, "", display, indent if line else "", hang) if line else ""
                     for line in text.split("\n"))


def finding_line(f: Finding, short_path: Callable[[str], str], display: Display = PLAIN, indent: str = "") -> str:
    """A finding as text output shows it, its path as its generation shortens it."""
    severity = f"{f.severity:<7}"
    return fitted(f"{f.code} {severity} ", f"{short_path(f.path) + ': ' if f.path else ''}{f.message}", severity,
                  display, indent)


def render_text(scan: Scan, out: BinaryIO, display: Display = PLAIN) -> None:
    containers = list(scan.containers())
    dockerd = scan.beside is not None and any("docker" in c.extra for c in containers)
    headers = TABLE_HEADERS[:-1] + ((DOCKERD_HEADER,) if dockerd else ()) + TABLE_HEADERS[-1:]
    verdict = headers.index("VERDICT")
    table = _table(table_rows(containers, dockerd), headers, display, empty="(no containers)",
                   shrinkable=[headers.index(h) for h in ("PROCESS", "SHIM", "CONTAINERD WOULD", DOCKERD_HEADER)
                               if h in headers],
                   paint={verdict: lambda v: display.paint(v, VERDICT_COLOUR.get(v))})
    lines = [table, "", fitted("", summary_line(scan), "", display)]
    if scan.beside is not None:
        lines += [fitted("", line, "", display) for line in scan.beside.text()]
    for o in scan.orphan_shims:
        age = _age(o.started)
        watched = printable(short_id(o.container)) + (f"/{printable(short_process(o.process))}"
                                                      if o.process is not None else "")
        lines.append(fitted("orphan shim: ", f"pid {o.pid} {watched} "
                            f"({o.state}{f', {age:.0f} s old' if age is not None else ''}): {o.reason}", "", display))
    every = [f for c in containers for f in (*c.findings, *(f for p in c.processes for f in p.findings))]
    every.extend(scan.findings)
    if every:
        lines += ["", "findings:"] + [finding_line(f, scan.generation.short_path, display, "  ") for f in every]
    out.write(("\n".join(lines) + "\n").encode("utf-8", "backslashreplace"))


# --- rules ----------------------------------------------------------------------------------

def render_rules(rules: list[Rule], out: BinaryIO, fmt: str, display: Display = PLAIN) -> None:
    if fmt == "json":
        out.write(orjson.dumps([{"code": r.code, "severity": r.severity, "title": r.title, "action": r.action}
                                for r in rules]) + b"\n")
        return
    rows = [(r.code, r.severity, r.title, r.action) for r in rules]
    table = _table(rows, ("CODE", "SEVERITY", "TITLE", "WHAT TO DO"), display, shrinkable=[2, 3], empty="",
                   caps=[None, None, 40, 60], paint={1: lambda sev: display.paint(sev, SEVERITY_COLOUR[sev])})
    out.write((table + "\n").encode())


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


def short_subject(f: Located) -> str:
    """container/process with the container id cut to 12 characters, as the scan table shows it."""
    if f.container is None:
        return f.subject
    return printable(short_id(f.container)) + ("" if f.process is None else f"/{printable(short_process(f.process))}")


def check_text(r: CheckReport, out: BinaryIO, display: Display = PLAIN) -> None:
    lines = [fitted(f"{f.code} {f.severity} ", f"{short_subject(f)}: {f.message}", f.severity, display)
             for f in r.reported]
    s = r.summary()
    sev = ", ".join(f"{n} {k}" for k, n in s["by_severity"].items())
    verdict = "passed" if r.passed else "FAILED"
    said = fitted("", f"{verdict}: {s['failing']} finding(s) at or above {r.gate.fail_on} fail the gate "
                  f"({s['findings']} reported: {sev}; {s['baselined']} in the baseline)", "", display, hang="")
    lines.append(said.replace(verdict, display.paint(verdict, "green" if r.passed else "red", bold=True), 1))
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

    by_subject: dict[tuple[str, str | None], list[Located]] = {}
    for f in r.failing:
        by_subject.setdefault((f.container or "(root)", f.process), []).append(f)
    subjects = list(r.subjects) + ([("(root)", None)] if ("(root)", None) in by_subject else [])
    suite = ET.Element("testsuite", name="recover", tests=str(len(subjects)),
                       failures=str(sum(1 for s in subjects if s in by_subject)), errors="0")
    for container, process in subjects:
        case = ET.SubElement(suite, "testcase", classname=printable(container), name=printable(process or container))
        for f in by_subject.get((container, process), []):
            failure = ET.SubElement(case, "failure", message=f"{f.code}: {printable(f.message)}", type=f.code)
            failure.text = f"{f.code} {f.severity} {printable(f.path or f.subject)}: {printable(f.message)}"
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
        # a finding of the whole root is located at the root: code scanning wants a location for each
        uri = quote(f.path.encode("utf-8", "backslashreplace")) if f.path else "."
        result["locations"] = [{"physicalLocation": {"artifactLocation": {"uri": uri, "uriBaseId": "ROOT"}}}]
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


CHECK_RENDERERS: dict[CheckFormat, Callable[..., None]] = {
    CheckFormat.text: check_text,
    CheckFormat.json: _undisplayed(check_json),
    CheckFormat.jsonl: _undisplayed(check_jsonl),
    CheckFormat.junit: _undisplayed(check_junit),
    CheckFormat.github: _undisplayed(check_github),
    CheckFormat.sarif: _undisplayed(check_sarif),
    CheckFormat.prometheus: _undisplayed(check_prometheus),
}


RENDERERS: dict[ScanFormat, Callable[..., None]] = {
    ScanFormat.text: render_text,
    ScanFormat.json: _undisplayed(render_json),
    ScanFormat.jsonl: _undisplayed(render_jsonl),
    ScanFormat.prometheus: _undisplayed(render_prometheus),
}


def _age(started: float | None) -> float | None:
    import time

    return None if started is None else round(max(0.0, time.time() - started), 1)


def _dash(value: object) -> str:
    return "-" if value is None else str(value)
