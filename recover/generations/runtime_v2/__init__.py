"""containerd 1.x/2.x runtime-v2 state dirs (Docker 20+, every Kubernetes node): one task bundle
per container, runc's own state beside it, CRI's checkpoints in the root dir (SPEC-v2 §1).
Predicted daemon: containerd 1.6, 1.7 or 2.x, as the version that will start says (version.py), and
its CRI plugin (predict.py)."""

from __future__ import annotations

import functools
import os
from typing import Any

import msgspec

from ...fsread import OpenRoot, printable, short_process
from ...gobinary import GoBinary, NotGo, read_go_binary
from ...host import ProcessFacts, ProcStat, ShimProcess, find_shim, flag_value, shim_state
from ...judge import (
    ContainerJudgement,
    ContainerPrediction,
    Predictor,
    ProcessPrediction,
)
from ...records import ContainerRecord
from ...rules import Finding, finding
from .. import Context, ShimClaim, gather_with
from . import predict as predict_v2
from .asking import ask_task_shim, with_reports
from .docker.beside import DockerBeside, docker_view, with_docker
from .reader import DEFAULT_GRPC_ADDRESS, TASKS_DIR, Paths, StateDir, TaskFiles, address_for, socket_name, unhidden
from .version import DaemonVersion, judge_version

SHIM_PREFIX = "containerd-shim"
# what containerd 1.6-2.x's restore does to a task's processes, for metrics (recover/metrics.py)
HARM_OF = {"reconnect": "none", "skip": "none", "clean-up": "lose-exit", "clean-up-and-leak": "leak",
           "delete-silently-and-leak": "leak", "skip-and-leak": "leak", "kill-live-processes": "kill",
           "block-then-kill": "block"}


def _socket_of(address: str | None) -> str | None:
    """The socket name in a task's address (unix://<dir>/<sha256 hex>), when it has that form."""
    if address is None or not address.startswith("unix://"):
        return None
    name = os.path.basename(address)
    return name if len(name) == 64 and not name.strip("0123456789abcdef") else None


def task_root(cwd: str | None) -> str | None:
    """The state dir a runtime-v2 shim works in: its cwd is <state>/io.containerd.runtime.v2.task/<ns>/<id>."""
    if cwd is None:
        return None
    tasks = os.path.dirname(os.path.dirname(cwd.rstrip("/")))
    return os.path.dirname(tasks) if os.path.basename(tasks) == TASKS_DIR else None


def _restorable(ctx: Context, task: TaskFiles, shim: ProcStat | None, grpc: str | None) -> str | None:
    """The socket path (as containerd names it) a live shim listens on for the task: where
    containerd puts its socket (sha256 of <grpc>/<ns>/<id> in /run/containerd/s), else a path its
    listening socket was bound at; checked by identity (the file's listener is a socket the shim
    holds), never by dialling.  None: no such path is known."""
    if shim is None or shim_state(shim) not in ("alive", "stopped") or ctx.host is None:
        return None
    named = address_for(grpc or DEFAULT_GRPC_ADDRESS, task.namespace, task.shim_id).removeprefix("unix://")
    held = ctx.host.socket_inodes(shim.pid)
    for path in dict.fromkeys([named, *ctx.host.listening_paths(shim.pid)]):
        listener = ctx.host.listener_of(ctx.around.path(path))
        if listener and listener in held:
            return path
    return None


