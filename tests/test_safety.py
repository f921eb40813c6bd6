"""Safety and truth: never act on the wrong root, never kill a healthy process, never pass a gate
that could not judge.  Real roots, real processes under the stand-in shim, real copies."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import orjson
import pytest
from procs import dead_pid
from typer.testing import CliRunner

from recover.builders import become_subreaper
from recover.cli import app
from recover.generations.containerd_0_2.builder import RootBuilder

runner = CliRunner()
RUNNING = "a1" + "0" * 62
ORPHAN = "b2" + "0" * 62
GONE = "c3" + "0" * 62


@pytest.fixture(scope="module", autouse=True)
def subreaper():
    become_subreaper()


def cli(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def scan(root: Path, *args: object) -> dict:
    result = cli("scan", root, "-f", "json", *args)
    assert result.exit_code == 0, result.output
    return orjson.loads(result.stdout)


def processes(doc: dict) -> dict[str, dict]:
    return {c["id"]: c["processes"][0] for c in doc["containers"]}


def copy_root(root: Path, dest: Path) -> Path:
    """A copy as an operator makes one: `cp -a` keeps FIFOs, modes and mtimes."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", str(root), str(dest)], check=True)
    return dest


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# --- 1. a copy is evidence, not the daemon's root -------------------------------------------

def test_a_copy_of_a_live_root_judges_its_processes_running_and_says_it_is_a_copy(tmp_path):
    with RootBuilder(tmp_path / "root") as b:
        live = b.start_process(RUNNING, "init")
        copy = copy_root(b.root, tmp_path / "rcopy" / "root")
        p = processes(scan(copy))[RUNNING]
        assert p["verdict"] == "running" and p["shim"] == {"pid": live.shim.pid, "state": "alive"}
        h012 = [f for f in p["findings"] if f["code"] == "H012"]
        assert h012 and str(b.root) in h012[0]["message"]
        assert processes(scan(b.root))[RUNNING]["findings"] == []  # the original is not a copy


def test_repairing_a_copy_never_kills_the_originals_processes(tmp_path):
    with RootBuilder(tmp_path / "root") as b:
        running = b.start_process(RUNNING, "init")
        orphan = b.start_process(ORPHAN, "init")
        orphan.kill_shim()
        copy = copy_root(b.root, tmp_path / "rcopy" / "root")
        result = cli("repair", copy, "--kill-orphans", "--apply")
        assert result.exit_code == 4 and "is a copy" in result.stderr, result.output
        assert alive(running.pid) and alive(orphan.pid)
        original = processes(scan(b.root))
        assert original[RUNNING]["verdict"] == "running"
        assert original[ORPHAN]["verdict"] == "orphaned"
        assert not (copy / ORPHAN / "init" / "exitStatus").exists()


def test_a_copy_takes_no_write_at_all(tmp_path):
    """A copy is evidence, not the root the daemon will read: repair writes nothing in it, even
    with --force (the dry run says why)."""
    with RootBuilder(tmp_path / "root") as b:
        running = b.start_process(RUNNING, "init")
        b.container(GONE)
        b.write_process(GONE, "init", pid=dead_pid())
        copy = copy_root(b.root, tmp_path / "rcopy" / "root")
        for extra in ((), ("--force",)):
            result = cli("repair", copy, "--apply", "-f", "json", *extra)
            assert result.exit_code == 4 and "is a copy" in result.stderr, result.output
            assert orjson.loads(result.stdout)["refused"].startswith("refusing: ")
        assert not (copy / GONE / "init" / "exitStatus").exists()
        assert "--apply will refuse" in cli("repair", copy).stderr
        assert alive(running.pid)


def test_kills_need_this_hosts_own_proc_and_evidence_of_the_live_root(tmp_path):
    from recover.builders import capture_proc

    with RootBuilder(tmp_path / "root") as b:
        orphan = b.start_process(ORPHAN, "init")
        orphan.kill_shim()
        captured = capture_proc(tmp_path / "proc", [orphan.pid, os.getpid()])
        result = cli("repair", b.root, "--kill-orphans", "--apply", "--force", "--proc-root", captured)
        assert result.exit_code == 4 and "captured proc" in result.stderr
        # no live shim works in this root, and it is no default root: which root is live cannot be told
        result = cli("repair", b.root, "--kill-orphans", "--apply")
        assert result.exit_code == 4 and "cannot tell" in result.stderr
        assert alive(orphan.pid)
        dry = cli("repair", b.root, "--kill-orphans")
        assert dry.exit_code == 0 and "will refuse to kill" in dry.stderr
        result = cli("repair", b.root, "--kill-orphans", "--apply", "--force")
        assert result.exit_code == 0, result.output
        assert (b.root / ORPHAN / "init" / "exitStatus").read_bytes() == b"137"


# --- 2. recognise what recover is pointed at -----------------------------------------------

def _v2_state_dir(path: Path) -> Path:
    task = path / "io.containerd.runtime.v2.task" / "k8s.io" / ("d4" + "0" * 62)
    task.mkdir(parents=True)
    (task / "init.pid").write_bytes(b"1")
    (path / "runc" / "k8s.io").mkdir(parents=True)
    return path


