"""Docker's record put beside the tasks: each Docker task's `docker` object (JSON) and findings,
Docker's names for --container and explain, and Docker's containers that have no task."""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec

from ....fsread import printable
from ....judge import ContainerPrediction
from ....records import ContainerRecord
from ....rules import Finding
from ..reader import unhidden
from . import DockerRecord, DockerView, docker_view, read_record
from .predict import DockerPrediction, predict_dockerd


def docker_json(rec: DockerRecord, view: DockerView, p: DockerPrediction) -> dict:
    return {"id": rec.id, "name": printable(rec.name) if rec.name is not None else None,
            "status": None if rec.problem else rec.status, "pid": rec.pid or None,
            "recorded_exit_code": rec.exit_code, "restart_policy": rec.restart_policy,
            "auto_remove": rec.auto_remove, "live_restore": view.live_restore,
            "stop_signal": rec.stop_signal, "stop_timeout_s": rec.stop_timeout,
            "dockerd_would": p.would, "exit_code": p.exit_code, "stale": p.stale, "why": p.why}


def with_docker(ctx: Any, record: ContainerRecord, decisions: dict, evidence: Any,
                prediction: ContainerPrediction) -> ContainerPrediction:
    """The task's prediction with what dockerd then does, for a task of Docker's namespace that
    Docker has a record of (a hidden task with a visible twin is the twin's to say)."""
    view: DockerView | None = ctx.reader.docker
    if view is None or unhidden(record.namespace or "") != view.namespace or evidence.twin_key:
        return prediction
    cid = unhidden(record.id)
    if cid not in view.records:
        return prediction
    rec = read_record(view.records[cid])
    init = decisions.get("init")
    judged_init = None
    if init is not None:
        judged_init = _Init(init.verdict, evidence.pids.get("init"), init.exit_status)
    p = predict_dockerd(rec, view, prediction.would, judged_init, ctx.host, record.rel, ctx.daemon.name,
                        evidence.shim_pid if evidence.shim_state == "stopped" else None, ctx.facts.daemon_runs)
    return msgspec.structs.replace(prediction, findings=prediction.findings + p.findings,
                                   extra={**prediction.extra, "docker": docker_json(rec, view, p)})


class _Init(msgspec.Struct, frozen=True):
    verdict: str
    pid: int | None
    exit_status: int | None


class DockerBeside:
    """Generation.beside for a Docker host."""

    def __init__(self, ctx: Any, view: DockerView):
        self.view = view
        keys = ctx.reader.containers()
        tasks: dict[str, str] = {}
        for k in keys:  # the visible dir wins (keys are sorted: `.<id>` comes first)
            ns, _, tid = k.partition("/")
            if unhidden(ns) == view.namespace:
                tasks[unhidden(tid)] = k if not tid.startswith(".") else tasks.get(unhidden(tid), k)
        self.aliases: dict[str, str] = {}
        self.without_task: list[dict] = []
        found: list[Finding] = list(view.findings)
        for cid, path in view.records.items():
            rec = read_record(path)
            if cid in tasks:
                if rec.name:
                    self.aliases[rec.name] = self.aliases["/" + rec.name] = tasks[cid]
                continue
            p = predict_dockerd(rec, view, None, None, ctx.host, f"docker:{cid}", ctx.daemon.name)
            found.extend(p.findings)
            self.without_task.append(docker_json(rec, view, p))
        self.findings = tuple(found)

    def json(self) -> dict:
        return {"docker": {**self.view.json(), "without_task": self.without_task}}

    def task_less(self) -> dict[str, int]:
        return dict(Counter(d["dockerd_would"] or "unknown" for d in self.without_task))

    def daemon_running(self) -> str | None:
        d = self.view.dockerd
        return f"dockerd (pid {d.pid}) runs on Docker's data root {self.view.data_root}" \
            if d is not None and d.same_root else None

    def text(self) -> list[str]:
        v = self.view
        lines = [f"docker: data root {printable(v.data_root)} ({v.data_root_from}); live-restore "
                 f"{'on' if v.live_restore else 'off'} ({v.live_restore_from}); dockerd "
                 + (f"runs (pid {v.dockerd.pid})" if v.dockerd else "is not running")]
        for d in self.without_task:
            code = d["recorded_exit_code"]
            status = d["status"] or "its record cannot be read"
            lines.append(f"docker container {d['name'] or d['id'][:12]} ({d['id'][:12]}), no task: {status}"
                         f"{'' if code is None or d['status'] in ('running', None) else f' (exit {code})'}; "
                         f"dockerd would {d['dockerd_would'] or '?'}: "
                         f"{d['why']}")
        return lines


__all__ = ["DockerBeside", "docker_view", "with_docker"]
