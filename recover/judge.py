"""Judging a container: the shared verdict of each process (recover/verdicts.py) and the daemon's
restore predicted by the root's generation (recover/generations/*/predict.py), put together.  Pure.

`judge_container` is the one place where a layout's prediction meets the verdicts; the findings
every layout shares (the shim's state, a copy of a live root, an assumed identity) are added here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from .fsread import printable
from .host import ProcessFacts, ShimStateName
from .records import ContainerRecord, ProcessRecord
from .rules import Finding, finding
from .value import Value
from .verdicts import Decision, HostFacts, Identity, Verdict, decide_verdict


class ProcessPrediction(Value):
    would: str | None  # None: cannot be told
    why: str
    findings: tuple[Finding, ...] = ()


class ContainerPrediction(Value):
    would: str | None
    processes: Mapping[str, ProcessPrediction]
    findings: tuple[Finding, ...] = ()
    extra: Mapping[str, Any] = msgspec.field(default_factory=dict)  # the layout's own output fields


Predictor = Callable[[ContainerRecord, dict[str, Decision]], ContainerPrediction]
_NOT_REACHED = ProcessPrediction(None, "the daemon never reaches this process")


# made by position on the hot path: a new field goes last
class ProcessJudgement(Value):
    id: str
    rel: str
    exec: bool | None
    verdict: Verdict
    pid: int | None
    pid_from_shim: bool  # the pid file was missing: pid is the live shim's only child
    recorded_start: int | None
    observed_start: int | None
    identity: Identity | None
    ppid: int | None
    shim_pid: int | None
    shim_state: ShimStateName | None
    exit_status: int | None
    exit_status_source: str | None
    containerd_would: str | None
    findings: tuple[Finding, ...]
    temp_files: tuple[str, ...] = ()  # left by an interrupted repair: removed by the next one
    containerd_why: str = ""  # the predictor's reason for containerd_would
    shim_root: str | None = None  # the root its shim's cwd names (when its cwd can be read)
    other_root: str | None = None  # ... when that is another existing root: this one is a copy


# made by position on the hot path: a new field goes last
class ContainerJudgement(Value):
    id: str
    rel: str
    bundle: str
    runtime: str
    shim: str
    labels: tuple[str, ...]
    containerd_would: str | None
    processes: tuple[ProcessJudgement, ...]
    findings: tuple[Finding, ...]
    namespace: str | None = None
    extra: Mapping[str, Any] = msgspec.field(default_factory=dict)  # the layout's own output fields

    @property
    def key(self) -> str:
        return self.id if self.namespace is None else f"{self.namespace}/{self.id}"


def judge_container(record: ContainerRecord, facts: dict[str, ProcessFacts], host: HostFacts,
                    predict: Predictor) -> ContainerJudgement:
    """Decide every process's verdict, ask the layout's predictor what the daemon will do, and
    put both together with the findings every layout shares."""
    decisions = {p.id: decide_verdict(p, facts[p.id], host) for p in record.processes}
    prediction = predict(record, decisions)
    processes = []
    for p in record.processes:
        d, f = decisions[p.id], facts[p.id]
        pred = prediction.processes.get(p.id, _NOT_REACHED)
        found = p.findings + d.findings + pred.findings
        if shared := shared_findings(p, d, f):
            found += tuple(shared)
        processes.append(_process_judgement(p, d, f, pred, host, found))
    files = record.files
    return ContainerJudgement(  # by position, in field order (see _process_judgement)
        record.id, record.rel, record.bundle, record.runtime, getattr(files, "shim", ""),
        getattr(files, "labels", ()), prediction.would, tuple(processes),
        record.findings + prediction.findings, record.namespace, prediction.extra)


def shared_findings(p: ProcessRecord, d: Decision, f: ProcessFacts) -> list[Finding]:
    """What the host says about a process whatever the layout: its shim, its identity."""
    found = []
    if f.pid_source == "shim-child":
        found.append(finding("L010", f"pid {f.pid} is the only child of its shim (pid {f.shim_pid})", p.rel))
    if d.identity == "assumed" and d.verdict in ("running", "orphaned", "zombie") and f.pid_source == "pid-file":
        found.append(finding("L008", f"no start ticks and no usable pid file mtime: pid {f.pid} is assumed "
                             "to be the recorded process", p.rel))
    if f.shim_state == "stopped":
        found.append(finding("H001", f"its shim (pid {f.shim_pid}) is stopped", p.rel))
    elif f.shim_state == "zombie":
        found.append(finding("H002", f"its shim (pid {f.shim_pid}) is a zombie", p.rel))
    if f.other_root is not None:
        found.append(finding("H012", f"its shim (pid {f.shim_pid}) works in {printable(f.other_root)}: "
                             "this root is a copy of that one, or both describe the same process", p.rel))
    return found


def _process_judgement(rec: ProcessRecord, d: Decision, f: ProcessFacts, pred: ProcessPrediction,
                       host: HostFacts, found: tuple[Finding, ...]) -> ProcessJudgement:
    return ProcessJudgement(  # by position, in field order: keyword arguments cost 40 ns each
        rec.id, rec.rel, rec.exec, d.verdict, f.pid if f.pid is not None else rec.pid,
        f.pid_source == "shim-child", rec.start, f.stat.starttime if f.stat else None,
        d.identity, f.stat.ppid if f.stat else None, f.shim_pid, f.shim_state if host.proc_read else None,
        d.exit_status, d.exit_status_source, pred.would, found, rec.temp_files, pred.why,
        f.shim_root, f.other_root)
