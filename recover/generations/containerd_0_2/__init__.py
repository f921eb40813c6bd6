"""containerd 0.2.x (`docker-containerd` of Docker 1.11-1.13): one dir per container, one per
process, with the pid, start ticks and exit status in small files (SPEC §1).  Predicted daemon:
containerd 0.2.9 (predict.py)."""

from __future__ import annotations

import os
from typing import Any, ClassVar

from ...fsread import OpenRoot, printable, short_process
from ...host import ProcessFacts, ShimProcess
from ...judge import ContainerJudgement, Predictor
from ...records import ContainerRecord
from ...rules import Finding
from ...value import Value
from .. import Context, FixedDaemon, ShimClaim, gather_with
from . import predict as predict_0_2
from .around import Bundle, bundle_findings, look_at_bundle, runc_dir, runc_findings
from .reader import Reader


def is_shim_of(argv: list[str], cwd: str | None, shim_name: str, cid: str, process_id: str) -> bool:
    """SPEC §3: argv holds the shim (by basename) directly followed by the container id, at
    argv[0] (the real shim) or argv[1] (a script shim under an interpreter); and when cwd is
    readable, its last two components are <container>/<process>, so a copied root still matches.
    Which root the shim works in is a separate question (`shim_root`)."""
    want = shim_name.rpartition("/")[2]  # os.path.basename, without its Python frame
    for i in (0, 1):
        if i + 1 >= len(argv):
            break
        base = argv[i].rpartition("/")[2]
        named = base == want if want else base.endswith("containerd-shim")
        if named and argv[i + 1] == cid:
            return cwd is None or cwd.rstrip("/").split("/")[-2:] == [cid, process_id]
    return False


def shim_root(cwd: str | None) -> str | None:
    """The root a 0.2 shim works in: its cwd is <root>/<container>/<process>."""
    return None if cwd is None else os.path.dirname(os.path.dirname(cwd.rstrip("/"))) or "/"


# what containerd 0.2.9's restore does to a process, for metrics (recover/metrics.py)
HARM_OF = {"keep-running": "none", "use-exit-status": "none", "record-255": "lose-exit", "kill-record-137": "kill",
           "skip-process": "leak", "drop-container": "leak", "crash-daemon": "crash", "hang-daemon": "block"}


class Shim(Value):
    """The shim of one process: `<shim> <container-id> <bundle> <runtime>`, cwd the process dir."""

    name: str  # the shim's path as state.json names it
    key: str  # the container id
    process: str
    depth: ClassVar[int] = 2  # <root>/<container>/<process>
    home: ClassVar[None] = None  # a 0.2 shim is found by its process dir's path
    socket: ClassVar[None] = None  # and reached through FIFOs, not a socket

    def matches(self, argv: list[str], cwd: str | None) -> bool:
        return is_shim_of(argv, cwd, self.name, self.key, self.process)

    def root_of(self, cwd: str | None) -> str | None:
        return shim_root(cwd)


class Containerd02:
    name = "containerd-0.2"
    daemon = "containerd 0.2.9"
    shim_depth = Shim.depth

    def open(self, root: OpenRoot, around: Any) -> Reader:
        return Reader(root, runc_dir(around))

    def judge_daemon(self, reader: Reader, around: Any) -> FixedDaemon:
        return FixedDaemon("0.2.9")

    def gather(self, ctx: Context, record: ContainerRecord) -> tuple[dict[str, ProcessFacts], Any]:
        shim = record.files.shim
        facts = gather_with(ctx, record, [(p.id, Shim(shim, record.id, p.id), p.files.pid.containerd)
                                          for p in record.processes])
        # one listing of the bundle serves the prediction (does it exist?) and H010 (what it holds)
        return facts, look_at_bundle(record.bundle, ctx.around) if record.bundle else None

    def predictor(self, ctx: Context, facts: dict[str, ProcessFacts], bundle: Bundle | None) -> Predictor:
        # whether the bundle exists is told only where it is the daemon's bundle: on the live host,
        # or inside the image of one
        bundle_exists = bundle.exists if bundle is not None and (
            ctx.facts.live or ctx.around.image_root is not None) else None
        return lambda record, decisions: predict_0_2.predict_container(record, decisions, facts, ctx.facts, bundle_exists)

    def around_findings(self, ctx: Context, record: ContainerRecord, judged: ContainerJudgement,
                        bundle: Bundle | None) -> list[Finding]:
        return bundle_findings(judged, bundle) + runc_findings(judged, ctx.reader.runc_dir)

    def claim(self, shim: ShimProcess) -> ShimClaim | None:
        argv = shim.argv
        for i in (0, 1):
            if i + 1 < len(argv) and os.path.basename(argv[i]).endswith("shim"):
                process = shim.cwd.rstrip("/").rsplit("/", 1)[-1] if shim.cwd else None
                return ShimClaim(argv[i + 1], process, shim_root(shim.cwd))
        return None

    @property
    def repairer(self) -> Any:
        """What `recover repair` does here (loaded with that command only)."""
        from .repair import REPAIRER

        return REPAIRER

    @staticmethod
    def short_path(path: str) -> str:
        """A path relative to the root as text output shows it: the container's id, and a process
        dir's name, cut to 12 characters as the table cuts them."""
        first, slash, rest = path.partition("/")
        process, slash2, rest = rest.partition("/")
        return first[:12] + slash + (short_process(process) if slash2 else process) + slash2 + rest

    def harm_of(self, would: str) -> str:
        return HARM_OF.get(would, "unknown")

    def beside(self, ctx: Any) -> None:
        return None  # Docker 1.11-1.13's files around the root are read by around.py

    def demo(self, out: Any, progress: Any, *, keep: bool, display: Any) -> None:
        from .demo import run_demo

        run_demo(out, progress, keep=keep, display=display)

    @property
    def explainer(self) -> Any:
        """What `recover explain` says of this generation's files (loaded with that command only)."""
        from .explain import EXPLAINER

        return EXPLAINER

    def accounts_for(self, verdict: str) -> bool:
        return verdict != "exited"  # a 0.2 shim exits once it has recorded its process's exit

    @staticmethod
    def rel_of(key: str, process: str | None) -> str:
        return printable(key) if process is None else f"{printable(key)}/{printable(process)}"

    def stray_reason(self, shim: ShimProcess, removed_cwd: bool) -> str:
        """Why a shim of an existing process dir is no shim of it (an orphan)."""
        return "exitStatus records its process's exit, or its pid file names another process"

    def has_process_dir(self, reader: Reader, key: str, process: str) -> bool:
        return reader.has_dir(key, process)


GENERATION = Containerd02()
