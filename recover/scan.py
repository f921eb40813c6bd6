"""The scan pipeline: classify the root -> read it (its layout's reader) -> host view -> judge,
one container at a time.

`Scan` is what every command consumes: a header (root, layout, host), a stream of judged
containers (each read, gathered and judged when the consumer asks for it, so memory stays flat),
then the orphan shims and a summary, known once the stream is drained.  Nothing here is specific
to a daemon generation: that is the layout's (recover/generations/).  `encoded()` streams the same
containers as bytes, judged by forked workers on a large root (recover/pool.py).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Generator, Iterator

import msgspec

from .around import Surroundings, daemon_findings
from .classify import DEFAULT_ROOTS, Classification, classify
from .fsread import OpenRoot, filesystem_type, printable
from .generations import Context, Generation, ShimClaim, generation_named
from .host import HostView, OwnRoot, ProcessFacts, ShimProcess, read_stat
from .judge import ContainerJudgement, judge_container
from .pool import ordered_map, usable_cpus
from .records import ContainerRecord
from .rules import Finding, finding
from .value import Value
from .verdicts import HostFacts

POOL_MIN_CONTAINERS = 512  # below this, forking workers costs more than it saves
POOL_SHARD = 64  # containers a worker judges and sends at once


class SelectionError(Exception):
    """A --container value matches no container, or more than one (`matches`: those)."""

    def __init__(self, message: str, matches: tuple[str, ...] = ()):
        super().__init__(message)
        self.matches = matches


class NotAStateRoot(Exception):
    """The directory is not a root recover reads: it says what it is instead."""

    def __init__(self, path: str, classification: Classification):
        super().__init__(classification.explain(path))
        self.classification = classification


class OrphanShim(Value):
    pid: int
    container: str
    process: str | None
    cwd: str | None
    state: str
    reason: str
    started: float | None  # epoch: btime + start ticks / CLK_TCK


class Summary:
    def __init__(self) -> None:
        self.containers = 0
        self.processes = 0
        self.verdicts: Counter[str] = Counter()
        self.containerd_would: Counter[str] = Counter()
        self.severities: Counter[str] = Counter()

    def counts(self) -> tuple[int, int, dict[str, int], dict[str, int], dict[str, int]]:
        """The counts as plain values, as a worker sends them (recover/pool.py)."""
        return (self.containers, self.processes, dict(self.verdicts), dict(self.containerd_would),
                dict(self.severities))

    def add(self, counts: tuple[int, int, dict[str, int], dict[str, int], dict[str, int]]) -> None:
        containers, processes, verdicts, would, severities = counts
        self.containers += containers
        self.processes += processes
        self.verdicts.update(verdicts)
        self.containerd_would.update(would)
        self.severities.update(severities)


class Scan:
    """One scan of one root.  Iterate `containers()` once; then read `orphan_shims`, `summary`."""

    def __init__(self, root_path: str, *, proc_root: str = "/proc", offline: bool = False,
                 select: list[str] | None = None, around: Surroundings = Surroundings(),
                 layout: str | None = None):
        self.root = OpenRoot(root_path)
        self.findings: list[Finding] = []
        try:
            self.classification = classify(self.root)
            name = layout or self.classification.generation
            if name is None:
                raise NotAStateRoot(root_path, self.classification)
            if layout is not None and layout != self.classification.generation:
                self.findings.append(finding("F045", f"read as {layout} (--layout), but it looks like "
                                             f"{self.classification.kind} ({self.classification.evidence})"))
            self.generation: Generation = generation_named(name)
            self.reader = self.generation.open(self.root, around)
            self.daemon = self.generation.judge_daemon(self.reader, around)
        except BaseException:
            self.root.close()
            raise
        self.around = around
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
        self.own = OwnRoot.of(self.root.real, self.root.fd)
        daemon_found = daemon_findings(self.own, self.host)
        self.host_facts = HostFacts(
            proc_read=proc_read, live=bool(self.host and self.host.live),
            btime=self.host.btime if self.host else None,
            clock_ticks=self.host.clock_ticks if self.host else os.sysconf("SC_CLK_TCK"),
            hidepid=bool(self.host and self.host.hidepid),
            root_on_tmpfs=None if fs is None else fs == "tmpfs",
            daemon_runs=any(f.code == "H009" for f in daemon_found),
            boot=self.host.boot if self.host else None)
        self.ctx = Context(self.host if proc_read else None, self.host_facts, self.own, around, self.reader,
                           self.daemon)
        try:
            self.beside = self.generation.beside(self.ctx)
            self.aliases = self.beside.aliases if self.beside is not None else {}
            self.ids = select_containers(self.reader.containers(), select, self.aliases)
        except BaseException:
            self.root.close()
            raise
        self.findings.extend(self.reader.findings)
        if self.beside is not None:
            self.findings.extend(self.beside.findings)
        self.findings.extend(daemon_found)
        self.orphan_shims: list[OrphanShim] = []
        self.summary = Summary()
        # shims that watch a process of this root: bounded by the live processes on the host,
        # not by the size of the root
        self._accounted_shims: set[int] = set()
        # in a capture (no identity to compare), where this root's shims worked: the path the
        # root had when it was live, as the cwd of its processes' shims names it
        self._own_shim_roots: set[str] = set()
        self._stream: Generator[bytes, None, None] | None = None

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
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
        for key in self.ids:
            judged = self.judge(key)
            self._count(judged)
            yield judged
        self._finish()

    def encoded(self, encode: Callable[[ContainerJudgement], bytes]) -> Generator[bytes, None, None]:
        """`encode` of each container, in the order of `containers()`, with the same state once
        drained.  A large root is judged by forked workers (recover/pool.py), one per usable CPU,
        each with its own host view; what they accumulated (counts, the shims their processes
        account for, the roots those shims work in) is merged before the orphan shims are sought,
        once, here.  Closing the scan ends the workers of a stream left unfinished."""
        self._stream = self._encoded(encode)
        return self._stream

    def _encoded(self, encode: Callable[[ContainerJudgement], bytes]) -> Generator[bytes, None, None]:
        shards = -(-len(self.ids) // POOL_SHARD)
        workers = min(usable_cpus(), shards)
        if len(self.ids) < POOL_MIN_CONTAINERS or workers < 2:
            for judged in self.containers():
                yield encode(judged)
            return

        def work(shard: int) -> list[bytes]:
            out = []
            for key in self.ids[shard * POOL_SHARD:(shard + 1) * POOL_SHARD]:
                judged = self.judge(key)
                self._count(judged)
                out.append(encode(judged))
            return out

        def finish() -> tuple[tuple, set[int], set[str]]:
            return self.summary.counts(), self._accounted_shims, self._own_shim_roots

        for counts, accounted, roots in (yield from ordered_map(shards, work, finish, workers)):
            self.summary.add(counts)
            self._accounted_shims |= accounted
            self._own_shim_roots |= roots
        self._finish()

    def _finish(self) -> None:
        """After the last container: the orphan shims and the findings of the whole root."""
        self.orphan_shims = self._find_orphan_shims()
        for shim in self.orphan_shims:
            watched = shim.container if shim.process is None else f"{shim.container}/{shim.process}"
            # placed where the shim's container is (or was): each leaked shim its own fingerprint
            self.findings.append(finding("H003", f"shim pid {shim.pid} ({printable(watched)}): {shim.reason}",
                                         self.generation.rel_of(shim.container, shim.process)))
        self.summary.severities.update(f.severity for f in self.findings)

    def judge(self, key: str) -> ContainerJudgement:
        """Read, gather and judge one container."""
        return self.examine(key)[2]

    def examine(self, key: str) -> tuple[ContainerRecord, dict[str, ProcessFacts], ContainerJudgement]:
        """One container's record, the host's facts about each process, and its judgement."""
        record = self.reader.read(key)
        facts, evidence = self.generation.gather(self.ctx, record)
        judged = judge_container(record, facts, self.host_facts, self.generation.predictor(self.ctx, facts, evidence))
        extra = self.generation.around_findings(self.ctx, record, judged, evidence)
        if extra:
            judged = msgspec.structs.replace(judged, findings=judged.findings + tuple(extra))
        for p in judged.processes:
            if p.shim_pid is not None and self.generation.accounts_for(p.verdict):
                self._accounted_shims.add(p.shim_pid)
            if not self.host_facts.live and p.shim_root is not None:
                self._own_shim_roots.add(p.shim_root)
        if (shim := judged.extra.get("shim")) and shim.get("pid") is not None:
            self._accounted_shims.add(shim["pid"])  # a task's shim, found without a process
        return record, facts, judged

    def live_shim_works_here(self) -> bool:
        """Whether a live shim of this layout works in this very root (by identity): evidence
        that it is the live root, not a copy of it."""
        if self.host is None or not self.host_facts.live:
            return False
        return any(self.generation.claim(s) is not None
                   and self.host.works_in(s.pid, self.generation.shim_depth, self.own) is True
                   for s in self.host.all_shims())

    def _count(self, judged: ContainerJudgement) -> None:
        # one increment at a time: Counter.update() asks whether its argument is a Mapping (an
        # ABC check) and makes a generator, which for two processes costs more than the counting
        s = self.summary
        s.containers += 1
        s.processes += len(judged.processes)
        verdicts, would, severities = s.verdicts, s.containerd_would, s.severities
        for f in judged.findings:
            severities[f.severity] += 1
        for p in judged.processes:
            verdicts[p.verdict] += 1
            would[p.containerd_would or "unknown"] += 1
            for f in p.findings:
                severities[f.severity] += 1

    def _works_here(self, shim: ShimProcess, claim: ShimClaim) -> bool | None:
        """Whether a shim works in this root: on a live host by identity (its working dir, in its
        own mount namespace, lies in this very dir); in a capture, where the shims of this root's
        own processes worked (a path: there is no identity to compare).  None: cannot be told."""
        if shim.cwd is None:
            return None
        if self.host_facts.live:
            return self.host.works_in(shim.pid, self.generation.shim_depth, self.own) if claim.root else False
        if claim.root is None or not self._own_shim_roots:
            return None
        return claim.root in self._own_shim_roots

    def _find_orphan_shims(self) -> list[OrphanShim]:
        """Live shims the daemon will never look for: their dir is gone, or their process has exited.
        A shim is this root's only when it works in it (_works_here); one of which that cannot be
        told is counted apart (H013)."""
        if self.host is None or not self.host_facts.proc_read:
            return []
        out = []
        untold = []
        shims = self.host.all_shims()
        if shims and not self.host_facts.live:
            self.findings.append(finding("H017", f"{len(shims)} shim(s) in the captured proc dir "
                                         f"{self.host.proc_root}: which root each worked in is told by path"))
        selected = set(self.ids)
        every = self.reader.containers()
        everything = len(self.ids) == len(every)
        for shim in shims:
            claim = self.generation.claim(shim)
            if claim is None or shim.pid in self._accounted_shims:
                continue
            here = self._works_here(shim, claim)
            if here is None:
                # one that ended while it was read (a shim's `delete` run, say) or is a zombie has no
                # working dir to read: it is gone, not of an unknown root
                if shim.stat is not None and not shim.stat.exited and read_stat(self.host.proc_root, shim.pid):
                    untold.append(shim.pid)
                continue
            if not here:
                continue  # the shim of another state root, or of another mount namespace's
            if claim.key not in selected:
                if not everything or claim.key in every:
                    continue  # a container that was not selected
                reason = "the dir of its container is missing"
            elif claim.process is not None and not self.generation.has_process_dir(self.reader, claim.key,
                                                                               claim.process):
                reason = "its process dir is missing"
            else:
                reason = self.generation.stray_reason(shim, self.host.cwd_removed(shim.pid))
            state = "alive" if shim.stat is None else {"T": "stopped", "t": "stopped", "Z": "zombie"}.get(
                shim.stat.state, "alive")
            started = self.host.start_epoch(shim.stat.starttime) if shim.stat else None
            out.append(OrphanShim(shim.pid, claim.key, claim.process, shim.cwd, state, reason, started))
        if untold:
            shown = ", ".join(map(str, untold[:10])) + (", ..." if len(untold) > 10 else "")
            self.findings.append(finding("H013", f"{len(untold)} shim(s) whose working dir cannot be read "
                                         f"(pid {shown}): whether they work in this root cannot be told"))
        return out


def _names(key: str) -> tuple[str, str]:
    """The names a key answers to: namespace/id and id, each without the dots that hide a task
    or a namespace dir from containerd (a hidden task is still its container's: Docker's id finds it)."""
    namespace, slash, cid = key.rpartition("/")
    shown = f"{namespace.lstrip('.')}{slash}{cid.lstrip('.')}"
    return shown, shown.rpartition("/")[2]


def select_containers(keys: list[str], wanted: list[str] | None, aliases: dict[str, str] | None = None) -> list[str]:
    """Resolve --container values against the root's keys: namespace/id or id, exactly as the dir is
    named, else a name another daemon gives it (Docker's, `/name` too), else without the dots that
    hide a task or namespace dir (a hidden task is still its container's: Docker's id finds it),
    else a unique prefix of either, in that order: the first way that matches decides (Docker's id
    names `<id>` when both `<id>` and `.<id>` are there)."""
    if not wanted:
        return keys
    chosen = set()
    for w in wanted:
        if aliases and w in aliases and not any(w in (k, k.rpartition("/")[2]) for k in keys):
            chosen.add(aliases[w])
            continue
        if not w.rpartition("/")[2]:
            raise SelectionError(f"no container id given in '{printable(w)}'")
        matches: list[str] = []
        for way in _MATCHES:
            matches = [k for k in keys if way(k, w)]
            if matches:
                break
        if not matches:
            raise SelectionError(f"no container matches '{printable(w)}'")
        if len(matches) > 1:
            shown = ", ".join(printable(m) for m in matches[:10]) + (", ..." if len(matches) > 10 else "")
            raise SelectionError(f"'{printable(w)}' is ambiguous: it matches {shown}", tuple(matches))
        chosen.add(matches[0])
    return sorted(chosen)


def _prefix_of(names: tuple[str, str], w: str) -> bool:
    """w begins the id, or (naming a namespace) namespace/id: a namespace alone names no container."""
    key, cid = names
    return cid.startswith(w) or ("/" in w and key.startswith(w))


_MATCHES = (
    lambda k, w: w in (k, k.rpartition("/")[2]),
    lambda k, w: w in _names(k),
    lambda k, w: _prefix_of((k, k.rpartition("/")[2]), w),
    lambda k, w: _prefix_of(_names(k), w),
)


def default_root(around: Surroundings = Surroundings()) -> str | None:
    for path in DEFAULT_ROOTS:
        if os.path.isdir(around.path(path)):
            return around.path(path)
    return None