class Shim:
    """A task's shim: `containerd-shim-runc-v2 -namespace NS -id ID -address GRPC`, cwd the bundle.
    A Kubernetes pod has one shim, started for the sandbox: its containers name it by the sandbox id."""

    depth = 3  # <state>/io.containerd.runtime.v2.task/<ns>/<id>

    def __init__(self, namespace: str, shim_id: str, socket_name: str | None = None,
                 home: tuple[int, int] | None = None, socket: str | None = None):
        self.key = shim_id
        self._namespace = namespace
        self._socket_name = socket_name  # what the task's address names: sha256 of <-address>/<ns>/<id>
        self.home = home  # the identity of the bundle it works in: <state>/io.containerd.runtime.v2.task/<ns>/<id>
        self.socket = socket  # that socket's file, here (or in the image)

    def matches(self, argv: list[str], cwd: str | None) -> bool:
        if not argv or not os.path.basename(argv[0]).startswith(SHIM_PREFIX):
            return False
        if flag_value(argv, "-namespace") != self._namespace or flag_value(argv, "-id") != self.key:
            return False
        grpc = flag_value(argv, "-address")
        if self._socket_name is not None and grpc is not None and \
                socket_name(grpc, self._namespace, self.key) != self._socket_name:
            return False  # the shim of another daemon (another grpc address) with the same namespace and id
        if cwd is None:
            return True
        namespace, name = cwd.rstrip("/").split("/")[-2:] if cwd.count("/") >= 2 else ("", "")
        # a bundle or namespace renamed hidden under the running shim
        return unhidden(namespace) == self._namespace and unhidden(name) == self.key

    def root_of(self, cwd: str | None) -> str | None:
        return task_root(cwd)


