"""containerd 1.x/2.x runtime-v2 state dirs (Docker 20+, every Kubernetes node): one task bundle
per container, runc's own state beside it, CRI's checkpoints in the root dir (SPEC-v2 §1).
Predicted daemon: containerd 1.6-2.x and its CRI plugin (recover/predict/containerd_v2.py)."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

from ...fsread import OpenRoot, printable
from ...host import ProcessFacts, ShimProcess, flag_value, shim_state
from ...judge import ContainerJudgement, ContainerPrediction, Predictor, ProcessPrediction
from ...predict import containerd_v2 as predict_v2  # the module: the two import each other
from ...records import ContainerRecord
from ...rules import Finding, finding
from .. import Context, ShimClaim, gather_with
from .reader import TASKS_DIR, Paths, StateDir, TaskFiles

SHIM_PREFIX = "containerd-shim"


def task_root(cwd: str | None) -> str | None:
    """The state dir a runtime-v2 shim works in: its cwd is <state>/io.containerd.runtime.v2.task/<ns>/<id>."""
    if cwd is None:
        return None
    tasks = os.path.dirname(os.path.dirname(cwd.rstrip("/")))
    return os.path.dirname(tasks) if os.path.basename(tasks) == TASKS_DIR else None


class Shim:
    """A task's shim: `containerd-shim-runc-v2 -namespace NS -id ID -address GRPC`, cwd the bundle.
    A Kubernetes pod has one shim, started for the sandbox: its containers name it by the sandbox id."""

    def __init__(self, namespace: str, shim_id: str):
        self.key = shim_id
        self._namespace = namespace

    def matches(self, argv: list[str], cwd: str | None) -> bool:
        if not argv or not os.path.basename(argv[0]).startswith(SHIM_PREFIX):
            return False
        if flag_value(argv, "-namespace") != self._namespace or flag_value(argv, "-id") != self.key:
            return False
        if cwd is None:
            return True
        namespace, name = cwd.rstrip("/").split("/")[-2:] if cwd.count("/") >= 2 else ("", "")
        return namespace == self._namespace and name in (self.key, "." + self.key)  # a bundle renamed hidden

    def root_of(self, cwd: str | None) -> str | None:
        return task_root(cwd)


class RuntimeV2:
    name = "containerd-runtime-v2"
    daemon = "containerd 1.6-2.x"
    writable = False  # what repair may safely write here is not decided yet: it refuses

    def open(self, root: OpenRoot, around: Any) -> StateDir:
        return StateDir(root, Paths(runc_root=around.runc_root, read_runc=around.read_runc,
                                    containerd_root=around.containerd_root,
                                    resolve=around.path if around.image_root is not None else None))

    def gather(self, ctx: Context, record: ContainerRecord) -> tuple[dict[str, ProcessFacts], Any]:
        task: TaskFiles = record.files
        rule = Shim(record.namespace or "", task.shim_id)
        facts = gather_with(ctx, record, [(p.id, rule, None) for p in record.processes])
        shim_pid = next((f.shim_pid for f in facts.values() if f.shim_pid is not None), None)
        shim = None
        if ctx.host is not None and ctx.facts.proc_read:
            if shim_pid is None:  # no process to find it through (an empty bundle): look for it by argv
                shim_pid = next((s.pid for s in ctx.host.shims_named(rule.key)
                                 if rule.matches(list(s.argv), s.cwd)), None)
            shim = ctx.host.stat(shim_pid) if shim_pid is not None else None
        argv = ctx.host.cmdline(shim_pid) if shim_pid is not None and ctx.host is not None else None
        runc_init = None
        if task.runc is not None and task.runc.pid is not None and ctx.host is not None and ctx.facts.proc_read:
            runc_init = ctx.host.stat(task.runc.pid)
        return facts, predict_v2.TaskHost(
            proc_read=ctx.facts.proc_read, shim_pid=shim_pid, shim_state=shim_state(shim),
            grpc_address=flag_value(argv, "-address") if argv else None,
            verdicts={}, pids={p.id: facts[p.id].pid for p in record.processes},
            shim_children=tuple(ctx.host.children(shim_pid)) if shim is not None and ctx.host is not None
            and not record.processes else (),
            runc_init_alive=bool(runc_init is not None and task.runc is not None
                                 and runc_init.starttime == task.runc.start and not runc_init.exited))

    def predictor(self, ctx: Context, facts: dict[str, ProcessFacts], evidence: Any) -> Predictor:
        def predict(record: ContainerRecord, decisions: dict) -> ContainerPrediction:
            host = replace(evidence, verdicts={k: d.verdict for k, d in decisions.items()})
            return predict_v2.predict_task_container(record, decisions, host)

        return predict

    def around_findings(self, ctx: Context, record: ContainerRecord, judged: ContainerJudgement) -> list[Finding]:
        init = next((p for p in judged.processes if p.id == "init"), None)
        return runc_findings(record, init.verdict if init else None, init.pid if init else None)

    def claim(self, shim: ShimProcess) -> ShimClaim | None:
        argv = list(shim.argv)
        if not argv or not os.path.basename(argv[0]).startswith(SHIM_PREFIX):
            return None
        ns, tid = flag_value(argv, "-namespace"), flag_value(argv, "-id")
        if ns is None or tid is None:
            return None
        return ShimClaim(f"{ns}/{tid}", None, task_root(shim.cwd))

    def accounts_for(self, verdict: str) -> bool:
        return True  # a runtime-v2 shim lives on after its processes exit, holding their statuses

    def has_process_dir(self, reader: Any, key: str, process: str) -> bool:
        return True


LAYOUT = RuntimeV2()


def runc_findings(record: ContainerRecord, init_verdict: str | None, init_pid: int | None) -> list[Finding]:
    """runc's own state of the task against init.pid, and its absence while the init runs."""
    task: TaskFiles = record.files
    runc = task.runc
    if runc is None or init_pid is None:
        return []
    if runc.problem == "missing":
        if init_verdict in ("running", "orphaned"):
            return [finding("H014", f"runc has no state for this task ({printable(runc.path)} is missing) while "
                            f"its init (pid {init_pid}) runs: runc cannot kill, exec into or delete it", record.rel)]
        return []
    if runc.problem is not None:
        return [finding("H011", f"runc's state {printable(runc.path)} {runc.problem}", record.rel)]
    if runc.pid != init_pid:
        return [finding("H011", f"runc's state says init is pid {runc.pid}, init.pid says {init_pid}", record.rel)]
    return []


__all__ = ["LAYOUT", "ProcessPrediction", "runc_findings"]
