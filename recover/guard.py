"""`recover guard`: judge the root before the daemon starts (systemd's `ExecStartPre=`), decide
whether the start may go on, and keep a report of every start.

The decision is read from the recover.scan/1 document that the report holds, so that the report
is the evidence of the decision: hazards (what the daemon would do, R, that is an error: crash or
hang the daemon, kill or leak live processes, drop a container), a root left by a previous boot,
a daemon already running on the root.  Side effects are few and named: the report (written whole
or not at all, then rotated), the one-shot override file (consumed), and under `--policy repair`
what repair.apply_plan writes.  Nothing here prints or exits: `say` is cli.py's.
"""

from __future__ import annotations

import io
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Literal

import orjson

from . import __version__
from .fsread import printable
from .rules import RULES, Finding

if TYPE_CHECKING:
    from .scan import Scan

Policy = Literal["report", "block", "repair"]
POLICIES: tuple[Policy, ...] = ("report", "block", "repair")

# What makes a start hazardous: the daemon's restore (R), where the catalog calls it an error, in
# every layout (0.2: delete, kill, crash, hang, decide wrongly, take a live exit; 1.6+: kill, leak, block)
HAZARD_CODES = frozenset(code for code, rule in RULES.items() if code.startswith("R") and rule.severity == "error")
# guarding docker.service over a 1.x/2.x root: containerd has restored already, dockerd's restore is judged
DOCKERD_HAZARD_CODES = frozenset(code for code in HAZARD_CODES if code.startswith("R2"))
DOCKER_UNIT = "docker.service"
PREVIOUS_BOOT = "L009"
DAEMON_RUNS = "H009"

DEFAULT_REPORT_DIR = "/var/lib/recover"
DEFAULT_RUN_DIR = "/run/recover"
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_KEEP = 10
OVERRIDE_NAME = "guard-override"
DROPIN_NAME = "50-recover.conf"
DROPIN_MARK = "# Written by `recover guard --install`"
REPORT_PREFIX = "guard-"
TEMP_PREFIX = ".guard-"
STALE_TEMP_S = 600  # a temp report older than this was left by a run that died (a time-out)
FAULT_ENV = "RECOVER_GUARD_FAULT"  # test hook: "crash" raises, "hang" never returns, while judging

Say = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Settings:
    policy: Policy = "report"
    report_dir: str = DEFAULT_REPORT_DIR
    keep: int = DEFAULT_KEEP
    kill_orphans: bool = False
    overridden: str | None = None  # the override file consumed at this start: judged as `report`


@dataclass(frozen=True, slots=True)
class Hazard:
    container: str | None  # a runtime-v2 task as namespace/id; None: about the root
    process: str | None
    code: str
    message: str

    @property
    def action(self) -> str:
        return RULES[self.code].action

    def line(self) -> str:
        where = "(root)" if self.container is None else printable(
            self.container if self.process is None else f"{self.container}/{self.process}")
        return f"{self.code} {where}: {printable(self.message)}; what to do: {self.action}"

    def json(self) -> dict:
        return {"container": self.container, "process": self.process, "code": self.code,
                "message": self.message, "action": self.action}


Reason = Literal["no-hazard", "hazards-reported", "hazards", "overridden", "previous-boot"]


@dataclass(frozen=True, slots=True)
class Decision:
    blocked: bool
    reason: Reason
    hazards: tuple[Hazard, ...]


# --- deciding (pure) -------------------------------------------------------------------------

def hazards(doc: dict, codes: frozenset[str] = HAZARD_CODES) -> list[Hazard]:
    """Every hazardous finding (of `codes`) of a recover.scan/1 document, with its place."""
    out = []
    for c in doc["containers"]:
        key = c["id"] if c.get("namespace") is None else f"{c['namespace']}/{c['id']}"
        out += [Hazard(key, None, f["code"], f["message"]) for f in c["findings"] if f["code"] in codes]
        for p in c["processes"]:
            out += [Hazard(key, p["id"], f["code"], f["message"]) for f in p["findings"]
                    if f["code"] in codes]
    out += [Hazard(None, None, f["code"], f["message"]) for f in doc["findings"] if f["code"] in codes]
    return out


def from_previous_boot(doc: dict) -> bool:
    """Every recorded process that has not exited has files that predate this boot (L009): nothing
    the root names can be alive, and the daemon will clean it up."""
    pending = [p for c in doc["containers"] for p in c["processes"] if p["verdict"] != "exited"]
    return bool(pending) and all(any(f["code"] == PREVIOUS_BOOT for f in p["findings"]) for p in pending)