class RuntimeV2:
    name = "containerd-runtime-v2"
    daemon = "containerd 1.6, 1.7 or 2.x"
    shim_depth = Shim.depth

    def open(self, root: OpenRoot, around: Any) -> StateDir:
        return StateDir(root, Paths(runc_root=around.runc_root, read_runc=around.read_runc,
                                    containerd_root=around.containerd_root,
                                    resolve=around.path if around.image_root is not None else None))

    def judge_daemon(self, reader: StateDir, around: Any) -> DaemonVersion:
        # beside a captured proc dir this host's binaries are not the root's (no image was given)
        return judge_version(around.containerd_version, around.path if around.read_runc else None, around.unit,
                             reader.holds_bootstrap, around.containerd_version_source)

    def gather(self, ctx: Context, record: ContainerRecord) -> tuple[dict[str, ProcessFacts], Any]:
        task: TaskFiles = record.files
        named = task.bootstrap if task.bootstrap is not None and task.bootstrap.address else task.address_file
        rule = Shim(task.namespace, task.shim_id, _socket_of(named.address if named is not None else None),
                    ctx.reader.bundle_identity(record.namespace or "", task.sandbox or record.id),
                    named.socket_path if named is not None and named.socket == "present" else None)
        facts = gather_with(ctx, record, [(p.id, rule, None) for p in record.processes])
        shim_pid = next((f.shim_pid for f in facts.values() if f.shim_pid is not None), None)
        shim = None
        if ctx.host is not None and ctx.facts.proc_read:
            if shim_pid is None and (found := find_shim(ctx.host, ctx.root, rule)) is not None:
                shim_pid = found.pid  # no process to find it through (an empty bundle): by argv and cwd
            shim = ctx.host.stat(shim_pid) if shim_pid is not None else None
        argv = ctx.host.cmdline(shim_pid) if shim_pid is not None and ctx.host is not None else None
        runc_init = None
        if task.runc is not None and task.runc.pid is not None and ctx.host is not None and ctx.facts.proc_read:
            runc_init = ctx.host.stat(task.runc.pid)
        # whether a live socket listens on each socket file named: only asked of a live shim
        heard = shim is not None and ctx.host is not None and ctx.host.in_our_network_namespace(shim.pid)
        listened = {}
        for f in (task.bootstrap, task.address_file) if heard else ():
            if f is not None and f.socket == "present" and f.socket_path is not None:
                inode = ctx.host.listener_of(f.socket_path)
                listened[f.socket_path] = None if inode is None else bool(inode)
        # the same task under a hidden and a visible dir: containerd knows the visible one only
        name = os.path.basename(task.dir)
        twin_key = f"{task.namespace}/{unhidden(name)}" if task.hidden else ""
        dot_twin = f"{record.namespace}/.{name}" if not task.hidden else ""
        api, api_from = shim_api(ctx, task, shim_pid if shim is not None and shim_state(shim) in ("alive", "stopped")
                                 else None)
        asked, said = ask_task_shim(ctx, record, shim, listened, api)
        restorable = _restorable(ctx, task, shim, flag_value(argv, "-address") if argv else None) if heard else None
        facts = with_reports(facts, said)
        return facts, predict_v2.TaskHost(
            asked=asked, restorable=restorable, shim_start=shim.starttime if shim is not None else None,
            twin_key=twin_key if ctx.reader.holds(twin_key) else "",
            dot_twin=dot_twin if ctx.reader.holds(dot_twin) else "",
            listened=listened, shim_api=api, shim_api_from=api_from,
            proc_read=ctx.facts.proc_read, shim_pid=shim_pid,
            # a bundle that cannot be listed hides a pod container's sandbox id: which shim is its own
            # cannot be told, and none found is not "gone"
            shim_state="unknown" if shim is None and task.entries is None else shim_state(shim),
            grpc_address=flag_value(argv, "-address") if argv else None,
            verdicts={}, pids={p.id: facts[p.id].pid for p in record.processes},
            # what the shim still watches, where no pid file names it (an emptied bundle)
            shim_children=tuple(ctx.host.children(shim_pid)) if shim is not None and ctx.host is not None
            and (task.empty or not record.processes) else (),
            runc_init=runc_init.pid if runc_init is not None and task.runc is not None
            and runc_init.starttime == task.runc.start and not runc_init.exited else None)

    def predictor(self, ctx: Context, facts: dict[str, ProcessFacts], evidence: Any) -> Predictor:
        def predict(record: ContainerRecord, decisions: dict) -> ContainerPrediction:
            host = msgspec.structs.replace(evidence, verdicts={k: d.verdict for k, d in decisions.items()})
            prediction = predict_v2.predict_task_container(record, decisions, host, ctx.daemon)
            return with_docker(ctx, record, decisions, evidence, prediction)

        return predict

    def harm_of(self, would: str) -> str:
        return HARM_OF.get(would, "unknown")

    def beside(self, ctx: Context) -> DockerBeside | None:
        view = docker_view(ctx.around, ctx.host, {unhidden(k.partition("/")[0]) for k in ctx.reader.containers()})
        ctx.reader.docker = view  # the predictor's, in this process and the workers forked after
        return None if view is None else DockerBeside(ctx, view)

    def around_findings(self, ctx: Context, record: ContainerRecord, judged: ContainerJudgement,
                        evidence: Any) -> list[Finding]:
        init = next((p for p in judged.processes if p.id == "init"), None)
        return runc_findings(record, init.verdict if init else None, init.pid if init else None) + \
            _strays(ctx, record, judged, evidence)

    def claim(self, shim: ShimProcess) -> ShimClaim | None:
        argv = list(shim.argv)
        if not argv or not os.path.basename(argv[0]).startswith(SHIM_PREFIX):
            return None
        ns, tid = flag_value(argv, "-namespace"), flag_value(argv, "-id")
        if ns is None or tid is None:
            return None
        return ShimClaim(f"{ns}/{tid}", None, task_root(shim.cwd))

    @property
    def repairer(self) -> Any:
        """What `recover repair` does here (loaded with that command only)."""
        from .repair import REPAIRER

        return REPAIRER

    @staticmethod
    def short_path(path: str) -> str:
        """A path relative to the state dir as text output shows it: namespace/id (the id cut to 12
        characters), without the task dir every one of them starts with; an exec's pid file
        `<exec id>.pid` cut as the table cuts exec ids."""
        if path.startswith("docker:"):  # a Docker container with no task: its id, cut as the table cuts ids
            return path[:len("docker:") + 12]
        if not path.startswith(TASKS_DIR + "/"):
            return path
        namespace, _, rest = path[len(TASKS_DIR) + 1:].partition("/")
        cid, slash, rest = rest.partition("/")
        name, dot, suffix = rest.rpartition(".")
        if dot and "/" not in rest and suffix == "pid":
            rest = f"{short_process(name)}.pid"
        return f"{namespace}/{cid[:12]}{slash}{rest}"

    def demo(self, out: Any, progress: Any, *, keep: bool, display: Any) -> None:
        from .demo import run_demo

        run_demo(out, progress, keep=keep, display=display)

    @property
    def explainer(self) -> Any:
        """What `recover explain` says of this generation's files (loaded with that command only)."""
        from .explain import EXPLAINER

        return EXPLAINER

    def accounts_for(self, verdict: str) -> bool:
        return True  # a runtime-v2 shim lives on after its processes exit, holding their statuses

    @staticmethod
    def rel_of(key: str, process: str | None) -> str:
        return f"{TASKS_DIR}/{printable(key)}"  # a task's processes share its dir

    def stray_reason(self, shim: ShimProcess, removed_cwd: bool) -> str:
        """Why a shim of an existing task is no shim of it (an orphan)."""
        if removed_cwd:
            return ("it works in a removed dir: its task's bundle was made again (a restart of the container) and "
                    "containerd reaches the shim of the new one")
        return "its task is another shim's: containerd never reaches this one"

    def has_process_dir(self, reader: Any, key: str, process: str) -> bool:
        return True


