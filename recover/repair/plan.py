"""What a repair does, as data: actions planned from judgements, by the root's generation (its
`repairer`: recover/generations/*/repair.py).  Pure.  A dry run IS the plan."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from ..judge import ContainerJudgement
    from .apply import Applier

Result = Literal["planned", "applied", "skipped", "failed", "info"]
NONE = "none"  # the kind of an action that only says something: nothing to carry out


@dataclass(frozen=True, slots=True)
class Action:
    container: str  # the container's key (runtime-v2: namespace/id)
    process: str | None
    kind: str  # one of its generation's `kinds`, or "none"
    value: str | None  # what is written (a status, a pid, a file's content) or where a dir goes
    reason: str
    # what the plan saw, re-checked just before acting
    pid: int | None = None
    start_ticks: int | None = None
    ppid: int | None = None
    target: str | None = None  # a file outside the root the action rewrites (CRI's checkpoint)
    via: str | None = None  # the socket of the live shim it asks again before acting
    result: Result = "planned"
    detail: str = ""

    @property
    def rel(self) -> str:
        return self.container if self.process is None else f"{self.container}/{self.process}"


@dataclass(frozen=True, slots=True)
class Options:
    kill_orphans: bool = False  # containerd 0.2: SIGKILL orphans and record 137
    stop_orphans: bool = False  # runtime-v2: stop what the daemon would SIGKILL, cleanly (SIGTERM, grace, SIGKILL)
    grace: float = 10.0  # seconds between SIGTERM and SIGKILL (--stop-orphans)
    quarantine: str | None = None
    force: bool = False
    no_signals: str | None = None  # why no process may be signalled here: such actions are skipped


class Repairer(Protocol):
    """What a generation repairs, and how (recover/generations/*/repair.py)."""

    kinds: tuple[str, ...]  # the action kinds it plans (README's repair table lists each)
    signals: tuple[str, ...]  # those that signal a process (refused where the live root cannot be told)

    def plan(self, c: ContainerJudgement, opts: Options) -> Iterator[Action]:
        """The actions for one judged container, in order.  Pure."""
        ...

    def carry_out(self, applier: Applier, action: Action, opts: Options) -> Action:
        """Re-verify the target, then act through the applier's primitives (journalled); raise
        apply.Skip when the target changed since the plan."""
        ...

    def clean_temp_files(self, applier: Applier, c: ContainerJudgement) -> None:
        """Remove what an interrupted run left in the container's dirs (never state)."""
        ...


def run(repairer: Repairer, containers: Iterable[ContainerJudgement], opts: Options,
        applier: Applier | None) -> Iterator[Action]:
    """Plan each container and, with an applier, carry its actions out before the next container."""
    for c in containers:
        if applier is not None:
            repairer.clean_temp_files(applier, c)
        for action in repairer.plan(c, opts):
            if action.kind == NONE:
                yield replace(action, result="info")
            elif applier is not None and opts.no_signals is not None and action.kind in repairer.signals:
                yield replace(action, result="skipped", detail=f"no signal: {opts.no_signals}")
            else:
                yield action if applier is None else applier.apply(repairer, action, opts)
