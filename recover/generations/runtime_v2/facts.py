"""What a prediction of a runtime-v2 task is made from: the host's facts of the task (TaskHost),
the daemon it is made for (As), what that daemon dials to reach the task's shim (dial: the
address file it reads and the task API it speaks, per behaviour), and the prediction itself."""

from __future__ import annotations

from typing import Literal

from ...value import Value
from .reader import AddressFile, TaskFiles
from .version import Behaviour, DaemonVersion

TaskWould = Literal["reconnect", "kill-live-processes", "clean-up", "clean-up-and-leak",
                    "delete-silently-and-leak", "skip-and-leak", "skip", "block-then-kill"]


class TaskHost(Value):
    """What the host says about a task, gathered before predicting."""

    proc_read: bool
    shim_pid: int | None
    shim_state: str  # alive, stopped, zombie, gone; unknown (the bundle cannot be listed)
    grpc_address: str | None  # the shim's -address: the daemon's socket
    verdicts: dict[str, str]  # process id -> verdict
    pids: dict[str, int | None]
    runc_init: int | None  # the live init runc's state names (same start ticks): runc can kill it
    shim_children: tuple[int, ...] = ()  # what the live shim still watches (an empty bundle names nothing)
    listened: dict[str, bool | None] = {}  # socket file -> a live socket listens on it (None: not told)
    shim_api: int | None = None  # the task API its shim serves: 3 (a 2.x shim), 2 (1.x); None: unknown
    shim_api_from: str = ""  # how that was told
    asked: str = ""  # whether its live shim was asked what it holds, and how that went
    shim_start: int | None = None  # the shim's start ticks (repair re-checks it is the same shim)
    restorable: str | None = None  # a socket path its live shim listens on, where containerd would put it
    # the same task under two dirs (Docker re-creates a container whose dir containerd had hidden):
    twin_key: str = ""  # of a hidden task: the visible dir of its namespace and id, when there is one
    dot_twin: str = ""  # of a visible task: the `.<id>` beside it, when there is one


class Dial(Value):
    """What a daemon of one behaviour dials for a task: the address it reads and the task API it
    speaks, or why it cannot."""

    file: AddressFile | None
    address: str | None
    api: int | None
    problem: str | None = None
    migrated: bool = False  # 2.x took `address` and writes bootstrap.json version 2 from it


class TaskPrediction(Value):
    would: TaskWould | None  # None: cannot be told
    why: str
    cause: str | None = None  # for a clean-up: why the shim cannot be reached
    keeps_bundle: bool = False  # a clean-up that leaves the bundle (a delete that never finishes)


class As(Value):
    """The daemon a prediction is made for: its behaviour, and its name in what is said
    ("containerd 2.3.4" when the version is known, else "containerd 2.x")."""

    b: Behaviour
    name: str

    @classmethod
    def of(cls, b: Behaviour, judged: DaemonVersion) -> As:
        return cls(b, judged.name if judged.version is not None else f"containerd {b}")


def dial(t: TaskFiles, b: Behaviour) -> Dial:
    """The shim's address as a daemon of behaviour `b` reads it (SPEC-v2 §2a 2-3; seen on real
    1.6.20, 1.7.34 and 2.3.4, and in their source).  Plain text is dialled as written, never
    trimmed: a newline after the path names another, absent socket (seen on 1.6.20: the healthy
    task was SIGKILLed).  JSON (keys matched as Go's decoder does, whatever their case) names the
    task API `version` and the `protocol`, which must be ttrpc for a runc shim."""
    if t.listing_problem is not None:
        return Dial(None, None, None, f"the task dir cannot be listed ({t.listing_problem})")
    if b == "2.x" and t.bootstrap is not None:
        f = t.bootstrap
        if f.problem is not None:
            return Dial(f, None, None, f.problem)
        if not f.is_json:
            return Dial(f, None, None, "bootstrap.json is not JSON")
        if f.version not in (2, 3):
            return Dial(f, f.address, None, f"bootstrap.json names task API version {f.version}, which containerd 2.x "
                                            "does not speak (2 or 3)")
        return _json_dial(f, f.version)
    f = t.address_file
    if f is None:
        if b == "2.x":
            return Dial(None, None, None, "neither bootstrap.json nor address is there")
        return Dial(None, None, None, "address is missing" + (
            f" (containerd {b} reads no bootstrap.json)" if t.bootstrap is not None else ""))
    if f.problem is not None:
        return Dial(f, None, None, f.problem)
    if f.is_json and b == "1.7" and (f.version or 0) >= 2:
        if f.version > 2:
            return Dial(f, f.address, None, f"address holds JSON of version {f.version}: containerd 1.7 takes "
                                            "version 2 at most")
        return _json_dial(f, 2)
    if f.is_json and b == "1.7":  # JSON below version 2 is no bootstrap to 1.7: the text is dialled
        what = "without a version" if f.version is None else f"of version {f.version}"
        return Dial(f, None, None, f"address holds JSON {what}, which containerd 1.7 dials as written (it takes "
                                   "JSON of version 2 only)")
    if f.is_json:
        return Dial(f, None, None, f"address holds JSON, which containerd {b} dials as written")
    if not f.plain:
        around = "a newline after the socket path" if f.text == (f.text or "").strip() + "\n" else \
            "whitespace around the socket path"
        return Dial(f, None, None, f"address holds {around}, which containerd dials as written")
    return Dial(f, f.text, 2, migrated=b == "2.x")


def _json_dial(f: AddressFile, api: int) -> Dial:
    """What a daemon dials from JSON it takes: the address, if it is usable, over ttrpc."""
    if f.address is None:
        return Dial(f, None, None, f"{f.name} holds no address")
    if f.address != f.address.strip():
        return Dial(f, f.address, None, f"{f.name}'s address holds white space, which containerd dials as written")
    if (f.protocol or "").lower() != "ttrpc":
        said = f"protocol {f.protocol!r}" if f.protocol else "no protocol"
        return Dial(f, f.address, None, f"{f.name} names {said}: containerd takes ttrpc or grpc, and a runc shim "
                                        "serves ttrpc only")
    return Dial(f, f.address, api)
