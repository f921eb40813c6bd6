"""Ask a live shim what it holds in memory: the state of a task's processes (`State`) and its pids
(`Pids`), and nothing else.

While containerd is down, a shim keeps the exit status of every process of its task; containerd
1.7 and 2.x delete a task whose init exited meanwhile when they restart, and that status is lost
(SPEC-v2 §2a.1): until then the shim's memory is the only copy.  The shim's task API is the only
way to read it.  Only `State` and `Pids` are ever called: they read the shim's state and change
nothing (`Wait` would block; `Kill`, `Delete`, `Shutdown` act on the task), and the messages
generated here (messages/shim_v*.proto) name no other method.

Each call carries the task's namespace as ttrpc metadata (`containerd-namespace-ttrpc`), as
containerd's own calls do.  The runc shims of 1.6.20, 1.7.34 and 2.3.4 answer State and Pids
without it (tests/test_shimapi.py): it is sent so that the request is the one containerd makes,
for a shim that would want it.

    answer = ask_shim("/run/containerd/s/<hex>", "k8s.io", "<task id>", ["<exec id>"], api=3, timeout=2)
    answer.init          # ProcessState(status="STOPPED", pid=4242, exit_status=42, exited_at=17...)
    answer.failure       # None, or ShimFailure(kind="timeout", ...) when the shim could not be asked
"""

from __future__ import annotations

import time

from google.protobuf.message import DecodeError

from recover.value import Value

from .messages import shim_v2_pb2, shim_v3_pb2
from .messages.runc_pb2 import ProcessDetails
from .messages.task_pb2 import ProcessInfo, Status
from .ttrpc import Connection, FailureKind, Metadata, ShimError

# The task API each version serves (SPEC-v2 §5): 1.6 and 1.7 shims v2, 2.x shims v3; each refuses
# the other with code 12.
SERVICES = {2: "containerd.task.v2.Task", 3: "containerd.task.v3.Task"}
_MESSAGES = {2: shim_v2_pb2, 3: shim_v3_pb2}
NAMESPACE_METADATA = "containerd-namespace-ttrpc"  # containerd's namespaces.TTRPCHeader
# Go's zero time.Time, 0001-01-01T00:00:00Z, in Unix seconds: what a shim reports as `exited_at`
# for a process that has not exited.
GO_ZERO_TIME = -62135596800
_DETAILS = ProcessDetails.DESCRIPTOR.full_name  # containerd.runc.v1.ProcessDetails


class ProcessState(Value):
    """What the shim said of one process (its `State`)."""

    status: str  # the task API's Status name: CREATED, RUNNING, STOPPED, PAUSED, PAUSING, UNKNOWN
    pid: int
    exit_status: int  # meaningful once STOPPED
    exited_at: int | None  # ns since the epoch; None: not exited (the shim says Go's zero time)


class PidInfo(Value):
    """One pid of the task, as `Pids` lists them (every process in the container, execs' children
    too), with the exec it is when the shim says so."""

    pid: int
    exec_id: str | None  # a runc shim names the exec whose process this is; None for the others


class ShimFailure(Value):
    """Why there is no answer.  no-socket: nothing (or no socket) at the path; refused: a socket
    file nobody listens on (the shim is gone); timeout: no answer in time (a stopped shim
    accepts the connection and never answers), or no room left in its listen backlog; denied:
    not ours to ask (the socket's permissions, or the shim answers only its own uid and gid, as
    a ttrpc server checks with SO_PEERCRED); unimplemented: code 12, the shim serves the
    other task API version; error: the shim answered another error status (`code`), e.g.
    NotFound for an exec it does not know; protocol: what came back is not ttrpc as a shim
    speaks it (an oversized frame, another stream, a cut frame, a payload that does not parse,
    the connection closed)."""

    kind: FailureKind
    message: str
    code: int | None = None  # the status code the shim answered (kinds unimplemented and error)


class ShimAnswer(Value):
    """What one conversation with a shim found."""

    api: int | None  # the task API version that answered (2 or 3); None when none did
    failure: ShimFailure | None  # what ended the conversation early (every later item says it too)
    init: ProcessState | ShimFailure
    execs: tuple[tuple[str, ProcessState | ShimFailure], ...]  # (exec id, its answer), in the order asked
    pids: tuple[PidInfo, ...] | ShimFailure

    def exec(self, exec_id: str) -> ProcessState | ShimFailure | None:
        """The answer for one exec id asked, or None when it was not asked."""
        return next((answer for eid, answer in self.execs if eid == exec_id), None)