def decide(settings: Settings, doc: dict, codes: frozenset[str] = HAZARD_CODES) -> Decision:
    found = tuple(hazards(doc, codes))
    if from_previous_boot(doc):
        return Decision(False, "previous-boot", found)
    if not found:
        return Decision(False, "no-hazard", found)
    if settings.overridden is not None:
        return Decision(False, "overridden", found)
    if settings.policy == "block":
        return Decision(True, "hazards", found)
    return Decision(False, "hazards-reported", found)


def daemon_on_root(root_findings: list[Finding]) -> str | None:
    """The message of H009 (a containerd daemon runs on the root), if the scan said it."""
    return next((f.message for f in root_findings if f.code == DAEMON_RUNS), None)


# --- reports ---------------------------------------------------------------------------------

def root_slug(root_path: str) -> str:
    """A root as a file name: /run/containerd -> run_containerd (the tail, when long)."""
    slug = re.sub(r"[^A-Za-z0-9._-]", "_", os.path.abspath(root_path).strip("/")) or "_"
    return slug[-100:]


def report_name(root_path: str, when: float) -> str:
    """guard-<UTC time, to the microsecond>-<root>.json: sorted by name is sorted by time."""
    stamp = datetime.fromtimestamp(when, timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"{REPORT_PREFIX}{stamp}-{root_slug(root_path)}.json"


def _report_root(name: str) -> str | None:
    """The root slug of a report's name, or None when the name is not a guard report's."""
    m = re.fullmatch(rf"{re.escape(REPORT_PREFIX)}\d{{8}}T\d{{6}}\.\d{{6}}Z-(.+)\.json", name)
    return m.group(1) if m else None


def _temp_name(name: str) -> str:
    return f"{TEMP_PREFIX}{os.getpid()}-{name}.tmp"


def _temp_root(name: str) -> str | None:
    """The root slug of a temp report's name (see _temp_name), or None."""
    m = re.fullmatch(rf"{re.escape(TEMP_PREFIX)}\d+-(.+)\.tmp", name)
    return _report_root(m.group(1)) if m else None


def write_report(report_dir: str, name: str, doc: dict) -> str:
    """Write the report whole or not at all (write_whole).  Returns its path."""
    os.makedirs(report_dir, mode=0o700, exist_ok=True)
    final = os.path.join(report_dir, name)
    write_whole(final, os.path.join(report_dir, _temp_name(name)), orjson.dumps(doc) + b"\n", 0o600)
    return final


def write_whole(path: str, temp: str, data: bytes, mode: int) -> None:
    """`data` at `path`, whole or not at all: written to `temp` (in the same dir), fsynced,
    renamed over `path`, the dir fsynced."""
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temp, path)
    except BaseException:  # a full disk, a signal: no half-written temp file is left behind
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise
    dir_fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def rotate(report_dir: str, root_path: str, keep: int, now: float) -> list[str]:
    """Keep the newest `keep` guard reports of this root (other files, other roots' reports are
    left alone); remove temp reports left by runs that died.  Returns the names removed."""
    slug = root_slug(root_path)
    names = os.listdir(report_dir)
    mine = sorted(n for n in names if _report_root(n) == slug)
    doomed = mine[:max(len(mine) - keep, 0)]
    for name in names:
        if _temp_root(name) == slug:
            try:
                if now - os.lstat(os.path.join(report_dir, name)).st_mtime > STALE_TEMP_S:
                    doomed.append(name)
            except FileNotFoundError:
                pass
    removed = []
    for name in doomed:
        try:
            os.unlink(os.path.join(report_dir, name))
            removed.append(name)
        except FileNotFoundError:
            pass
    return removed


def guard_json(settings: Settings, decision: Decision, started: float, finished: float,
               repairs: list[dict] | None) -> dict:
    out = {"version": __version__, "policy": settings.policy, "decision": "block" if decision.blocked else "pass",
           "reason": decision.reason, "hazards": [h.json() for h in decision.hazards],
           "overridden_by": settings.overridden, "kill_orphans": settings.kill_orphans,
           "started": started, "duration_s": round(finished - started, 3)}
    if repairs is not None:
        out["repairs"] = repairs
    return out


# --- the override ----------------------------------------------------------------------------

def override_path(run_dir: str) -> str:
    return os.path.join(os.path.abspath(run_dir), OVERRIDE_NAME)


def consume_override(run_dir: str) -> str | None:
    """The override file's path if it was there: it is removed, so that it counts for one start."""
    path = override_path(run_dir)
    try:
        os.unlink(path)
    except FileNotFoundError:
        return None
    return path


