"""`recover repair` (issue 3) through the CLI, on real files and real processes under the stand-in shim.

Each test builds its own root under tmp_path with RootBuilder; the module is a child subreaper (like
systemd or tini), so that the container process of a killed shim comes back to it: an orphan whose
parent is not pid 1, which containerd itself would never notice.  Where a run must die mid-way, it
runs as `python -m recover` in a subprocess with RECOVER_FAULT naming the step (it SIGKILLs itself).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from procs import dead_pid, named_process, ticks
from typer.testing import CliRunner

from recover import repair as rp
from recover.builders import become_subreaper, capture_proc
from recover.cli import app
from recover.generations.containerd_0_2.builder import RootBuilder, process_json

runner = CliRunner()

RUNNING, ORPHAN, VANISHED, EXITED, REUSED, ZOMBIE = ("%02d" % n + "e" * 62 for n in range(1, 7))
REWRITTEN, BROKEN, NOPID, LIVE_DOOMED, KEEP = ("%02d" % n + "d" * 62 for n in range(1, 6))
JOURNAL_KEYS = {"time", "action", "path", "before", "after", "reason", "container", "process"}
TEMP = ".recover-tmp-*"


@pytest.fixture(scope="module", autouse=True)
def subreaper():
    become_subreaper()


# --- helpers -------------------------------------------------------------------------------

def tree(top: Path, *, dir_mtimes: bool = True) -> dict[str, tuple]:
    """Every entry under top: type, mode, mtime and (files) bytes / (links) target. Follows nothing.

    dir_mtimes=False leaves directories' mtimes out (creating a file in a dir changes it)."""
    out = {}
    for d, ds, fs in os.walk(top):
        for n in ds + fs:
            p = os.path.join(d, n)
            st = os.lstat(p)
            data = None
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    data = f.read()
            elif stat.S_ISLNK(st.st_mode):
                data = os.readlink(p).encode()
            mtime = None if stat.S_ISDIR(st.st_mode) and not dir_mtimes else st.st_mtime_ns
            out[os.path.relpath(p, top)] = (stat.S_IFMT(st.st_mode), st.st_mode, mtime, data)
    return out


def contents(top: Path) -> dict[str, bytes | None]:
    """Names and file bytes only: what undo can promise (a restored file is a new file)."""
    return {k: v[3] for k, v in tree(top).items()}


def changes(before: dict, after: dict) -> dict[str, tuple]:
    return {k: (before.get(k), after.get(k)) for k in before.keys() | after.keys() if before.get(k) != after.get(k)}