GENERATION = RuntimeV2()

SHIM_PACKAGES = {"github.com/containerd/containerd/v2/": 3, "github.com/containerd/containerd/": 2}


def shim_api(ctx: Context, task: TaskFiles, shim_pid: int | None) -> tuple[int | None, str]:
    """The task API the task's live shim serves (a 2.x shim serves v3 only, a 1.x shim v2), and how
    that was told: the binary it runs (/proc/<pid>/exe, on a live host: what runs, not what would
    start now), else what its bundle shows (a 2.x shim writes bootstrap.json version 3, a 1.x shim
    `address`; a bundle a 2.x daemon made holds the `s` link or a `sandbox` file), else the file
    shim-binary-path names (what would start now).  Asked only of a shim that lives: nothing else
    is dialled."""
    if shim_pid is None:
        return None, "no live shim"
    if ctx.host is not None and isinstance(binary := ctx.host.go_binary(shim_pid), GoBinary):
        for prefix, api in SHIM_PACKAGES.items():
            if (binary.main_package or "").startswith(prefix):
                return api, f"its binary, /proc/{shim_pid}/exe, is a containerd {'2.x' if api == 3 else '1.x'} shim"
    b = task.bootstrap
    if b is not None and b.version in (2, 3) and (b.version == 3 or task.address_file is not None):
        return b.version, f"its bootstrap.json says version {b.version}"
    if task.made_by_2x:
        return 3, "its bundle was made by containerd 2.x (the `s` link, or a `sandbox` file)"
    if task.address_file is not None:
        return 2, "its bundle holds `address`, which 1.x shims write"
    if task.shim_binary.startswith("/") and isinstance(
            binary := _binary_at(ctx.around.path(task.shim_binary)), GoBinary):
        for prefix, api in SHIM_PACKAGES.items():
            if (binary.main_package or "").startswith(prefix):
                return api, f"shim-binary-path names a containerd {'2.x' if api == 3 else '1.x'} shim"
    return None, "cannot be told"


@functools.lru_cache(maxsize=64)
def _binary_at(path: str) -> GoBinary | NotGo:
    """A shim binary on disk, read once per path in a scan's process (every task names the same)."""
    return read_go_binary(path)


def _strays(ctx: Context, record: ContainerRecord, judged: ContainerJudgement, h: Any) -> list[Finding]:
    """A running child of the task's own live shim that is none of its processes: an earlier run's
    process (Docker restarted the container under its leaked shim), which containerd never tracks:
    two instances of the container run at once (seen under Docker 20.10: trial 3, T5).  A pod's
    shim serves several containers: not told there."""
    task: TaskFiles = record.files
    if ctx.host is None or h.shim_pid is None or h.shim_state != "alive" or task.sandbox or task.container_type:
        return []
    known = {p.pid for p in judged.processes if p.pid is not None}
    found = []
    for pid in ctx.host.children(h.shim_pid):
        st = ctx.host.stat(pid)
        if pid not in known and st is not None and not st.exited:
            found.append(finding("H018", f"pid {pid} ({st.comm!r}) is a child of its shim (pid {h.shim_pid}) but none "
                                 "of its processes: no file names it, and containerd never tracks it", record.rel))
    return found


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


__all__ = ["GENERATION", "ProcessPrediction", "runc_findings"]