def ask_shim(socket_path: str, namespace: str, task_id: str, exec_ids: list[str] | tuple[str, ...],
             api: int | None, timeout: float) -> ShimAnswer:
    """Ask the shim listening at `socket_path` the state of task `task_id`'s init and of each exec
    in `exec_ids`, then its pids, over one connection.

    api: 2 (containerd.task.v2.Task: 1.6 and 1.7 shims, an `address` file), 3 (v3: 2.x shims,
    bootstrap.json version 3), or None: try 3, then 2 when the shim answers code 12.
    timeout: seconds for the whole conversation (connect and every read are bounded by it).
    Never raises for anything the shim does or fails to do: that is in the answer.
    """
    if api not in (None, *SERVICES):
        raise ValueError(f"the shim's task API is version 2 or 3, not {api!r}")
    if timeout <= 0:
        raise ValueError(f"a timeout is a positive number of seconds, not {timeout!r}")
    metadata: Metadata = ((NAMESPACE_METADATA, namespace),)
    deadline = time.monotonic() + timeout
    try:
        conn = Connection(socket_path, deadline)
    except ShimError as e:
        return _unanswered(_failure(e), exec_ids)
    with conn:
        init, api = _ask_init(conn, task_id, api, metadata)
        if isinstance(init, ShimFailure) and init.kind == "unimplemented":
            return _unanswered(init, exec_ids)  # no version left to ask in
        execs = tuple((exec_id, _state(conn, api, task_id, exec_id, metadata)) for exec_id in exec_ids)
        pids = _pids(conn, api, task_id, metadata)
        failure = _failure(conn.broken) if conn.broken is not None else None
        answered = not isinstance(init, ShimFailure) or init.kind == "error"  # an error status is an answer too
        return ShimAnswer(api if answered else None, failure, init, execs, pids)


def _ask_init(conn: Connection, task_id: str, api: int | None,
              metadata: Metadata) -> tuple[ProcessState | ShimFailure, int]:
    """The init's state, in the version asked, or in 3 then 2 (the version that answered)."""
    if api is not None:
        return _state(conn, api, task_id, "", metadata), api
    first = _state(conn, 3, task_id, "", metadata)
    if not (isinstance(first, ShimFailure) and first.kind == "unimplemented"):
        return first, 3
    second = _state(conn, 2, task_id, "", metadata)
    if isinstance(second, ShimFailure) and second.kind == "unimplemented":
        return ShimFailure("unimplemented", f"neither task API is served: {first.message}; {second.message}",
                           second.code), 2
    return second, 2


def _state(conn: Connection, api: int, task_id: str, exec_id: str, metadata: Metadata) -> ProcessState | ShimFailure:
    messages = _MESSAGES[api]
    request = messages.StateRequest(id=task_id, exec_id=exec_id).SerializeToString()
    try:
        payload = conn.call(SERVICES[api], "State", request, metadata)
    except ShimError as e:
        return _failure(e)
    response = messages.StateResponse()
    try:
        response.ParseFromString(payload)
    except DecodeError as e:
        return ShimFailure("protocol", f"State: the payload is not a StateResponse: {e}")
    exited_at = None
    if response.HasField("exited_at") and response.exited_at.seconds != GO_ZERO_TIME:
        exited_at = response.exited_at.seconds * 1_000_000_000 + response.exited_at.nanos
    return ProcessState(_status_name(response.status), response.pid, response.exit_status, exited_at)


def _status_name(value: int) -> str:
    # proto3 enums are open: a newer shim may send a value this file does not name
    return Status.Name(value) if value in Status.values() else f"STATUS_{value}"


def _pids(conn: Connection, api: int, task_id: str, metadata: Metadata) -> tuple[PidInfo, ...] | ShimFailure:
    messages = _MESSAGES[api]
    try:
        payload = conn.call(SERVICES[api], "Pids", messages.PidsRequest(id=task_id).SerializeToString(), metadata)
    except ShimError as e:
        return _failure(e)
    response = messages.PidsResponse()
    try:
        response.ParseFromString(payload)
    except DecodeError as e:
        return ShimFailure("protocol", f"Pids: the payload is not a PidsResponse: {e}")
    try:
        return tuple(PidInfo(p.pid, _exec_id(p)) for p in response.processes)
    except DecodeError as e:
        return ShimFailure("protocol", f"Pids: a pid's {_DETAILS} does not parse: {e}")


def _exec_id(info: ProcessInfo) -> str | None:
    """The exec a pid is, from its ProcessDetails (a runc shim's `info`), else None."""
    if not info.HasField("info") or info.info.type_url.rsplit("/", 1)[-1] != _DETAILS:
        return None
    details = ProcessDetails()
    details.ParseFromString(info.info.value)
    return details.exec_id or None


def _failure(e: ShimError) -> ShimFailure:
    return ShimFailure(e.kind, e.message, e.code)


def _unanswered(failure: ShimFailure, exec_ids: list[str] | tuple[str, ...]) -> ShimAnswer:
    """Nothing could be asked: every item says why."""
    return ShimAnswer(None, failure, failure, tuple((e, failure) for e in exec_ids), failure)