def cli(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def repair_json(root: Path, *args: str) -> tuple[int, dict]:
    result = cli("repair", root, "-f", "json", *args)
    assert result.stdout, result.output
    doc = orjson.loads(result.stdout)
    assert doc["schema"] == "recover.repair/1"
    return result.exit_code, doc


def scan(root: Path) -> dict:
    result = cli("scan", root, "-f", "json")
    assert result.exit_code == 0, result.output
    return orjson.loads(result.stdout)


def proc(doc: dict, cid: str, pid_id: str = "init") -> dict:
    c = next(c for c in doc["containers"] if c["id"] == cid)
    return next(p for p in c["processes"] if p["id"] == pid_id)


def recover_subprocess(*args: str, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != rp.FAULT_ENV}
    if fault is not None:
        env[rp.FAULT_ENV] = fault
    return subprocess.run([sys.executable, "-m", "recover", *map(str, args)], env=env, capture_output=True,
                          timeout=60)


def stat_fields(pid: int) -> list[bytes] | None:
    """/proc/<pid>/stat from field 3 (state) on, or None once it is reaped."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return data[data.rindex(b")") + 2:].split()


def alive(pid: int) -> bool:
    fields = stat_fields(pid)
    return fields is not None and fields[0] not in (b"Z", b"X")


def ppid(pid: int) -> int:
    return int(stat_fields(pid)[1])


def journal_of(root: Path) -> Path:
    return root.parent / f"{root.name}.recover-journal.jsonl"


def journal_lines(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def wait_for_cmdline(pid: int, needle: bytes) -> None:
    deadline = time.monotonic() + 5
    while needle not in Path(f"/proc/{pid}/cmdline").read_bytes():
        assert time.monotonic() < deadline, "the fake daemon never exec'd"
        time.sleep(0.005)


def status_file(root: Path, cid: str, name: str = "exitStatus") -> bytes | None:
    p = root / cid / "init" / name
    return p.read_bytes() if p.exists() else None


# --- one root with a process in every state ------------------------------------------------

@pytest.fixture
def world(tmp_path):
    """running / orphaned / vanished / exited / pid-reused / zombie (shim stopped), all real."""
    with RootBuilder(tmp_path / "root") as b:
        p = {"running": b.start_process(RUNNING, "init")}
        p["orphan"] = b.start_process(ORPHAN, "init")
        p["orphan"].kill_shim()  # its child comes back to this subreaper: ppid is not 1
        b.container(VANISHED)
        b.write_process(VANISHED, "init", pid=dead_pid(), starttime=4242)
        p["exited"] = b.start_process(EXITED, "init", ["sh", "-c", "exit 3"])
        p["exited"].wait_exit_status()
        p["exited"].shim.wait(5)
        p["other"] = b.spawn_unrelated()  # holds the pid REUSED recorded, with other start ticks
        b.container(REUSED)
        b.write_process(REUSED, "init", pid=p["other"].pid, starttime=ticks(p["other"].pid) - 500)
        p["zombie"] = b.start_process(ZOMBIE, "init")
        p["zombie"].stop_shim()  # a hung shim never reaps it
        p["zombie"].kill_child(signal.SIGKILL)
        p["zombie"].wait_state("Z")
        doc = scan(b.root)
        verdicts = {c["id"]: c["processes"][0]["verdict"] for c in doc["containers"]}
        assert verdicts == {RUNNING: "running", ORPHAN: "orphaned", VANISHED: "vanished", EXITED: "exited",
                            REUSED: "pid-reused", ZOMBIE: "zombie"}
        yield b, p


EXPECTED_WRITES = {ORPHAN: b"137", VANISHED: b"255", REUSED: b"255", ZOMBIE: b"137"}


def test_dry_run_changes_nothing_and_prints_the_plan(world, tmp_path):
    b, p = world
    before = tree(tmp_path)  # the root and everything beside it (journal, lock, quarantine dir)
    table = cli("repair", b.root, "--kill-orphans")
    assert table.exit_code == 0, table.output
    out = table.stdout
    assert re.search(r"CONTAINER\s+PROCESS\s+ACTION\s+VALUE\s+RESULT\s+REASON", out)
    for cid, value in EXPECTED_WRITES.items():
        row = next(line for line in out.splitlines() if line.startswith(cid[:12]))
        assert value.decode() in row.split() and "planned" in row.split()
    assert "kill-orphan" in out and out.count("write-exit-status") == 3
    assert "dry run: nothing was changed" in out

    code, doc = repair_json(b.root, "--kill-orphans", "--quarantine", tmp_path / "q")
    assert code == 0
    assert (doc["apply"], doc["journal"], doc["root"]) == (False, None, str(b.root))
    plan = {(a["container"], a["process"], a["action"], a["value"]) for a in doc["actions"]}
    assert plan == {(ORPHAN, "init", "kill-orphan", "137"), (VANISHED, "init", "write-exit-status", "255"),
                    (REUSED, "init", "write-exit-status", "255"), (ZOMBIE, "init", "write-exit-status", "137")}
    assert {a["result"] for a in doc["actions"]} == {"planned"}
    assert all(a["reason"] for a in doc["actions"])
    assert next(a for a in doc["actions"] if a["container"] == ORPHAN)["pid"] == p["orphan"].pid
    assert doc["summary"] == {"planned": 4}

    assert tree(tmp_path) == before  # bytes, modes and mtimes: no journal, no lock, no quarantine dir
    assert alive(p["orphan"].pid) and alive(p["other"].pid) and p["zombie"].state() == "Z"


def test_apply_writes_exactly_what_the_daemon_should_have(world):
    b, p = world
    orphan_fd = os.pidfd_open(p["orphan"].pid)  # to see how it died, without reaping it
    try:
        before = tree(b.root, dir_mtimes=False)
        code, doc = repair_json(b.root, "--apply", "--kill-orphans")
        assert code == 0, doc
        after = tree(b.root, dir_mtimes=False)

        written = changes(before, after)
        assert set(written) == {f"{cid}/init/exitStatus" for cid in EXPECTED_WRITES}
        shims = after[f"{EXITED}/init/exitStatus"]  # written by the (stand-in) shim itself
        for cid, value in EXPECTED_WRITES.items():
            old, new = written[f"{cid}/init/exitStatus"]
            assert old is None and new[3] == value  # new files, decimal, no newline
            assert new[:2] == shims[:2]  # a regular file with the shim's mode
        assert status_file(b.root, EXITED) == b"3"  # a valid status is never rewritten...
        assert before[f"{EXITED}/init/exitStatus"] == after[f"{EXITED}/init/exitStatus"]  # ...nor touched
        assert not list(b.root.rglob(TEMP))

        assert {(a["container"], a["action"], a["result"]) for a in doc["actions"]} == {
            (ORPHAN, "kill-orphan", "applied"), (VANISHED, "write-exit-status", "applied"),
            (REUSED, "write-exit-status", "applied"), (ZOMBIE, "write-exit-status", "applied")}
        assert doc["apply"] is True and doc["journal"] == str(journal_of(b.root))

        # the orphan really died, of SIGKILL; everything else lives on
        info = os.waitid(os.P_PIDFD, orphan_fd, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        assert info is not None and (info.si_code, info.si_status) == (os.CLD_KILLED, signal.SIGKILL)
        assert alive(p["running"].pid) and ppid(p["running"].pid) == p["running"].shim.pid
        assert alive(p["other"].pid)  # the process that reused a pid is never signalled
        assert p["zombie"].state() == "Z"  # still unreaped: its shim is stopped
    finally:
        os.close(orphan_fd)

    # what containerd would now do: use the recorded statuses
    doc = scan(b.root)
    assert {c["id"]: c["processes"][0]["containerd_would"] for c in doc["containers"]} == {
        RUNNING: "keep-running", ORPHAN: "use-exit-status", VANISHED: "use-exit-status",
        EXITED: "use-exit-status", REUSED: "use-exit-status", ZOMBIE: "use-exit-status"}


def test_a_second_apply_is_a_no_op(world, tmp_path):
    b, _ = world
    assert cli("repair", b.root, "--apply", "--kill-orphans").exit_code == 0
    journal = journal_of(b.root)
    before, journal_before = tree(b.root), journal.read_bytes()
    again = cli("repair", b.root, "--apply", "--kill-orphans")
    assert again.exit_code == 0, again.output
    assert "(nothing to repair)" in again.stdout
    assert again.stdout.rstrip().endswith("nothing to do: nothing was changed")  # not "applied"
    assert tree(b.root) == before  # not even a directory mtime moved
    assert journal.read_bytes() == journal_before


def test_without_kill_orphans_the_orphan_is_left_alive_and_the_plan_says_why(world):
    b, p = world
    code, doc = repair_json(b.root, "--apply")
    assert code == 0
    row = next(a for a in doc["actions"] if a["container"] == ORPHAN)
    assert (row["action"], row["result"], row["value"]) == ("none", "info", None)
    assert row["reason"].startswith("left running (no --kill-orphans)")
    assert "never notice" in row["reason"]  # its parent is this subreaper, not pid 1
    assert alive(p["orphan"].pid) and ppid(p["orphan"].pid) == os.getpid()
    assert status_file(b.root, ORPHAN) is None
    assert {cid: status_file(b.root, cid) for cid in (VANISHED, REUSED, ZOMBIE)} == {
        VANISHED: b"255", REUSED: b"255", ZOMBIE: b"137"}


def test_container_option_limits_the_repair(world):
    b, p = world
    before = tree(b.root, dir_mtimes=False)
    code, doc = repair_json(b.root, "--apply", "--kill-orphans", "--container", VANISHED[:8])
    assert code == 0
    assert [(a["container"], a["action"]) for a in doc["actions"]] == [(VANISHED, "write-exit-status")]
    assert set(changes(before, tree(b.root, dir_mtimes=False))) == {f"{VANISHED}/init/exitStatus"}
    assert alive(p["orphan"].pid)


@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, b"143"), (signal.SIGINT, b"130")])
def test_a_zombies_status_is_the_one_the_kernel_kept(tmp_path, sig, status):
    with RootBuilder(tmp_path / "root") as b:
        live = b.start_process(ZOMBIE, "init")
        live.stop_shim()
        live.kill_child(sig)
        live.wait_state("Z")
        code, doc = repair_json(b.root, "--apply")
        assert code == 0
        assert [(a["action"], a["value"], a["result"]) for a in doc["actions"]] == [
            ("write-exit-status", status.decode(), "applied")]
        assert status_file(b.root, ZOMBIE) == status


# --- refusals ------------------------------------------------------------------------------

def fake_daemon(tmp_path: Path, name: str, *args: str, cwd: Path | None = None) -> subprocess.Popen:
    """A process whose argv[0] basename is `name`: python run through a link of that name."""
    return named_process(tmp_path / "bin", name, *args, cwd=cwd)


@pytest.mark.parametrize("name, argv, refused", [
    ("containerd", ["--state-dir", "{alias}", "--debug"], True),  # the flag names a link to the root
    ("docker-containerd", ["--state-dir={root}"], True),
    ("containerd", ["-state-dir", "{root}/"], True),
    ("containerd", ["--state-dir", "root"], True),  # relative to the daemon's cwd, not to recover's
    ("containerd", ["--state-dir", "{other}"], False),  # a daemon on another root
    ("containerd-shim", ["--state-dir", "{root}"], False),  # not a daemon
])
def test_a_daemon_on_the_root_makes_apply_refuse(world, tmp_path, name, argv, refused):
    b, p = world
    alias = tmp_path / "alias"
    alias.symlink_to(b.root)
    (tmp_path / "other").mkdir()
    fmt = {"alias": str(alias), "root": str(b.root), "other": str(tmp_path / "other")}
    daemon = fake_daemon(tmp_path, name, *(a.format(**fmt) for a in argv), cwd=tmp_path)
    try:
        before = tree(tmp_path)
        dry = cli("repair", b.root)
        assert dry.exit_code == 0
        assert ("--apply will refuse" in dry.stderr) is refused
        scanned = cli("check", b.root, "-f", "json", "--select", "H009")  # scan and check say it too
        assert bool(orjson.loads(scanned.stdout)["findings"]) is refused
        result = cli("repair", b.root, "--apply", "--kill-orphans")
        if not refused:
            assert result.exit_code == 0, result.output
            return
        assert result.exit_code == 4, result.output
        assert "refusing" in result.stderr and f"pid {daemon.pid}" in result.stderr
        assert tree(tmp_path) == before  # nothing written: no journal, no lock file either
        assert alive(p["orphan"].pid)
        forced = cli("repair", b.root, "--apply", "--kill-orphans", "--force")  # --force overrides
        assert forced.exit_code == 0, forced.output
        assert {cid: status_file(b.root, cid) for cid in EXPECTED_WRITES} == EXPECTED_WRITES
    finally:
        daemon.kill()
        daemon.wait()


def test_a_live_daemon_named_by_docker_containerd_pid_makes_apply_refuse(world, tmp_path):
    b, p = world
    pid_file = b.root.parent / "docker-containerd.pid"
    # a pid file naming a live process that is not a daemon (a stale, reused pid): no refusal
    pid_file.write_bytes(str(p["other"].pid).encode())
    assert cli("repair", b.root).stderr == ""
    daemon = fake_daemon(tmp_path, "docker-containerd")  # no --state-dir: /run/containerd, not this root
    try:
        pid_file.write_bytes(str(daemon.pid).encode())
        before = tree(tmp_path)
        result = cli("repair", b.root, "--apply")
        assert result.exit_code == 4, result.output
        assert f"named by {pid_file}" in result.stderr
        assert tree(tmp_path) == before
        forced = cli("repair", b.root, "--apply", "--force")
        assert forced.exit_code == 0, forced.output
        assert status_file(b.root, VANISHED) == b"255"
    finally:
        daemon.kill()
        daemon.wait()


def test_another_repair_holding_the_lock_makes_apply_refuse(world, tmp_path):
    b, _ = world
    real = os.path.realpath(b.root)
    assert not rp.lock_path(real).startswith(real + "/")  # the lock lives outside the root
    fd = rp.take_lock(real)
    try:
        before = tree(b.root)
        result = cli("repair", b.root, "--apply")
        assert result.exit_code == 4, result.output
        assert "another recover repair holds" in result.stderr
        assert tree(b.root) == before and not journal_of(b.root).exists()
        as_json = cli("repair", b.root, "--apply", "-f", "json")
        assert as_json.exit_code == 4 and "another recover repair holds" in orjson.loads(as_json.stdout)["refused"]
    finally:
        os.close(fd)
    assert cli("repair", b.root, "--apply").exit_code == 0  # released: the next run goes ahead


def test_apply_beside_a_captured_proc_is_refused_even_with_force(world, tmp_path):
    b, p = world
    fake_proc = capture_proc(tmp_path / "proc", [p["running"].pid])
    before = tree(b.root)
    for extra in ((), ("--force",)):
        result = cli("repair", b.root, "--apply", "--proc-root", fake_proc, *extra)
        assert result.exit_code == 4 and "live /proc" in result.stderr and "captured proc" in result.stderr
    assert tree(b.root) == before


def test_a_dir_that_is_not_a_proc_is_a_usage_error(world, tmp_path):
    b, _ = world
    empty = tmp_path / "empty"
    empty.mkdir()
    for proc_root, why in ((tmp_path / "nonexistent", "not a directory"), ("/etc", "btime"),
                           (empty, "btime")):
        for command in ("scan", "check", "repair"):
            result = cli(command, b.root, "--proc-root", proc_root)
            assert result.exit_code == 2 and "not a proc root" in result.stderr and why in result.stderr, command
    only_stat = tmp_path / "only-stat"
    only_stat.mkdir()
    shutil.copyfile("/proc/stat", only_stat / "stat")
    result = cli("check", b.root, "--proc-root", only_stat)
    assert result.exit_code == 2 and "no process dir" in result.stderr
    result = cli("scan", b.root, "--proc-root", "/proc", "--offline")
    assert result.exit_code == 2 and "--offline" in result.stderr


# --- user errors: a message and exit 2, before anything is written ---------------------------

SYSFS = Path("/sys")  # a dir where nobody, not even root, may create a file


def locked_dir(tmp_path: Path) -> Path:
    """A directory whose permission bits forbid writing: what recover can see before it writes."""
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    return locked


AS_ROOT = os.geteuid() == 0


def vanished_root(tmp_path: Path) -> RootBuilder:
    b = RootBuilder(tmp_path / "root")
    b.container(VANISHED)
    b.write_process(VANISHED, "init", pid=dead_pid(), starttime=1)
    return b


def assert_usage_error(result, *words: str) -> None:
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith("recover: ") and all(w in line for w in words), line
    assert "Traceback" not in result.output


def lock_is_free(root: Path) -> bool:
    import fcntl

    fd = os.open(rp.lock_path(os.path.realpath(root)), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


@pytest.mark.parametrize("where", ["missing dir", "a file for a dir", "sysfs", "a FIFO"])
def test_a_journal_that_cannot_be_written_is_a_usage_error(tmp_path, where):
    with vanished_root(tmp_path) as b:
        journal = {"missing dir": tmp_path / "nope" / "j.jsonl", "a file for a dir": b.root / VANISHED / "init" / "pid" / "j",
                   "sysfs": SYSFS / "j.jsonl", "a FIFO": tmp_path / "fifo"}[where]
        if where == "a FIFO":
            os.mkfifo(journal)  # opened for writing, it would wait for a reader forever
        before = tree(b.root)
        result = cli("repair", b.root, "--apply", "--journal", journal)
        assert_usage_error(result, "--journal", str(journal))
        assert tree(b.root) == before
        if os.path.exists(rp.lock_path(os.path.realpath(b.root))):
            assert lock_is_free(b.root)  # released on the way out


def test_a_lock_file_that_cannot_be_created_is_a_usage_error(tmp_path):
    with vanished_root(tmp_path) as b:
        os.mkdir(rp.lock_path(os.path.realpath(b.root)))  # a dir where the lock file goes
        before = tree(b.root)
        result = cli("repair", b.root, "--apply")
        assert_usage_error(result, "cannot create the lock file", rp.lock_path(os.path.realpath(b.root)))
        assert tree(b.root) == before and not journal_of(b.root).exists()


@pytest.mark.parametrize("where", ["a file", "under a file", pytest.param("locked dir", marks=pytest.mark.skipif(
    AS_ROOT, reason="root writes whatever the permission bits say: the non-root run checks this"))])
def test_a_quarantine_that_is_not_a_usable_dir_is_refused_before_anything_is_written(tmp_path, where):
    with RootBuilder(tmp_path / "root") as b:
        b.container(NOPID)
        b.write_process(NOPID, "init")  # containerd would delete it: a quarantine action
        b.container(VANISHED)
        b.write_process(VANISHED, "init", pid=dead_pid(), starttime=1)  # and a write-exit-status
        (tmp_path / "file").write_bytes(b"")
        quarantine = {"a file": tmp_path / "file", "under a file": tmp_path / "file" / "q",
                      "locked dir": locked_dir(tmp_path) / "q"}[where]
        before = tree(tmp_path)
        for apply in ([], ["--apply"]):
            assert_usage_error(cli("repair", b.root, *apply, "--quarantine", quarantine), "--quarantine")
        assert tree(tmp_path) == before  # no lock file, no journal, no exitStatus


@pytest.mark.parametrize("where", ["missing dir", "a dir", "sysfs"])
def test_a_baseline_that_cannot_be_written_is_a_usage_error(tmp_path, where):
    with vanished_root(tmp_path) as b:
        target = {"missing dir": tmp_path / "nope" / "b.json", "a dir": tmp_path,
                  "sysfs": SYSFS / "b.json"}[where]
        assert_usage_error(cli("check", b.root, "--write-baseline", target), "--write-baseline")


def test_undo_of_a_missing_file_creates_nothing(tmp_path):
    missing = tmp_path / "missing.jsonl"
    assert_usage_error(cli("repair", "--undo", missing), "--undo", "No such file")
    assert not missing.exists()


@pytest.mark.parametrize("content", [b"garbage\n", b"\x7fELF\x02\x01\x01\0\0\0", b"[1, 2]\n{\"id\": 5}\n",
                                     b'{"id": "x", "phase": "intent", "path_hex": "zz"}\n'])
def test_undo_of_something_that_is_not_a_journal_changes_nothing(tmp_path, content):
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_bytes(content)
    for fmt in ("table", "json"):
        assert_usage_error(cli("repair", "--undo", garbage, "-f", fmt), "no recover journal entry")
    assert garbage.read_bytes() == content  # nothing appended


@pytest.mark.parametrize("kind", ["fifo", "dir"])
def test_undo_never_opens_a_fifo_or_a_dir(tmp_path, kind):
    path = tmp_path / "j"
    os.mkfifo(path) if kind == "fifo" else path.mkdir()
    assert_usage_error(cli("repair", "--undo", path), "--undo", "not a regular file")


def test_undo_in_json(tmp_path):
    with vanished_root(tmp_path) as b:
        assert cli("repair", b.root, "--apply").exit_code == 0
        result = cli("repair", "--undo", journal_of(b.root), "-f", "json")
        assert result.exit_code == 0, result.output
        doc = orjson.loads(result.stdout)
        assert doc == {"schema": "recover.undo/1", "journal": str(journal_of(b.root)),
                       "entries": [{"path": str(b.root / VANISHED / "init" / "exitStatus"),
                                    "action": "write-exit-status", "result": "reverted", "detail": "restored"}],
                       "summary": {"reverted": 1, "not-reverted": 0}}
        assert not (b.root / VANISHED / "init" / "exitStatus").exists()
        empty = tmp_path / "empty.jsonl"
        empty.write_bytes(b"")  # a run that changed nothing: nothing to undo, no error
        assert orjson.loads(cli("repair", "--undo", empty, "-f", "json").stdout)["entries"] == []


# --- journal and undo ----------------------------------------------------------------------

def test_journal_lines_and_undo_restore_the_root(world):
    b, p = world
    b.container(REWRITTEN)
    b.write_process(REWRITTEN, "init", pid=dead_pid(), starttime=77, exit_status=b"0\n")
    before = contents(b.root)
    assert cli("repair", b.root, "--apply", "--kill-orphans").exit_code == 0
    assert status_file(b.root, REWRITTEN) == b"0"

    lines = journal_lines(journal_of(b.root))
    intents = [e for e in lines if e["phase"] == "intent"]
    assert all(isinstance(e["time"], str) and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", e["time"])
               for e in lines)
    assert all(JOURNAL_KEYS <= set(e) for e in intents)
    outcomes = {e["id"]: e["phase"] for e in lines if e["phase"] != "intent"}
    assert outcomes == {e["id"]: "done" for e in intents}  # every intent has its outcome
    assert all(lines.index(next(x for x in lines if x["id"] == e["id"] and x["phase"] == "done"))
               > lines.index(e) for e in intents)  # intent first
    by = {(e["container"], e["action"], os.path.basename(e["path"])): e for e in intents}
    root = os.path.realpath(b.root)
    rewrite = by[(REWRITTEN, "rewrite-exit-status", "exitStatus")]
    assert (rewrite["before"], rewrite["after"], rewrite["process"]) == ("0\n", "0", "init")
    assert rewrite["path"] == f"{root}/{REWRITTEN}/init/exitStatus"
    kill = by[(ORPHAN, "kill-orphan", str(p["orphan"].pid))]
    assert (kill["before"], kill["after"]) == ("alive", "SIGKILL")
    for cid, value in EXPECTED_WRITES.items():
        e = next(e for e in intents if e["container"] == cid and e["path"].endswith("/exitStatus"))
        assert (e["before"], e["after"]) == (None, value.decode()) and e["reason"]

    undone = cli("repair", "--undo", journal_of(b.root))
    assert undone.exit_code == 1, undone.output  # a kill cannot be undone, and it says so
    report = undone.stdout.splitlines()
    assert any(line.startswith("not-reverted") and "kill-orphan" in line and "cannot be revived" in line
               for line in report)
    assert sum(line.startswith("reverted") for line in report) == 4  # 3 written, 1 rewritten
    after = contents(b.root)
    # the root is as it was, except the 137 that records a kill that really happened
    assert changes(before, after) == {f"{ORPHAN}/init/exitStatus": (None, b"137")}
    assert status_file(b.root, REWRITTEN) == b"0\n"
    assert not list(b.root.rglob(TEMP))
    undo_lines = journal_lines(journal_of(b.root))[len(lines):]
    assert {e["action"] for e in undo_lines} == {"undo-write-exit-status", "undo-rewrite-exit-status"}


def test_a_second_undo_changes_nothing_and_says_it_was_done(tmp_path):
    with RootBuilder(tmp_path / "root") as b:
        b.container(VANISHED)
        b.write_process(VANISHED, "init", pid=dead_pid(), starttime=1)
        b.container(REWRITTEN)
        b.write_process(REWRITTEN, "init", pid=dead_pid(), starttime=1, exit_status=b"%!u(uint32=255)")
        b.container(NOPID)
        b.write_process(NOPID, "init")
        original = contents(b.root)
        assert cli("repair", b.root, "--apply", "--quarantine", tmp_path / "q").exit_code == 0
        assert cli("repair", "--undo", journal_of(b.root)).exit_code == 0
        assert contents(b.root) == original
        again = cli("repair", "--undo", journal_of(b.root), "-f", "json")
        assert again.exit_code == 0, again.output
        doc = orjson.loads(again.stdout)
        assert doc["schema"] == "recover.undo/1" and doc["journal"] == str(journal_of(b.root))
        assert len(doc["entries"]) == 3 and doc["summary"] == {"reverted": 3, "not-reverted": 0}
        assert all(e["result"] == "reverted" and "undone already" in e["detail"] for e in doc["entries"])
        assert contents(b.root) == original


def test_undo_leaves_a_file_changed_since_alone(tmp_path):
    with RootBuilder(tmp_path / "root") as b:
        b.container(VANISHED)
        b.write_process(VANISHED, "init", pid=dead_pid(), starttime=1)
        assert cli("repair", b.root, "--apply").exit_code == 0
        (b.root / VANISHED / "init" / "exitStatus").write_bytes(b"9")  # someone wrote after the repair
        undone = cli("repair", "--undo", journal_of(b.root))
        assert undone.exit_code == 1 and "not-reverted" in undone.stdout and "changed since" in undone.stdout
        assert status_file(b.root, VANISHED) == b"9"


# --- a crash at each step of the publish sequence ------------------------------------------

def _publish_steps() -> list[str]:
    """Every step named by a fault(...) call in the repair machinery, file-name steps expanded."""
    source = "".join(Path(rp.__file__).with_name(n).read_text() for n in ("apply.py", "files.py"))
    steps = set(re.findall(r'\bfault\("([^"{}]+)"\)', source))
    for template in re.findall(r'\bfault\(f"\{name\}([^"]+)"\)', source):
        steps |= {name + template for name in ("exitStatus", "pid", "starttime")}
    return sorted(steps)


STEPS = _publish_steps()


# (step, what the root holds): every step is reached by every kind of write that passes through it
CRASHES = [
    ("temp-partial", "vanished"), ("exitStatus-before-link", "vanished"), ("exitStatus-before-unlink", "vanished"),
    ("temp-partial", "no-pid"), ("starttime-before-link", "no-pid"), ("starttime-before-unlink", "no-pid"),
    ("pid-before-link", "no-pid"), ("pid-before-unlink", "no-pid"),
    ("rewrite-before-rename", "daemon-format"), ("rewrite-before-rename", "empty-pid"),
]


def test_every_fault_step_is_exercised():
    assert {step for step, _ in CRASHES} == set(STEPS)


def _crash_root(b: RootBuilder, kind: str) -> tuple[Path, dict[str, bytes], dict[str, bytes | None]]:
    """A root with one process to repair: (its dir, {file: right bytes}, {file: bytes before})."""
    if kind in ("no-pid", "empty-pid"):
        live = b.start_process(RUNNING, "init")
        right = {"pid": (live.dir / "pid").read_bytes(), "starttime": (live.dir / "starttime").read_bytes()}
        (live.dir / "pid").unlink()
        if kind == "empty-pid":
            (live.dir / "pid").write_bytes(b"")
            return live.dir, right, {"pid": b"", "starttime": right["starttime"]}
        (live.dir / "starttime").unlink()
        return live.dir, right, {"pid": None, "starttime": None}
    cid = REWRITTEN if kind == "daemon-format" else VANISHED
    b.container(cid)
    if kind == "daemon-format":
        pdir = b.write_process(cid, "init", pid=dead_pid(), starttime=1, exit_status=b"%!u(uint32=255)")
        return pdir, {"exitStatus": b"255"}, {"exitStatus": b"%!u(uint32=255)"}
    return b.write_process(cid, "init", pid=dead_pid(), starttime=1), {"exitStatus": b"255"}, {"exitStatus": None}


@pytest.mark.parametrize("step, kind", CRASHES)
def test_a_crash_at_each_step_leaves_the_file_absent_or_right(tmp_path, step, kind):
    with RootBuilder(tmp_path / "root") as b:
        pdir, right, old = _crash_root(b, kind)
        original = contents(b.root)
        crashed = recover_subprocess("repair", b.root, "--apply", fault=step)
        assert crashed.returncode == -signal.SIGKILL, crashed.stderr  # it did reach the step, and died there
        for name, value in right.items():
            now = (pdir / name).read_bytes() if (pdir / name).exists() else None
            assert now in (old[name], value), f"{name} is {now!r} after a crash at {step}"  # never partial
        assert len(list(pdir.glob(TEMP))) == 1  # the temp file of the step it died at
        if kind == "vanished" and not (pdir / "exitStatus").exists():
            assert proc(scan(b.root), VANISHED)["verdict"] == "vanished"  # a temp file is never read as state

        again = recover_subprocess("repair", b.root, "--apply")
        assert again.returncode == 0, again.stderr
        assert not list(pdir.glob(TEMP))  # cleaned by the next run
        assert {name: (pdir / name).read_bytes() for name in right} == right  # and the job is finished

        undone = cli("repair", "--undo", journal_of(b.root))
        assert undone.exit_code == 0, undone.output
        assert contents(b.root) == original  # consistent: back to the state before the first run


def test_a_crash_between_the_kill_and_the_137_still_ends_with_137(world):
    b, p = world
    crashed = recover_subprocess("repair", b.root, "--apply", "--kill-orphans", "--container", ORPHAN,
                                 fault="exitStatus-before-link")
    assert crashed.returncode == -signal.SIGKILL
    assert not alive(p["orphan"].pid) and status_file(b.root, ORPHAN) is None
    # unreaped by this subreaper, the killed orphan is a zombie whose shim is gone: its status is read back
    again = recover_subprocess("repair", b.root, "--apply", "--container", ORPHAN)
    assert again.returncode == 0, again.stderr
    assert status_file(b.root, ORPHAN) == b"137"
    assert not list((b.root / ORPHAN).rglob(TEMP))


# --- quarantine ----------------------------------------------------------------------------

def test_quarantine_moves_whole_the_dirs_containerd_would_delete(tmp_path):
    qdir = tmp_path / "quarantine"
    with RootBuilder(tmp_path / "root") as b:
        b.container(BROKEN)  # undecodable process.json and a dead pid: rule 1
        b.write_process(BROKEN, "init", pid=dead_pid(), starttime=1, process=b'{"args":["sl')
        b.container(NOPID)  # no pid file and no shim: rule 2
        b.write_process(NOPID, "init", extra={"log.json": b'{"level":"error","msg":"start failed"}\n'})
        keep = b.start_process(KEEP, "init")
        doomed = b.start_process(LIVE_DOOMED, "init")  # running, but written by containerd 0.2.8: rule 1
        (doomed.dir / "process.json").write_bytes(
            orjson.dumps(process_json(["sleep", "1000"], capabilities_as_list=True)))
        assert {c["id"]: c["containerd_would"] for c in scan(b.root)["containers"]} == {
            BROKEN: "drop-container", NOPID: "drop-container", KEEP: "keep", LIVE_DOOMED: "drop-container"}
        trees = {cid: tree(b.root / cid) for cid in (BROKEN, NOPID, LIVE_DOOMED)}

        dry_code, dry = repair_json(b.root, "--quarantine", qdir)
        assert dry_code == 0 and not qdir.exists()
        code, doc = repair_json(b.root, "--apply", "--quarantine", qdir, "--kill-orphans")
        assert code == 0, doc
        rows = {a["container"]: a for a in doc["actions"] if a["process"] is None}
        assert {(a["container"], a["action"]) for a in dry["actions"]} == {
            (a["container"], a["action"]) for a in doc["actions"]}
        assert (rows[BROKEN]["action"], rows[BROKEN]["result"]) == ("quarantine", "applied")
        assert (rows[NOPID]["action"], rows[NOPID]["result"]) == ("quarantine", "applied")
        assert rows[BROKEN]["detail"] == f"moved to {qdir / BROKEN}"
        # a running process: not moved without --force (--kill-orphans only kills orphans), and the plan says so
        assert (rows[LIVE_DOOMED]["action"], rows[LIVE_DOOMED]["result"]) == ("none", "info")
        assert "not moved" in rows[LIVE_DOOMED]["reason"] and "needs --force" in rows[LIVE_DOOMED]["reason"]
        assert not any(a["action"] == "write-exit-status" for a in doc["actions"])  # the dead pid's dir is moved as is
        assert alive(doomed.pid) and alive(keep.pid)

        for cid in (BROKEN, NOPID):  # whole: every byte, mode, mtime; FIFOs stay FIFOs
            assert not (b.root / cid).exists()
            assert tree(qdir / cid) == trees[cid]
            assert (qdir / cid / "init" / "exit").is_fifo() and (qdir / cid / "init" / "control").is_fifo()
        assert tree(b.root / LIVE_DOOMED) == trees[LIVE_DOOMED]
        assert {c["id"]: c["containerd_would"] for c in scan(b.root)["containers"]} == {
            KEEP: "keep", LIVE_DOOMED: "drop-container"}

        code, doc = repair_json(b.root, "--apply", "--quarantine", qdir, "--force")
        assert code == 0, doc
        assert [(a["container"], a["action"], a["result"]) for a in doc["actions"]] == [
            (LIVE_DOOMED, "quarantine", "applied")]
        assert tree(qdir / LIVE_DOOMED) == trees[LIVE_DOOMED]
        assert alive(doomed.pid)  # moved, not killed
        left = scan(b.root)
        assert [(c["id"], c["containerd_would"]) for c in left["containers"]] == [(KEEP, "keep")]
        assert not [f for f in left["findings"] if f["severity"] == "error" and f["code"].startswith(("F", "R"))]
        assert not any(c["containerd_would"] == "drop-container" for c in left["containers"])

        # undo moves them back, whole
        undone = cli("repair", "--undo", journal_of(b.root))
        assert undone.exit_code == 0, undone.output
        for cid, t in trees.items():
            assert tree(b.root / cid) == t
        assert not any(qdir.iterdir())


def test_a_quarantine_dir_inside_the_root_is_refused(tmp_path):
    with RootBuilder(tmp_path / "root") as b:
        b.container(NOPID)
        b.write_process(NOPID, "init")
        before = tree(tmp_path)
        # containerd would take the quarantine dir for a container without state.json, and delete it
        for apply in ([], ["--apply"]):
            result = cli("repair", b.root, *apply, "--quarantine", b.root / "quarantine")
            assert result.exit_code == 2 and "inside the root" in result.stderr
        assert tree(tmp_path) == before


def test_quarantine_names_never_clobber(tmp_path):
    qdir = tmp_path / "quarantine"
    (qdir / NOPID).mkdir(parents=True)  # left by an earlier run
    (qdir / NOPID / "mark").write_bytes(b"earlier")
    with RootBuilder(tmp_path / "root") as b:
        b.container(NOPID)
        b.write_process(NOPID, "init")
        code, doc = repair_json(b.root, "--apply", "--quarantine", qdir)
        assert code == 0
        assert (qdir / NOPID / "mark").read_bytes() == b"earlier"
        assert (qdir / f"{NOPID}.1" / "init" / "process.json").exists()


# --- rewrite-pid ---------------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["both-missing", "pid-missing", "pid-empty", "pid-garbage", "pid-not-utf8",
                                    "starttime-garbage"])
def test_rewrite_pid_from_the_shims_only_child(tmp_path, damage):
    with RootBuilder(tmp_path / "root") as b:
        live = b.start_process(RUNNING, "init")
        right = {name: (live.dir / name).read_bytes() for name in ("pid", "starttime")}
        assert right == {"pid": str(live.pid).encode(), "starttime": str(ticks(live.pid)).encode()}
        (live.dir / "pid").unlink()
        if damage == "both-missing":
            (live.dir / "starttime").unlink()
        elif damage == "pid-empty":
            (live.dir / "pid").write_bytes(b"")
        elif damage == "pid-garbage":
            (live.dir / "pid").write_bytes(b"\0\0\0\0")  # a power loss
        elif damage == "pid-not-utf8":
            (live.dir / "pid").write_bytes(b"\xff\xfe1")
        elif damage == "starttime-garbage":
            (live.dir / "starttime").write_bytes(b"\0\0")  # containerd would call it another process: 255
        damaged = contents(b.root)
        assert scan(b.root)["containers"][0]["containerd_would"] == "drop-container"

        code, plan = repair_json(b.root, "--quarantine", tmp_path / "q", "--force")
        # the pid file saves the container from rule 2: it is not moved out, even with --force
        assert [(a["action"], a["value"], a["pid"]) for a in plan["actions"]] == [
            ("rewrite-pid", str(live.pid), live.pid)]
        code, doc = repair_json(b.root, "--apply", "--quarantine", tmp_path / "q", "--force")
        assert code == 0, doc
        assert [(a["action"], a["result"]) for a in doc["actions"]] == [("rewrite-pid", "applied")]
        assert not (tmp_path / "q").exists()
        assert {name: (live.dir / name).read_bytes() for name in right} == right  # runc's format
        assert not list(live.dir.glob(TEMP))
        p = proc(scan(b.root), RUNNING)
        assert (p["verdict"], p["containerd_would"], p["pid"]) == ("running", "keep-running", live.pid)
        assert "L010" not in {f["code"] for f in p["findings"]}  # from the pid file now
        assert alive(live.pid) and ppid(live.pid) == live.shim.pid  # a running process is never touched

        undone = cli("repair", "--undo", journal_of(b.root))
        assert undone.exit_code == 0, undone.output
        assert contents(b.root) == damaged  # byte for byte, as before the repair
        assert scan(b.root)["containers"][0]["containerd_would"] == "drop-container"


# --- rewrite-exit-status -------------------------------------------------------------------

@pytest.mark.parametrize("before, after", [(b"0\n", b"0"), (b"%!u(uint32=255)", b"255"), (b" 17 ", b"17")])
def test_rewrite_exit_status_as_a_bare_decimal(tmp_path, before, after):
    with RootBuilder(tmp_path / "root") as b:
        b.container(REWRITTEN)
        b.write_process(REWRITTEN, "init", pid=dead_pid(), starttime=1, exit_status=before)
        code, doc = repair_json(b.root, "--apply")
        assert code == 0, doc
        assert [(a["action"], a["value"], a["result"]) for a in doc["actions"]] == [
            ("rewrite-exit-status", after.decode(), "applied")]
        assert status_file(b.root, REWRITTEN) == after
        p = proc(scan(b.root), REWRITTEN)
        assert (p["verdict"], p["exit_status"], p["containerd_would"]) == ("exited", int(after), "use-exit-status")
        assert cli("repair", b.root, "--apply").stdout.startswith("(nothing to repair)")


# --- hostile names -------------------------------------------------------------------------

def test_names_that_are_not_utf8_are_repaired_journalled_and_undone_byte_for_byte(tmp_path):
    written, moved = os.fsdecode(b"bad-\xff\x1b[31m"), os.fsdecode(b"nopid-\xfe\n")
    qdir = tmp_path / "quarantine"
    with RootBuilder(tmp_path / "root") as b:
        bundle = tmp_path / "bundles" / "shared"
        bundle.mkdir(parents=True)
        for cid in (written, moved):
            b.container(cid, state=orjson.dumps({"bundle": str(bundle), "runtime": "runc",
                                                 "shim": "containerd-shim"}), bundle=False)
        b.write_process(written, "init", pid=dead_pid(), starttime=1)
        b.write_process(moved, "init")
        before = contents(b.root)
        result = recover_subprocess("repair", b.root, "--apply", "--quarantine", qdir, "-f", "json")
        assert result.returncode == 0, result.stderr  # one bad name never stops a repair
        doc = orjson.loads(result.stdout)
        assert {(a["action"], a["result"]) for a in doc["actions"]} == {
            ("write-exit-status", "applied"), ("quarantine", "applied")}
        assert (b.root / written / "init" / "exitStatus").read_bytes() == b"255"
        assert (qdir / moved / "init" / "exit").is_fifo() and not (b.root / moved).exists()
        lines = journal_lines(journal_of(b.root))  # valid JSON although the names are not UTF-8
        assert {e["container"] for e in lines if e["phase"] == "intent"} == {"bad-\\xff\x1b[31m", "nopid-\\xfe\n"}
        undone = recover_subprocess("repair", "--undo", journal_of(b.root))
        assert undone.returncode == 0, undone.stderr
        assert b"\xff" not in undone.stdout and b"\x1b" not in undone.stdout  # shown escaped
        assert contents(b.root) == before and not any(qdir.iterdir())
