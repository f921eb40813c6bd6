"""The record types every layout's reader yields: what the files say, nothing from /proc.

A reader (one per on-disk layout, in recover/generations/) turns a state root into these records; the
host view, the verdict table and the renderers work on them alone, whatever the daemon
generation.  What only one layout has (0.2's exitStatus bytes, runtime-v2's address file and
runc state) stays in `files`, for that layout's own predictor and for explain.

Records, the parsed files in them, the judgements and findings made of them are values: nothing
changes one once it is made, and they hash as values.  The types a scan makes for every file and
process are `Value`s (recover/value.py: msgspec Structs, frozen, built in C).
"""

from __future__ import annotations

from typing import Any, Literal

from .rules import Finding
from .value import Value

StartSource = Literal["starttime", "runc-state"]
ExitSource = Literal["exitStatus", "daemon-format-bug", "cri-checkpoint", "shim-memory", "shim", "zombie-stat"]


# made by position on the hot path: a new field goes last
class ProcessRecord(Value):
    id: str
    rel: str  # where its files are, relative to the root (findings name it)
    exec: bool | None
    pid: int | None  # the recorded pid as recover reads it (None: no usable pid file)
    pid_mtime_ns: int | None  # when the pid file was written: identity when no start ticks are recorded
    start: int | None  # recorded start ticks (stat field 22)
    start_source: StartSource | None
    exit_status: int | None  # the recorded exit status, when one is recorded
    exit_source: ExitSource | None
    findings: tuple[Finding, ...]
    files: Any = None  # the layout's own parse of the process's files
    temp_files: tuple[str, ...] = ()  # leftovers of an interrupted `recover repair`
    exit_held_by_shim: bool = False  # runtime-v2: a live shim keeps its exited children's statuses
    runtime_error: str | None = None  # runc's last logged error, when no usable pid says the start worked


class ContainerRecord(Value):
    id: str
    rel: str
    processes: tuple[ProcessRecord, ...]  # sorted as the daemon visits them
    findings: tuple[Finding, ...]
    namespace: str | None = None  # runtime-v2 namespace (moby, k8s.io, default...)
    bundle: str = ""
    runtime: str = ""
    files: Any = None  # the layout's own parse of the container's files

    @property
    def key(self) -> str:
        """Unique within a root: the id, or namespace/id where namespaces exist."""
        return self.id if self.namespace is None else f"{self.namespace}/{self.id}"
