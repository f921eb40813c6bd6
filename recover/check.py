"""check: the findings of a scan as a CI gate.  Pure, apart from reading a baseline file.

Each finding gets its place (container, process, path relative to the root) and a fingerprint
that is stable across runs (code and place: never the message, which holds pids and ticks).
select / ignore / baseline decide which findings count; --fail-on decides which fail the gate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import orjson

from .judge import ContainerJudgement
from .rules import RULES, SEVERITIES, Finding, Severity

BASELINE_SCHEMA = "recover.baseline/1"


@dataclass(frozen=True, slots=True)
class Located:
    """A finding with its place in the root."""

    code: str
    severity: Severity
    container: str | None
    process: str | None
    path: str | None
    message: str

    @property
    def fingerprint(self) -> str:
        key = "\0".join([self.code, self.container or "", self.process or "", self.path or ""])
        return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:32]

    @property
    def subject(self) -> str:
        """container/process, as a test case or a line names it."""
        if self.container is None:
            return "(root)"
        return self.container if self.process is None else f"{self.container}/{self.process}"


def locate(containers: Iterable[ContainerJudgement], root_findings: Iterable[Finding]) -> Iterator[Located]:
    for c in containers:
        for f in c.findings:
            yield Located(f.code, f.severity, c.key, None, f.path, f.message)
        for p in c.processes:
            for f in p.findings:
                yield Located(f.code, f.severity, c.key, p.id, f.path, f.message)
    for f in root_findings:
        yield Located(f.code, f.severity, None, None, f.path, f.message)


def parse_codes(text: str | None) -> tuple[str, ...]:
    """`--select F0,L001` -> ("F0", "L001"): codes or prefixes, case-insensitive."""
    return tuple(part.strip().upper() for part in (text or "").split(",") if part.strip())


def unknown_codes(codes: Iterable[str]) -> list[str]:
    """The codes or prefixes that match no catalogued code (a typo would silently select nothing)."""
    return [c for c in codes if not any(code.startswith(c) for code in RULES)]


@dataclass(frozen=True, slots=True)
class Gate:
    select: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    fail_on: Severity = "error"
    baseline: frozenset[str] = frozenset()

    def counts(self, f: Located) -> bool:
        """Whether the finding is reported at all (select/ignore)."""
        if self.select and not f.code.startswith(self.select):
            return False
        return not (self.ignore and f.code.startswith(self.ignore))

    def fails(self, f: Located) -> bool:
        """Whether the finding fails the gate: reported, severe enough, not in the baseline."""
        return (self.counts(f) and SEVERITIES.index(f.severity) <= SEVERITIES.index(self.fail_on)
                and f.fingerprint not in self.baseline)


def read_baseline(path: str) -> frozenset[str]:
    with open(path, "rb") as f:
        doc = orjson.loads(f.read())
    if not isinstance(doc, dict) or doc.get("schema") != BASELINE_SCHEMA:
        raise ValueError(f"{path} is not a recover baseline ({BASELINE_SCHEMA})")
    return frozenset(str(x["fingerprint"]) for x in doc.get("findings", []) if isinstance(x, dict))


def baseline_json(findings: Iterable[Located]) -> bytes:
    rows = sorted({(f.fingerprint, f.code, f.subject) for f in findings})
    return orjson.dumps({"schema": BASELINE_SCHEMA,
                         "findings": [{"fingerprint": fp, "code": code, "subject": subject}
                                      for fp, code, subject in rows]},
                        option=orjson.OPT_INDENT_2) + b"\n"


@dataclass(frozen=True, slots=True)
class CheckReport:
    """Everything a check format prints."""

    root: str
    findings: tuple[Located, ...]  # every finding, before select/ignore (formats filter with gate)
    subjects: tuple[tuple[str, str | None], ...]  # every (container, process) judged: a JUnit test case each
    verdicts: dict[str, int]
    gate: Gate
    timestamp: float

    @property
    def reported(self) -> list[Located]:
        return [f for f in self.findings if self.gate.counts(f)]

    @property
    def failing(self) -> list[Located]:
        return [f for f in self.findings if self.gate.fails(f)]

    @property
    def passed(self) -> bool:
        return not self.failing

    def summary(self) -> dict:
        reported = self.reported
        return {"findings": len(reported),
                "by_severity": {s: sum(f.severity == s for f in reported) for s in SEVERITIES},
                "baselined": sum(f.fingerprint in self.gate.baseline for f in reported),
                "failing": len(self.failing), "fail_on": self.gate.fail_on, "passed": self.passed,
                "verdicts": self.verdicts}


def subjects_of(c: ContainerJudgement) -> list[tuple[str, str | None]]:
    """The container itself (its own findings), then each of its processes."""
    return [(c.key, None)] + [(c.key, p.id) for p in c.processes]
