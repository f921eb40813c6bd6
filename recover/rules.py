"""The catalog of finding codes: one place that says what each problem is and what to do.

Codes are a family letter and three digits:
  F  files and formats in the root      L  liveness of recorded processes
  R  what the daemon would do            H  the host, /proc and the shims
The hundreds say the layout where only one has it: x0xx containerd 0.2 (R0xx: what containerd
0.2.9 would do), x1xx runtime-v2 (R1xx: what containerd 1.6-2.x and its CRI plugin would do),
x2xx Docker's own record beside a runtime-v2 root (R2xx: what dockerd 20.10 would do).
Every finding recover emits is made by `finding()`, so a code cannot be emitted without a
catalog entry (and tests check that every entry is documented in the README).
"""

from __future__ import annotations

from typing import Literal

from .value import Value

Severity = Literal["error", "warning", "info"]
SEVERITIES: tuple[Severity, ...] = ("error", "warning", "info")


class Rule(Value):
    code: str
    severity: Severity
    title: str
    action: str


class Finding(Value, omit_defaults=True):  # encoded without a path it has not (render.py)
    code: str
    severity: Severity
    message: str
    path: str | None = None  # relative to the root, where the finding is about one file or dir


_RULES = [
    # --- files and formats -------------------------------------------------------------------
    Rule("F001", "error", "required file missing",
         "containerd cannot load this entry; keep the directory for evidence and run `recover repair`"),
    Rule("F002", "error", "file is empty",
         "the write was interrupted; the file cannot be trusted"),
    Rule("F003", "error", "file is not valid JSON",
         "the write was interrupted (truncated JSON); containerd will delete the container dir: "
         "quarantine it with `recover repair --quarantine DIR`"),
    Rule("F004", "error", "file holds NUL bytes",
         "a power loss left zero-filled blocks; treat the file as lost"),
    Rule("F005", "error", "file is not UTF-8",
         "the file is corrupt; treat it as lost"),
    Rule("F006", "error", "file is larger than 1 MiB",
         "not read: no file of a containerd root is that large; inspect it by hand"),
    Rule("F007", "error", "FIFO, socket or device where a regular file belongs",
         "not opened (reading it could block forever); remove it by hand after saving evidence"),
    Rule("F008", "error", "directory where a regular file belongs",
         "not read; containerd fails to read it too"),
    Rule("F009", "warning", "symbolic link where a regular file belongs",
         "not followed; containerd would follow it: check where it points"),
    Rule("F010", "error", "symbolic link points out of the root",
         "not followed; the root may be hostile or was copied badly: inspect it"),
    Rule("F011", "warning", "file vanished while it was read",
         "the root changed during the scan (is a daemon running?); scan again"),
    Rule("F012", "error", "file cannot be read",
         "check permissions and the disk; run recover as root"),
    Rule("F020", "error", "state.json has the wrong shape",
         "a field has the wrong type; containerd cannot decode it and will delete the container dir"),
    Rule("F021", "error", "process.json has the wrong shape",
         "a field has the wrong type; containerd cannot decode it and will delete the container dir"),
    Rule("F022", "error", "process.json written by containerd 0.2.8 or older (capabilities is a list)",
         "containerd 0.2.9 cannot decode it and deletes the whole container dir: do not upgrade "
         "over live containers, or quarantine the dir first"),
    Rule("F030", "error", "pid file missing",
         "never written (the start failed) or removed since; containerd skips this process; if its "
         "shim lives, `recover repair` can rewrite pid"),
    Rule("F031", "error", "pid file is not a decimal integer",
         "containerd skips this process; if its shim lives, `recover repair` can rewrite pid"),
    Rule("F032", "error", "pid file has white space (containerd cannot parse it)",
         "recover read the pid anyway; containerd will skip the process: rewrite the file "
         "without the white space"),
    Rule("F033", "info", "starttime file missing",
         "old root (before Sept 2016) or the process died at once; pid reuse is judged from the "
         "pid file's mtime instead"),
    Rule("F034", "warning", "starttime is not a bare decimal integer",
         "containerd compares it byte for byte and will call the process 'not the same' (255)"),
    Rule("F035", "error", "exitStatus cannot be parsed",
         "containerd treats the process as not exited and may skip it; recover judges liveness"),
    Rule("F036", "warning", "exitStatus written by the daemon's format bug (%!u(uint32=N))",
         "containerd 0.2.4-0.2.8 wrote this on restore; no containerd can read it back: "
         "the status is N, set by the daemon, not by the process"),
    Rule("F037", "warning", "exitStatus has white space (containerd cannot parse it)",
         "recover read the status anyway; rewrite the file as a bare decimal"),
    Rule("F038", "warning", "leftover .pid file",
         "the runtime died while writing the pid file: the start did not finish cleanly"),
    Rule("F039", "error", "exitStatus is above 255 (no process exits with that)",
         "the real status is lost: recover judges the process from its pid; containerd would report "
         "the value as is, and a valid exitStatus is never overwritten by `recover repair`"),
    Rule("F040", "info", "unexpected entry in the root",
         "not part of a containerd root; left alone"),
    Rule("F041", "warning", "name holds control characters or is not UTF-8",
         "shown escaped; the root may be hostile or damaged"),
    Rule("F042", "error", "directory cannot be listed",
         "check permissions; what it holds was not judged"),
    Rule("F043", "info", "temp file left by an interrupted repair",
         "never read as state; the next `recover repair --apply` removes it"),
    Rule("F044", "info", "pid file has a + sign",
         "not runc's format, but Go's Atoi reads it: containerd and recover both load the pid"),
    Rule("F045", "warning", "root read as another layout than it looks like (--layout)",
         "the layout was forced: check that this is what you meant"),
    Rule("F101", "warning", "task pid file missing or not a pid",
         "the process is judged from runc's state and its shim where they say; containerd asks the "
         "shim, not the file"),
    Rule("F102", "warning", "task file is not valid JSON, or holds no address",
         "what it says (CRI annotations, runc options, the shim's address) is unknown; restore it "
         "from the live task if it matters"),
    # --- liveness ----------------------------------------------------------------------------
    Rule("L001", "error", "process vanished without an exit status",
         "the process died while nothing watched it; `recover repair --apply` records 255"),
    Rule("L002", "error", "recorded pid now belongs to another process",
         "never signal that pid; `recover repair --apply` records 255"),
    Rule("L003", "error", "process orphaned: its shim is gone",
         "nothing will record its exit; stop it cleanly or `recover repair --kill-orphans --apply`"),
    Rule("L004", "error", "process is a zombie nobody reaps",
         "its shim is hung; `recover repair --apply` records the exit status read from /proc"),
    Rule("L005", "warning", "process never started",
         "the start did not finish; the container can be removed"),
    Rule("L006", "warning", "liveness cannot be decided",
         "run on the live host (or give --proc-root a capture of it) to decide"),
    Rule("L007", "warning", "process is alive but exitStatus is already written",
         "the recorded process runs on though its shim is gone: the status is stale or false "
         "(containerd would take it: R010); check before trusting it"),
    Rule("L008", "info", "identity of the live pid assumed",
         "no starttime and no usable pid file mtime: the pid could have been reused"),
    Rule("L009", "warning", "files predate this boot",
         "no pid recorded before the reboot can be alive now, whatever /proc shows"),
    Rule("L010", "info", "pid taken from the shim's only child",
         "the pid file is missing but the shim lives: `recover repair --apply` rewrites pid"),
    Rule("L011", "info", "process exited while the daemon was down; its shim holds the status",
         "the shim's memory is the only copy: whether the restarting daemon keeps or loses it depends "
         "on its version (containerd_would and the R1xx findings say)"),
    # --- what containerd 0.2.9 would do ------------------------------------------------------
    Rule("R001", "error",
         "containerd would delete the container dir (state.json or a process.json missing or undecodable)",
         "restarting the daemon now loses this container's state and leaks what still runs: "
         "`recover repair --quarantine DIR` first"),
    Rule("R002", "error", "containerd would delete the container dir (no process loads)",
         "restarting the daemon now loses this container's state and leaks what still runs: "
         "fix the pid files or quarantine the dir first"),
    Rule("R003", "error", "containerd would kill and delete the container (bundle dir missing)",
         "containerd runs `<runtime> delete -f` and removes the state dir; restore the bundle first"),
    Rule("R004", "warning", "containerd would skip this process",
         "its exit will never be reported"),
    Rule("R005", "warning", "containerd would record 255",
         "the real exit status is lost; if recover knows it, `recover repair --apply` records it"),
    Rule("R006", "error", "containerd would SIGKILL this process",
         "a live process will be killed on restart; stop it cleanly first if it matters"),
    Rule("R007", "error", "containerd would crash at start (stat parser panic, or an exit that is not a FIFO)",
         "the daemon stops on every start and takes every container with it. A stat parser panic: if "
         "the pid was reused, `recover repair --apply` records 255 so containerd never parses its "
         "stat; if it is the container's own process, stop it before restarting the daemon. An `exit` "
         "that is a regular file: make it a FIFO again (mkfifo) before restarting the daemon"),
    Rule("R008", "error", "containerd would hang at start",
         "the daemon never finishes starting (frozen process or a FIFO where a file belongs): "
         "thaw the container or fix the file first"),
    Rule("R009", "error", "containerd would decide wrongly",
         "containerd's decision differs from what the process really did; `recover repair` "
         "writes the right exit status"),
    Rule("R010", "error", "containerd would take the exit of a live process",
         "exitStatus holds a status but the process still runs: containerd would take that exit, drop "
         "its state and leak the process. Move the stray exitStatus out of the dir (keep it as "
         "evidence) before restarting the daemon; `recover repair` never overwrites a valid one"),
    # --- host, /proc, shims -------------------------------------------------------------------
    Rule("H001", "warning", "shim is stopped (hung or under a debugger)",
         "a stopped shim reaps nothing and records nothing; resume it (SIGCONT) or kill it"),
    Rule("H002", "warning", "shim is a zombie", "its parent does not reap it; check the daemon"),
    Rule("H003", "error", "orphan shim: its container or process dir is gone",
         "containerd never looks for it; it and its child live on untracked: stop them by hand"),
    Rule("H004", "info", "/proc not read", "liveness was not judged (offline analysis)"),
    Rule("H005", "warning", "/proc hides other users' processes (hidepid)",
         "absence is not proof of death: run as root"),
    Rule("H006", "warning", "cannot read boot time or boot id",
         "previous-boot detection and start epochs are unavailable"),
    Rule("H007", "info", "docker-containerd.pid names no running process",
         "the daemon is down (as after a crash): Docker starts a new one over this root; scan first"),
    Rule("H008", "error", "docker-containerd.pid names a live process that is not containerd",
         "Docker 1.12-1.13 would take it for a running containerd and never start one: remove the "
         "stale pid file before starting Docker"),
    Rule("H009", "warning", "a containerd daemon runs on this root",
         "the root may change while it is read; repair refuses to write until it stops"),
    Rule("H010", "warning", "bundle incomplete (config.json or stdio FIFOs)",
         "runc cannot act on the container, or Docker cannot reattach its stdio"),
    Rule("H011", "warning", "runc's state disagrees with containerd's files",
         "runc and containerd name different init processes: trust the start ticks, check by hand"),
    Rule("H012", "warning", "shim works in another root (this root is a copy)",
         "the live root is the one the shim works in: judge and repair that one; repair never kills "
         "from a copy"),
    Rule("H013", "info", "shim of an unknown root (its working dir cannot be read)",
         "whether it is an orphan of this root cannot be told: run as root on the live host"),
    Rule("H014", "warning", "runc has no state for a live container",
         "its dir under runc's root is gone while its init runs: runc cannot act on the container "
         "(kill, exec, delete); stop the process by hand when it must go"),
    Rule("H015", "info", "tasks of the legacy v1 shim (io.containerd.runtime.v1.linux) are not judged",
         "containerd 1.6 still restores them; judge them by hand (shim.pid, init.pid)"),
    Rule("H016", "warning", "a containerd daemon runs, and whether on this root cannot be told",
         "its state dir cannot be read (another user's process: run as root); repair refuses to write "
         "until it stops, and guard judges the root"),
    Rule("H017", "info", "a captured proc dir: shims are told this root's by path, not by identity",
         "a capture holds no dir identities: a shim is taken as this root's where its recorded working "
         "dir lies where this root's own shims worked; judge on the live host to tell by identity"),
    Rule("H018", "error", "a live child of the task's shim is none of its processes",
         "an earlier run's process left under a shim the container was restarted under (Docker reuses a "
         "leaked shim): two instances of the container run at once, and containerd never tracks this one; "
         "stop it by hand (kill the pid after checking it)"),
    # --- what containerd 1.6-2.x and its CRI plugin would do --------------------------------
    Rule("R101", "error", "containerd 1.6+ would SIGKILL this task's live processes",
         "its shim cannot be reached (address or socket missing, shim dead): the restore runs `runc "
         "delete --force`. Restore the address if the shim lives, else stop the processes cleanly first"),
    Rule("R102", "warning", "containerd 1.6+ would clean up this task and lose its exit status",
         "nothing runs, but no exit event is published: Kubernetes records 255 \"Unknown\""),
    Rule("R103", "error", "containerd 1.6+ would leave live processes of this task untracked",
         "a hidden, empty or unreadable bundle, or runc state that names no live init: the restore "
         "skips or deletes the task and its shim and processes live on; stop them by hand or fix the dir"),
    Rule("R104", "info", "containerd 1.6+ would skip or delete this task (nothing of it runs)",
         "nothing is lost but the dir; no action needed"),
    Rule("R105", "error", "containerd 1.6+ would block on this task's stopped shim, then SIGKILL it",
         "a stopped shim (SIGSTOP, a debugger) costs the restart about 5-10 s and the task its processes, "
         "and the task is not listed afterwards: resume it (kill -CONT) before restarting the daemon"),
    Rule("R106", "warning", "CRI would record exit 255 \"Unknown\" for this container",
         "the real exit status is lost and the stale pid kept; a pod restart policy acts on 255"),
    Rule("R107", "error", "containerd would lose an exit status that only the task's live shim holds",
         "the restore removes the task (1.7 and 2.x clean up a live shim that runs nothing; any version cleans "
         "up a shim it cannot reach), and with it the only copy of the exit status: read it from the shim "
         "before restarting, or restore what lets the daemon reach the shim (1.6 then keeps it)"),
    Rule("F201", "warning", "Docker's daemon.json cannot be read",
         "live-restore is judged off (Docker's default): fix the file, or the prediction of dockerd may be wrong"),
    Rule("F202", "warning", "Docker's record of a container cannot be read",
         "what dockerd does to it on its restart is not judged; dockerd itself fails to load such a container"),
    Rule("R201", "warning", "dockerd would stop a container containerd keeps running",
         "without live-restore dockerd stops every container containerd re-adopted (its stop signal, SIGKILL "
         "after the stop timeout), then starts those its restart policy names: set \"live-restore\": true in "
         "daemon.json before dockerd starts to keep them"),
    Rule("R202", "warning", "dockerd would record exit code 255 for this container",
         "containerd no longer has its task: the true exit code is lost (read it from a live shim first, "
         "`recover scan` does); a restart policy then starts it again, beside any process of it still running"),
    Rule("R204", "error", "dockerd's start would hang on a stopped shim",
         "a container whose restart policy starts it again gets a new shim that reaches the stopped shim's socket: "
         "the start waits on it and dockerd's API never answers: resume the shim (kill -CONT) before dockerd starts"),
    Rule("R203", "warning", "Docker's record contradicts what runs",
         "`docker ps` says running for a container whose processes are gone (dockerd missed the exit while "
         "containerd was down), or exited for one that runs: `docker stop` it, or restart dockerd"),
]

RULES: dict[str, Rule] = {r.code: r for r in _RULES}


def finding(code: str, message: str, path: str | None = None) -> Finding:
    """A finding of a catalogued code; the severity comes from the catalog."""
    return Finding(code, RULES[code].severity, message, path)
