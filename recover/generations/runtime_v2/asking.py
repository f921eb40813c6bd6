"""Asking a task's live shim what it holds (shimapi: its task API's State and Pids, read-only):
only on this live host, only a shim that runs (a stopped one never answers: never waited on), in
recover's own mount namespace (the socket path means what it says), through a socket file it
listens on.  What it says of each process goes into the process's facts (`shim_reports`): an
exit status only its memory holds becomes the verdict's (`exit_status_source: "shim"`)."""

from __future__ import annotations

from ...host import ProcessFacts, ProcStat, ShimReport, shim_state
from ...records import ContainerRecord
from .. import Context
from .reader import TaskFiles, unhidden

ASK_TIMEOUT_S = 1.0  # a live shim answers in milliseconds; one that does not is not waited on


def ask_task_shim(ctx: Context, record: ContainerRecord, shim: ProcStat | None, listened: dict[str, bool | None],
                  api: int | None) -> tuple[str, dict[str, ShimReport]]:
    """What was asked and how it went (said in the JSON), and what the shim said of each process."""
    task: TaskFiles = record.files
    if ctx.host is None or not ctx.facts.live or not ctx.facts.proc_read:
        return "", {}  # no live host: nothing to ask
    if ctx.around.image_root is not None:
        return f"not asked: its paths are read inside {ctx.around.image_root}, not recover's own", {}
    if shim is None or shim_state(shim) != "alive":
        return f"not asked: the shim is {shim_state(shim) if shim is not None else 'gone'}", {}
    if ctx.host.in_other_mount_namespace(shim.pid):
        return "not asked: the shim lives in another mount namespace", {}
    socket = next((f.socket_path for f in (task.bootstrap, task.address_file)
                   if f is not None and f.socket == "present" and f.socket_path is not None
                   and listened.get(f.socket_path) is not False), None)
    if socket is None:
        return "not asked: no socket file it listens on", {}
    from .shimapi import ProcessState, ask_shim  # loaded only where a shim is asked

    execs = [p.id for p in record.processes if p.id != "init"]
    answer = ask_shim(socket, task.namespace, unhidden(record.id), execs, api, ASK_TIMEOUT_S)
    said = {}
    for p in record.processes:
        state = answer.init if p.id == "init" else answer.exec(p.id)
        if isinstance(state, ProcessState):
            stopped = state.status == "STOPPED"
            said[p.id] = ShimReport(state.status.lower(), state.pid, state.exit_status if stopped else None,
                                    state.exited_at / 1e9 if stopped and state.exited_at is not None else None)
    if answer.failure is not None and not said:
        return f"asked, no answer: {answer.failure.kind}: {answer.failure.message}", said
    return f"asked over task API v{answer.api}", said


def with_reports(facts: dict[str, ProcessFacts], said: dict[str, ShimReport]) -> dict[str, ProcessFacts]:
    import msgspec

    return {k: msgspec.structs.replace(f, shim_reports=said[k]) if k in said else f for k, f in facts.items()}