def override_hint(run_dir: str) -> str:
    path = override_path(run_dir)
    return (f"to start once anyway: mkdir -p {os.path.dirname(path)} && touch {path} (recover removes it "
            "at that start), then start the daemon again")


# --- the systemd drop-in ---------------------------------------------------------------------

UNIT_NAME = re.compile(r"[A-Za-z0-9:_.\\@-]+\.service")
_BARE_WORD = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")


def dropin_path(systemd_dir: str, unit: str) -> str:
    return os.path.join(systemd_dir, f"{unit}.d", DROPIN_NAME)


def systemd_word(arg: str) -> str:
    """One argument of an Exec= line: `%` and `$` escaped (specifiers, variables), quoted when it
    holds anything but plain characters."""
    escaped = arg.replace("%", "%%").replace("$", "$$")
    if _BARE_WORD.fullmatch(escaped):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def dropin_text(unit: str, argv: list[str]) -> str:
    """The drop-in: one ExecStartPre= line and nothing else.  No `-` prefix: a failure of the
    command must fail the start, or --policy block would block nothing."""
    return (f"{DROPIN_MARK}; `recover guard --uninstall --unit {unit}` removes it.\n"
            f"# recover judges the state root before every start of {unit}.\n"
            "[Service]\n"
            f"ExecStartPre={' '.join(systemd_word(a) for a in argv)}\n")


DOCKERS_OWN_CONTAINERD = "/var/run/docker/containerd/daemon"  # dockerd 18.09+ when no system containerd runs


def unit_mismatch(unit: str, root_path: str, kind: str) -> str | None:
    """Why the unit to guard is not the one whose start restores this root (a root of that kind,
    `recover/classify.py`), and which one is; None when it is, or cannot be told."""
    real = os.path.realpath(root_path)
    if unit == DOCKER_UNIT and kind == "containerd-runtime-v2" and real != os.path.realpath(
            DOCKERS_OWN_CONTAINERD):
        return (f"{root_path} is the state dir of the system containerd, which Docker 20+ uses and "
                "containerd.service starts: guarding docker.service judges dockerd's restore only (containerd runs "
                "already when dockerd starts); guard containerd's too: recover guard --install --unit "
                "containerd.service")
    if unit == "containerd.service" and kind == "containerd-0.2":
        return (f"{root_path} is a containerd 0.2 root, which dockerd 1.11-1.13 starts (docker.service), not "
                "containerd.service: guard that unit: recover guard --install --unit docker.service")
    return None


class Refused(Exception):
    """A file in the drop-in's place was not written by `recover guard --install`."""