def snapshot(top: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(top)), p.lstat().st_mode) for p in top.rglob("*"))


@pytest.mark.parametrize("command", ["scan", "check"])
def test_scan_and_check_say_what_a_dir_is_instead_of_misreading_it(tmp_path, command):
    v2 = _v2_state_dir(tmp_path / "state")
    docker = tmp_path / "docker"
    for name in ("containers/abc", "image/overlay2", "volumes"):
        (docker / name).mkdir(parents=True)
    rootdir = tmp_path / "var-lib-containerd"
    (rootdir / "io.containerd.metadata.v1.bolt").mkdir(parents=True)
    (rootdir / "io.containerd.runtime.v2.task" / "k8s.io").mkdir(parents=True)
    etc_like = tmp_path / "etc"
    (etc_like / "ssh").mkdir(parents=True)
    (etc_like / "hosts").write_text("127.0.0.1 localhost\n")
    for path, words in ((docker, "Docker's data root"), (rootdir, "root dir"),
                        (etc_like, "not a containerd state root")):
        result = cli(command, path)
        assert result.exit_code == 2, (path, result.output)
        assert words in result.stderr and result.stdout == ""
    # Docker's data root: where Docker 20+ keeps what recover reads, and Docker 1.11-1.13
    said = cli(command, docker).stderr
    assert "/run/containerd" in said and "/var/run/docker/containerd/daemon" in said and "libcontainerd" in said
    assert cli(command, "").exit_code == 2 and "empty string" in cli(command, "").stderr
    # a containerd 1.x/2.x state dir is read as one, never as a 0.2 root
    doc = orjson.loads(cli(command, v2, "-f", "json").stdout)
    if command == "scan":
        assert doc["layout"] == "containerd-runtime-v2"
        assert [(c["namespace"], c["id"]) for c in doc["containers"]] == [("k8s.io", "d4" + "0" * 62)]


def test_repair_refuses_and_changes_nothing_outside_a_recognised_root(tmp_path):
    v2 = _v2_state_dir(tmp_path / "state")
    docker = tmp_path / "docker"
    (docker / "containers" / "abc").mkdir(parents=True)
    (docker / "image").mkdir()
    quarantine = tmp_path / "q"
    # a containerd 1.x/2.x state dir is repaired as one: 0.2's options are usage errors there
    before = snapshot(v2)
    for option in (("--quarantine", quarantine), ("--kill-orphans",)):
        result = cli("repair", v2, *option, "--apply")
        assert result.exit_code == 2 and "does not apply to a containerd-runtime-v2 root" in result.stderr
    assert snapshot(v2) == before and not quarantine.exists()
    for path in (docker,):
        before = snapshot(path)
        result = cli("repair", path, "--quarantine", quarantine, "--apply", "--force")
        assert result.exit_code == 4, result.output
        assert snapshot(path) == before and not quarantine.exists()
        # -f json: a document that says the refusal, whatever refused
        as_json = cli("repair", path, "--apply", "-f", "json")
        assert as_json.exit_code == 4
        doc = orjson.loads(as_json.stdout)
        assert (doc["schema"], doc["actions"], doc["apply"]) == ("recover.repair/1", [], True)
        assert doc["refused"].startswith("refusing") or "recover reads" in doc["refused"]
        assert doc["refused"] in as_json.stderr


