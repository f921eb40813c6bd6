"""The scan pipeline: read root -> host view -> judge, one container at a time.

`Scan` is what every command consumes: a header (root, host), a stream of judged containers
(each read, gathered and judged when the consumer asks for it, so memory stays flat), then the
orphan shims and a summary, known once the stream is drained.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from .around import Surroundings, bundle_findings, daemon_findings, runc_dir, runc_findings
from .classify import DEFAULT_ROOTS, Classification, classify_fd
from .host import HostView, ProcessFacts, gather, shim_root
from .judge import ContainerJudgement, HostFacts, judge_container
from .root import ContainerRecord, Root, filesystem_type, printable
from .rules import Finding, finding



class SelectionError(Exception):
    """A --container value matches no container, or more than one."""


class NotAStateRoot(Exception):
    """The directory is not a root recover reads: it says what it is instead."""

    def __init__(self, path: str, classification: Classification):
        super().__init__(classification.explain(path))
        self.classification = classification


@dataclass(frozen=True, slots=True)
class OrphanShim:
    pid: int
    container: str
    process: str | None
    cwd: str | None
    state: str
    reason: str
    started: float | None  # epoch: btime + start ticks / CLK_TCK


@dataclass
class Summary:
    containers: int = 0
    processes: int = 0
    verdicts: Counter = field(default_factory=Counter)
    containerd_would: Counter = field(default_factory=Counter)
    severities: Counter = field(default_factory=Counter)


class Scan:
    """One scan of one root.  Iterate `containers()` once; then read `orphan_shims`, `summary`."""

    def __init__(self, root_path: str, *, proc_root: str = "/proc", offline: bool = False,
                 select: list[str] | None = None, around: Surroundings = Surroundings()):
        self.root = Root(root_path)
        self.classification = classify_fd(self.root.fd)
        if not self.classification.readable_as_02:
            self.root.close()
            raise NotAStateRoot(root_path, self.classification)
        self.around = around
        self._runc_dir = runc_dir(around)
        self.findings: list[Finding] = []
        self.host: HostView | None = None if offline else HostView(proc_root)
        proc_read = self.host is not None and self.host.readable
        if offline:
            self.findings.append(finding("H004", "offline: /proc was not read; liveness is not judged"))
        elif not proc_read:
            self.findings.append(finding("H004", f"{proc_root} cannot be read; liveness is not judged"))
        elif self.host.btime is None or self.host.boot_id is None:
            self.findings.append(finding("H006", f"{proc_root}: boot time or boot id cannot be read"))
        if self.host is not None and self.host.hidepid:
            self.findings.append(finding("H005", f"{proc_root} is mounted with hidepid and recover is not root"))
        fs = filesystem_type(self.root.real)
        self.host_facts = HostFacts(
            proc_read=proc_read, live=bool(self.host and self.host.live),
            btime=self.host.btime if self.host else None,
            clock_ticks=self.host.clock_ticks if self.host else os.sysconf("SC_CLK_TCK"),
            hidepid=bool(self.host and self.host.hidepid),
            root_on_tmpfs=None if fs is None else fs == "tmpfs")
        self.ids = select_containers(self.root.containers(), select)
        self.findings.extend(self.root.findings)
        self.findings.extend(daemon_findings(self.root.real, self.host))
        self.orphan_shims: list[OrphanShim] = []
        self.summary = Summary()
        # shims that watch a process of this root that has not exited: bounded by the live
        # processes on the host, not by the size of the root
        self._accounted_shims: set[int] = set()
        # where this root's shims work: the root itself on a live host; in a capture, the path
        # the root had when it was live, as the cwd of its processes' shims names it
        self._own_shim_roots: set[str] = {self.root.real} if self.host_facts.live else set()

    def close(self) -> None:
        self.root.close()

    def __enter__(self) -> Scan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def host_json(self) -> dict:
        h = self.host
        return {"live": self.host_facts.live, "proc_root": h.proc_root if h else None,
                "boot_id": h.boot_id if h else None, "btime": self.host_facts.btime,
                "clock_ticks": self.host_facts.clock_ticks}

    def containers(self) -> Iterator[ContainerJudgement]:
        for record in map(self.root.read, self.ids):
            judged = self.judge(record)
            self._count(judged)
            yield judged
        self.orphan_shims = self._find_orphan_shims()
        for shim in self.orphan_shims:
            self.findings.append(finding("H003", f"shim pid {shim.pid} ({printable(shim.container)}/"
                                         f"{printable(shim.process or '?')}): {shim.reason}"))
        self.summary.severities.update(f.severity for f in self.findings)

    def facts(self, record: ContainerRecord) -> dict[str, ProcessFacts]:
        """What /proc says about each process of the container (nothing when /proc is not read)."""
        facts = {}
        for p in record.processes:
            if self.host is None or not self.host_facts.proc_read:
                facts[p.id] = ProcessFacts(pid=p.pid.value, pid_source="pid-file" if p.pid.value else None)
            else:
                facts[p.id] = gather(self.host, self.root.real, record.id, record.shim, p.id, p.pid.value, p.pid.containerd)
        return facts

    def judge(self, record: ContainerRecord, facts: dict[str, ProcessFacts] | None = None) -> ContainerJudgement:
        facts = self.facts(record) if facts is None else facts
        bundle_exists = None
        if record.bundle and (self.host_facts.live or self.around.image_root is not None):
            # os.Stat, as containerd does: follows links (inside the image, when analysing one)
            bundle_exists = os.path.exists(self.around.path(record.bundle))
        judged = judge_container(record, facts, self.host_facts, bundle_exists)
        extra = bundle_findings(judged, self.around) + runc_findings(judged, self._runc_dir)
        if extra:
            judged = replace(judged, findings=judged.findings + tuple(extra))
        self._accounted_shims.update(p.shim_pid for p in judged.processes
                                     if p.shim_pid is not None and p.verdict != "exited")
        if not self.host_facts.live:
            self._own_shim_roots.update(p.shim_root for p in judged.processes if p.shim_root is not None)
        return judged

    def shim_roots(self) -> set[str]:
        """The roots that live shims on this host work in (their cwd names them)."""
        if self.host is None or not self.host_facts.live:
            return set()
        return {root for s in self.host.all_shims() if (root := shim_root(s.cwd)) is not None}

    def _count(self, judged: ContainerJudgement) -> None:
        s = self.summary
        s.containers += 1
        s.processes += len(judged.processes)
        s.verdicts.update(p.verdict for p in judged.processes)
        s.containerd_would.update(p.containerd_would or "unknown" for p in judged.processes)
        s.severities.update(f.severity for f in judged.findings)
        s.severities.update(f.severity for p in judged.processes for f in p.findings)

    def _find_orphan_shims(self) -> list[OrphanShim]:
        """Live shims containerd will never look for: their dir is gone, or their process has exited.
        A shim is this root's only when its cwd says so; one whose cwd cannot be read is counted
        apart (H013): whose it is cannot be told."""
        if self.host is None or not self.host_facts.proc_read:
            return []
        out = []
        untold = []
        selected = set(self.ids)
        everything = len(self.ids) == len(self.root.containers())
        for shim in self.host.all_shims():
            cid, pid_id = shim.container, shim.process
            if cid is None or shim.pid in self._accounted_shims:
                continue
            root = shim_root(shim.cwd)
            if root is None or not self._own_shim_roots:
                untold.append(shim.pid)
                continue
            if root not in self._own_shim_roots:
                continue  # the shim of another state root
            if cid not in selected:
                if not everything or cid in self.root.containers():
                    continue  # a container that was not selected
                reason = "its container dir is missing"
            elif pid_id is not None and not self.root.has_dir(cid, pid_id):
                reason = "its process dir is missing"
            else:
                reason = "exitStatus records its process's exit, or its pid file names another process"
            state = "alive" if shim.stat is None else {"T": "stopped", "t": "stopped", "Z": "zombie"}.get(
                shim.stat.state, "alive")
            started = self.host.start_epoch(shim.stat.starttime) if shim.stat else None
            out.append(OrphanShim(shim.pid, cid, pid_id, shim.cwd, state, reason, started))
        if untold:
            shown = ", ".join(map(str, untold[:10])) + (", ..." if len(untold) > 10 else "")
            self.findings.append(finding("H013", f"{len(untold)} shim(s) whose working dir cannot be read "
                                         f"(pid {shown}): whether they belong to this root cannot be told"))
        return out


def select_containers(ids: list[str], wanted: list[str] | None) -> list[str]:
    """Resolve --container values (an id or a unique prefix) against the root's ids."""
    if not wanted:
        return ids
    chosen = set()
    for w in wanted:
        if w in ids:
            chosen.add(w)
            continue
        matches = [i for i in ids if i.startswith(w)]
        if not matches:
            raise SelectionError(f"no container matches {printable(w)!r}")
        if len(matches) > 1:
            shown = ", ".join(printable(m) for m in matches[:10])
            raise SelectionError(f"{printable(w)!r} is ambiguous: it matches {shown}")
        chosen.add(matches[0])
    return sorted(chosen)


def default_root(around: Surroundings = Surroundings()) -> str | None:
    for path in DEFAULT_ROOTS:
        if os.path.isdir(around.path(path)):
            return around.path(path)
    return None