def _ours(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(len(DROPIN_MARK)) == DROPIN_MARK.encode()


def install(path: str, text: str) -> None:
    """Write the drop-in (temp file, fsync, rename); replace only a drop-in that recover wrote."""
    if os.path.lexists(path) and (os.path.islink(path) or not _ours(path)):
        raise Refused(f"{path} exists and was not written by recover guard: left as it is")
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    temp = f"{path}.recover-tmp"
    with open(temp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(temp, 0o644)
    os.rename(temp, path)


def uninstall(path: str) -> bool:
    """Remove exactly the drop-in recover wrote; False when there is none."""
    if not os.path.lexists(path):
        return False
    if os.path.islink(path) or not _ours(path):
        raise Refused(f"{path} was not written by recover guard: left as it is")
    os.unlink(path)
    return True


# --- a start ---------------------------------------------------------------------------------

def fault(stage: str) -> None:
    """The test hook: an injected bug ("crash") or time-out ("hang") while judging."""
    what = os.environ.get(FAULT_ENV)
    if what == "crash":
        raise RuntimeError(f"injected crash at {stage} ({FAULT_ENV}=crash)")
    if what == "hang":
        while True:
            time.sleep(3600)


def scan_document(scan: Scan) -> dict:
    """The recover.scan/1 document of a scan, as `recover scan --format json` writes it."""
    from .render import render_json

    out = io.BytesIO()
    render_json(scan, out)
    return orjson.loads(out.getvalue())


def judge(open_scan: Callable[[], Scan], settings: Settings, say: Say) -> Decision | None:
    """One start: scan (through `open_scan`, a factory of Scans), repair under --policy repair,
    decide, write the report and rotate.  Says what it found through `say`.  None: not judged,
    since a daemon runs on the root."""
    from .render import summary_line

    started = time.time()
    with open_scan() as scan:
        # dockerd's start over the system containerd (running already): dockerd's restore is judged;
        # over dockerd's own containerd, which starts with it, containerd's too
        dockerd_start = scan.around.unit == DOCKER_UNIT and scan.beside is not None and \
            os.path.realpath(scan.root.path) != os.path.realpath(DOCKERS_OWN_CONTAINERD)
        if (daemon := scan.beside.daemon_running() if dockerd_start else daemon_on_root(scan.findings)) is not None:
            say(f"{scan.root.path}: {daemon}; not judged, the start goes on")
            return None
        fault("judge")
        doc = scan_document(scan)
        summary = summary_line(scan)
        root_path = scan.root.path
    repairs = None
    if settings.policy == "repair" and not from_previous_boot(doc):
        repairs = _repair(open_scan, settings, say)
        if any(a["result"] == "applied" for a in repairs or []):
            with open_scan() as scan:
                doc = scan_document(scan)
                summary = summary_line(scan)
    decision = decide(settings, doc, DOCKERD_HAZARD_CODES if dockerd_start else HAZARD_CODES)
    finished = time.time()
    doc["guard"] = guard_json(settings, decision, started, finished, repairs)
    report = None
    try:
        report = write_report(settings.report_dir, report_name(root_path, started), doc)
        rotate(settings.report_dir, root_path, settings.keep, finished)
    except OSError as e:
        say(f"cannot write the report in {settings.report_dir}: {e.strerror or e}")
    say(f"{root_path} ({doc['layout']}): {summary}; {len(decision.hazards)} hazard(s)"
        + (f"; report {report}" if report else ""))
    for h in decision.hazards:
        say(f"hazard {h.line()}")
    return decision


def _repair(open_scan: Callable[[], Scan], settings: Settings, say: Say) -> list[dict] | None:
    """What `recover repair --apply [--kill-orphans | --stop-orphans]` does (no quarantine, no
    --force), or None with the reason said when it does not run here.  --kill-orphans asks for
    containerd 0.2's kills, and for 1.x/2.x's clean stops; where the live root cannot be told no
    signal is sent (a stopped shim is not resumed either: said)."""
    from . import repair as rp

    with open_scan() as scan:
        repairer = scan.generation.repairer
        judged = list(scan.containers())
        proc_root = scan.host.proc_root if scan.host is not None else "/proc"
        if refusal := rp.write_refusal(judged, scan.root.real, proc_root, scan.host_facts.live, scan.around.image_root):
            say(f"no repair: {refusal}")
            return None
        v02 = "kill-orphan" in repairer.kinds
        opts = rp.Options(kill_orphans=settings.kill_orphans and v02, stop_orphans=settings.kill_orphans and not v02)
        if refusal := rp.kill_refusal(judged, scan.root.real, proc_root, scan.live_shim_works_here(), False):
            if any(a.kind in repairer.signals for a in rp.run(repairer, judged, opts, None)):
                say(f"no signals: {refusal}")
            opts = rp.Options(no_signals=refusal)

        def said(action: rp.Action) -> None:
            if action.result in ("applied", "skipped", "failed"):
                detail = f": {action.detail}" if action.detail else ""
                say(f"repair: {action.result} {action.kind} {printable(action.rel)}{detail}")

        try:
            actions = rp.apply_plan(repairer, judged, scan.root.real, proc_root, opts,
                                    rp.default_journal(scan.root.real), said)
        except (rp.Refused, rp.CannotWrite) as e:
            say(f"no repair: {e}")
            return None
    from .render_repair import action_json

    return [action_json(a) for a in actions]


def conclusion(decision: Decision, settings: Settings, run_dir: str) -> str:
    """The last line of a judged start: what happens to the start, and why."""
    n = len(decision.hazards)
    if decision.blocked:
        return (f"BLOCKED (--policy block): starting now would crash or hang the daemon, kill or leak live "
                f"processes, or drop a container ({n} hazard(s) above: do what each says, then start the daemon "
                f"again); {override_hint(run_dir)}")
    if decision.reason == "previous-boot":
        return ("the root is from a previous boot: nothing it names can be alive, and the daemon will clean it "
                "up" + (f" ({n} hazard(s) above, moot)" if n else "") + "; the start goes on")
    if decision.reason == "overridden":
        return f"overridden once ({settings.overridden}, removed): {n} hazard(s) above; the start goes on"
    if decision.reason == "hazards-reported":
        return (f"{n} hazard(s) above; the start goes on (--policy {settings.policy}; --policy block would "
                "stop it)")
    return "no hazard; the start goes on"