def test_an_empty_dir_and_a_damaged_02_root_are_still_read(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert scan(empty)["containers"] == []
    damaged = tmp_path / "damaged"
    (damaged / ("e5" + "0" * 62) / "init").mkdir(parents=True)
    (damaged / ("e5" + "0" * 62) / "init" / "pid").write_bytes(b"12")
    assert cli("scan", damaged).exit_code == 2  # a lone pid file is no evidence: many dirs hold one
    (damaged / ("e5" + "0" * 62) / "init" / "starttime").write_bytes(b"77")
    doc = scan(damaged)  # no state.json anywhere, but a process dir: still a 0.2 root
    assert [c["id"] for c in doc["containers"]] == ["e5" + "0" * 62]
    filesystem = tmp_path / "image"
    for name in ("etc", "usr", "var", "run"):
        (filesystem / name).mkdir(parents=True)
    (filesystem / "events.log").write_bytes(b"")  # a stray file does not make / a 0.2 root
    result = cli("scan", filesystem)
    assert result.exit_code == 2 and "filesystem root" in result.stderr



def test_a_name_of_containerd_1x_is_seen_wherever_it_sorts_among_thousands(tmp_path):
    from recover.classify import classify
    from recover.fsread import OpenRoot

    for stray in ("io.containerd.runtime.v3.task", "io.containerd.zz", "io.containerd.a"):
        root = tmp_path / stray
        for i in range(2000):
            (root / f"{i:064x}" / "init").mkdir(parents=True)
        (root / "events.log").write_bytes(b"")
        (root / "io.containerd").mkdir()  # not the prefix: no dot
        (root / "io.b").mkdir()
        (root / stray).mkdir()
        with OpenRoot(str(root)) as opened:
            found = classify(opened)
        assert (found.kind, found.evidence) == ("containerd-runtime-v2", f"holds {stray}")
    plain = tmp_path / "plain"
    (plain / "io.containerd").mkdir(parents=True)
    (plain / "events.log").mkdir()  # a dir of that name is not containerd's events log
    (plain / "zz").mkdir()
    with OpenRoot(str(plain)) as opened:
        assert classify(opened).kind == "other"
        (plain / "zz" / "state.json").write_bytes(b"{}")
    with OpenRoot(str(plain)) as opened:
        assert (classify(opened).kind, classify(opened).evidence) == ("containerd-0.2", "zz/state.json")

# --- 3. the gate never passes what it could not judge --------------------------------------

def test_unprivileged_check_of_an_empty_root_does_not_fail_on_other_roots_shims(tmp_path):
    import tempfile

    from unprivileged import scan_as_nobody

    if os.geteuid() != 0:
        pytest.skip("needs root to start root-owned shims and then become an unprivileged user")
    top = tempfile.mkdtemp(prefix="recover-unpriv-", dir="/tmp")
    try:
        os.chmod(top, 0o755)
        empty = Path(top) / "empty"
        empty.mkdir()
        with RootBuilder(tmp_path / "root") as b:  # root's shims, whose cwd nobody may read
            live = b.start_process(RUNNING, "init")
            doc = scan_as_nobody(str(empty), "/proc")
        codes = {f["code"]: f for f in doc["findings"]}
        assert "H003" not in codes and doc["orphan_shims"] == []
        assert "H013" in codes and str(live.shim.pid) in codes["H013"]["message"]
        assert codes["H013"]["severity"] == "info"
    finally:
        import shutil

        shutil.rmtree(top)


def test_orphan_shims_in_a_capture_are_this_roots_only_when_their_cwd_says_so(tmp_path):
    """A captured proc dir names the root where it was live: the shims of this root's processes
    say which path that was; a shim working anywhere else belongs to another root."""
    import shutil

    from recover.builders import capture_proc

    with RootBuilder(tmp_path / "root") as b, RootBuilder(tmp_path / "other") as other:
        running = b.start_process(RUNNING, "init")
        lost = b.start_process(ORPHAN, "init")
        stranger = other.start_process(GONE, "init")
        shutil.rmtree(b.root / ORPHAN)  # its shim lives on: an orphan shim of this root
        proc = capture_proc(tmp_path / "proc", [running.pid, running.shim.pid, lost.pid, lost.shim.pid,
                                                stranger.pid, stranger.shim.pid])
        copy = copy_root(b.root, tmp_path / "evidence" / "root")
        doc = scan(copy, "--proc-root", proc)
        assert [(o["pid"], o["container"]) for o in doc["orphan_shims"]] == [(lost.shim.pid, ORPHAN)]
        os.unlink(proc / str(lost.shim.pid) / "cwd")  # whose it is can no longer be told
        doc = scan(copy, "--proc-root", proc)
        assert doc["orphan_shims"] == []
        h013 = [f for f in doc["findings"] if f["code"] == "H013"]
        assert h013 and str(lost.shim.pid) in h013[0]["message"]


def test_a_captured_proc_dir_does_not_read_this_hosts_runc_state(tmp_path, monkeypatch):
    import recover.generations.containerd_0_2.around as around_02
    from recover.builders import capture_proc

    runc_root = tmp_path / "runc"
    monkeypatch.setattr(around_02, "RUNC_ROOT", str(runc_root))  # this host's runc state, here
    with RootBuilder(tmp_path / "root") as b:
        live = b.start_process(RUNNING, "init")
        (runc_root / RUNNING).mkdir(parents=True)
        (runc_root / RUNNING / "state.json").write_bytes(orjson.dumps(
            {"id": RUNNING, "init_process_pid": live.pid + 1, "init_process_start": 1}))
        proc = capture_proc(tmp_path / "proc", [live.pid, live.shim.pid])

        def h011(*args):
            doc = scan(b.root, *args)
            return [f for c in doc["containers"] for f in c["findings"] if f["code"] == "H011"]

        assert h011()  # beside the live /proc: this host's runc state is read, and it disagrees
        assert h011("--proc-root", proc, "--runc-root", runc_root)  # asked for
        assert h011("--proc-root", proc) == []  # a capture: this host's live runc state is not its own


def test_a_root_denied_to_an_unprivileged_user_says_to_run_as_root(tmp_path):
    import tempfile

    from unprivileged import cli_as_nobody

    if os.geteuid() != 0:
        pytest.skip("needs root to make a root that nobody may read, then drop to nobody")
    top = Path(tempfile.mkdtemp(prefix="recover-denied-", dir="/tmp"))
    try:
        os.chmod(top, 0o755)
        locked = top / "state"
        (locked / "io.containerd.runtime.v2.task").mkdir(parents=True)
        os.chmod(locked, 0o700)
        code, out, err = cli_as_nobody(["scan", str(locked)])
        assert code == 2 and out == "" and "run recover as root" in err
    finally:
        import shutil

        shutil.rmtree(top)
