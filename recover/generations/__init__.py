"""The generations of containerd recover reads, one plug-in folder each: the pipeline's only
generation-specific part.

A generation (containerd 0.2; containerd 1.x/2.x's runtime v2) says how to read a root into
records (its reader), how to recognise the shim of one of its processes, what the host must be
asked beyond the shared facts, which daemon and version will restart over the root, and what that
daemon will do (its predictors); what repair may do there, how explain describes its files, its
demo and its builders.  Everything else (the host view, the verdicts, the outputs, the gate, the
repair machinery) is shared and names no generation.  `generation_named` is the registry (it
imports a plug-in only when asked); `recover/classify.py` decides which generation a root is.
Adding a daemon version is a change to one folder: see each plug-in's module doc.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

from ..host import OwnRoot, ProcessFacts, ShimProcess, ShimRule, gather
from ..records import ContainerRecord
from ..rules import Finding
from ..value import Value

if TYPE_CHECKING:
    from ..around import Surroundings
    from ..fsread import OpenRoot
    from ..host import HostView
    from ..judge import ContainerJudgement, Predictor
    from ..verdicts import HostFacts


class Context(Value):
    """What a layout may consult while it gathers: the host view and where things are."""

    host: HostView | None  # None: /proc is not read
    facts: HostFacts
    root: OwnRoot
    around: Surroundings
    reader: Any  # the layout's own reader of this root
    daemon: Daemon  # the daemon whose restore is predicted (Generation.judge_daemon)


class Daemon(Protocol):
    """The daemon a layout predicts: its name for findings, and how it was told (JSON)."""

    @property
    def name(self) -> str: ...

    def json(self) -> dict: ...


class CannotRun(Exception):
    """A generation's demo cannot run here: it says why (not root, a daemon not installed...)."""


class FixedDaemon(Value):
    """A layout's only daemon (containerd 0.2.9 for a 0.2 root)."""

    version: str

    @property
    def name(self) -> str:
        return f"containerd {self.version}"

    def json(self) -> dict:
        return {"version": self.version, "judged_as": [self.version], "source": "layout", "binary": None,
                "note": f"a {self.name} root: its restore is containerd {self.version}'s"}


class Reader(Protocol):
    path: str
    real: str
    findings: list[Finding]

    def containers(self) -> list[str]:
        """Every container's key, sorted as the daemon visits them."""
        ...

    def read(self, key: str) -> ContainerRecord: ...


class ShimClaim(Value):
    """What a live shim's argv and cwd say it watches, in a layout's terms."""

    key: str  # the container key it names
    process: str | None  # the process (0.2: its cwd's last component; runtime-v2: the whole task)
    root: str | None  # the state root its cwd lies in (None: cwd unreadable)


class Beside(Protocol):
    """Another daemon's record beside a root (Generation.beside): the names it gives containers, what
    it says of its own containers that have no task, its own findings."""

    aliases: dict[str, str]  # a name (e.g. Docker's) -> the container key it names
    findings: tuple[Finding, ...]

    def json(self) -> dict:
        """Top-level fields of the scan's JSON document (e.g. {"docker": {...}})."""
        ...

    def text(self) -> list[str]:
        """Lines the text report shows after its table."""
        ...

    def task_less(self) -> dict[str, int]:
        """What the other daemon's restart would do to its containers that have no task, counted."""
        ...

    def daemon_running(self) -> str | None:
        """That the other daemon runs on its own record (by identity), said; None when it does not."""
        ...


class Generation(Protocol):
    name: str  # the value of --layout, and of "layout" in the JSON output
    shim_depth: int  # how many dirs above a shim's working dir the state root is
    daemon: str  # which daemon's restore is predicted

    def open(self, root: OpenRoot, around: Surroundings) -> Reader: ...

    def judge_daemon(self, reader: Reader, around: Surroundings) -> Daemon:
        """Which daemon (and version) will restart over the root."""
        ...

    def gather(self, ctx: Context, record: ContainerRecord) -> tuple[dict[str, ProcessFacts], Any]:
        """Per-process host facts, and whatever else the layout's predictor needs (reads /proc)."""
        ...

    def predictor(self, ctx: Context, facts: dict[str, ProcessFacts], evidence: Any) -> Predictor:
        """The pure prediction of the daemon's restore, from what `gather` returned."""
        ...

    def around_findings(self, ctx: Context, record: ContainerRecord, judged: ContainerJudgement,
                        evidence: Any) -> list[Finding]:
        """Findings about what lies around a container (bundles, runc's state...), with what
        `gather` returned."""
        ...

    def claim(self, shim: ShimProcess) -> ShimClaim | None:
        """Whether a live process is a shim of this layout, and what it watches."""
        ...

    def accounts_for(self, verdict: str) -> bool:
        """Whether a process with this verdict explains its live shim (else the shim is an orphan)."""
        ...

    def stray_reason(self, shim: ShimProcess, removed_cwd: bool) -> str:
        """Why a live shim that names an existing container (and process) is none of its own."""
        ...

    def has_process_dir(self, reader: Reader, key: str, process: str) -> bool: ...

    def rel_of(self, key: str, process: str | None) -> str:
        """The path (relative to the root) of a container's dir, or of one of its processes': where
        a finding about it is placed (its fingerprint's place)."""
        ...

    @property
    def explainer(self) -> Any:
        """recover/explain.py's Explainer for this generation's files."""
        ...

    @property
    def repairer(self) -> Any:
        """recover/repair's Repairer for this generation; None: repair refuses its roots."""
        ...

    def short_path(self, path: str) -> str:
        """A finding's path (relative to the root) as text output shows it: ids cut as the table cuts them."""
        ...

    def harm_of(self, would: str) -> str:
        """What a restart's outcome for a process does to it, for metrics: none, kill, lose-exit,
        leak, block, crash (recover/metrics.py HARMS), or unknown."""
        ...

    def beside(self, ctx: Context) -> Beside | None:
        """Another daemon's own record beside the root, which decides again on its restart (Docker's):
        None where there is none."""
        ...

    def demo(self, out: Any, progress: Any, *, keep: bool, display: Any) -> None:
        """`recover demo --layout <name>`: a root of this generation with real processes, scanned
        and explained (CannotRun when it cannot run here)."""
        ...


def gather_with(ctx: Context, record: ContainerRecord, rules: Iterable[tuple[str, ShimRule, int | None]]
                ) -> dict[str, ProcessFacts]:
    """Host facts for each (process id, shim rule, pid as the daemon reads it) of a container."""
    out = {}
    for p, (pid_id, rule, daemon_pid) in zip(record.processes, rules, strict=True):
        if ctx.host is None or not ctx.facts.proc_read:
            out[pid_id] = ProcessFacts(pid=p.pid, pid_source="pid-file" if p.pid else None)
        else:
            out[pid_id] = gather(ctx.host, ctx.root, rule, p.pid, daemon_pid)
    return out


def generations() -> dict[str, Generation]:
    """The registry, by name (imported on demand: a command loads only what it reads)."""
    return {name: generation_named(name) for name in GENERATION_NAMES}


def generation_named(name: str) -> Generation:
    """One layout of the registry, importing only its own plug-in."""
    if name == "containerd-0.2":
        from .containerd_0_2 import GENERATION as V02

        return V02
    if name == "containerd-runtime-v2":
        from .runtime_v2 import GENERATION as V2

        return V2
    raise KeyError(name)


GENERATION_NAMES = ("containerd-0.2", "containerd-runtime-v2")


def daemon_version_problem(version: str, source: str = "flag") -> str | None:
    """Why --containerd-version VERSION (source "environment": its variable) names no daemon
    recover judges, or None (the generation whose daemons have versions to tell apart is asked)."""
    from .runtime_v2.version import from_flag

    judged = from_flag(version, source)
    return judged if isinstance(judged, str) else None
