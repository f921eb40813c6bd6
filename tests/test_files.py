"""File problems become findings, never exceptions; each predicts what containerd would do.

`fixtures/bad-root` holds one container per problem that git can store; the rest (FIFOs,
sockets, huge files, hostile names, files that vanish mid-read) are made here.
"""

from __future__ import annotations

import os
import shutil
import socket

import orjson
import pytest
from reference import FIXTURES, REFERENCE
from typer.testing import CliRunner
from unprivileged import scan_as_nobody, world_readable

from recover.cli import app
from recover.fsread import MAX_FILE_BYTES, OpenRoot
from recover.generations.containerd_0_2 import files as layout
from recover.generations.containerd_0_2.reader import Reader

runner = CliRunner()
PROC = str(REFERENCE / "proc")  # pid 30857 lives there, under another container's shim


def scan(root, *args):
    result = runner.invoke(app, ["scan", str(root), "--proc-root", PROC, "-f", "json", *args])
    assert result.exit_code == 0, result.output
    return {c["id"]: c for c in orjson.loads(result.stdout)["containers"]}


def all_codes(c):
    return {f["code"] for f in c["findings"]} | {f["code"] for p in c["processes"] for f in p["findings"]}


# container -> (codes that must be found, what containerd would do with the container,
#               init's verdict)
BAD_ROOT = {
    "ok": (set(), "keep", "orphaned"),
    "missing-state": ({"F001", "R001"}, "drop-container", "orphaned"),
    "empty-state": ({"F002", "R001"}, "drop-container", "orphaned"),
    "truncated-state": ({"F003", "R001"}, "drop-container", "orphaned"),
    "state-symlink-out": ({"F010", "R001"}, "drop-container", "orphaned"),
    "nul-process": ({"F004", "F003", "R001"}, "drop-container", "orphaned"),
    "nul-tail": ({"F004"}, "keep", "orphaned"),  # Go's Decoder stops after the first value
    "missing-process": ({"F001", "R001"}, "drop-container", "orphaned"),
    "caps-list": ({"F022", "R001"}, "drop-container", "orphaned"),
    "wrong-type": ({"F021", "R001"}, "drop-container", "orphaned"),
    "unknown-field": (set(), "keep", "orphaned"),
    "pid-missing": ({"F030", "L005", "R002"}, "drop-container", "not-started"),
    "pid-empty": ({"F031", "R002"}, "drop-container", "not-started"),
    "pid-newline": ({"F032", "R002"}, "drop-container", "orphaned"),  # recover still reads it
    "pid-nonutf8": ({"F005", "F031", "R002"}, "drop-container", "not-started"),
    "pid-nul": ({"F004", "F031", "R002"}, "drop-container", "not-started"),
    "pid-dir": ({"F008", "R002"}, "drop-container", "not-started"),
    "pid-symlink-inside": ({"F009", "R002"}, "drop-container", "not-started"),
    "starttime-missing": ({"F033"}, "keep", "orphaned"),
    "starttime-newline": ({"F034", "R005", "R009"}, "keep", "orphaned"),
    "exit-format-bug": ({"F036", "R002"}, "drop-container", "exited"),
    "exit-newline": ({"F037", "R002"}, "drop-container", "exited"),
    "exit-garbage": ({"F035", "R002"}, "drop-container", "orphaned"),
    "exit-empty": (set(), "keep", "orphaned"),
    "exit-too-big": ({"F035"}, "drop-container", "orphaned"),
    "leftover-dotpid": ({"F038", "F030"}, "drop-container", "not-started"),
    "no-process-dirs": ({"R002"}, "drop-container", None),
    "stray-dir": ({"F001", "R001"}, "drop-container", "orphaned"),  # every subdir is a process to containerd
}


def test_bad_root_one_bad_entry_never_stops_a_scan(tmp_path):
    root = tmp_path / "bad-root"
    shutil.copytree(FIXTURES / "bad-root", root, symlinks=True)
    got = scan(root)
    assert set(got) == set(BAD_ROOT)
    for cid, (codes, would, verdict) in BAD_ROOT.items():
        c = got[cid]
        assert codes <= all_codes(c), cid
        assert c["containerd_would"] == would, cid
        init = [p for p in c["processes"] if p["id"] == "init"]
        assert (init[0]["verdict"] if init else None) == verdict, cid
    assert got["exit-format-bug"]["processes"][0]["exit_status"] == 255
    assert got["exit-format-bug"]["processes"][0]["exit_status_source"] == "daemon-format-bug"
    assert got["exit-newline"]["processes"][0]["exit_status"] == 0
    assert got["pid-newline"]["processes"][0]["pid"] == 30857


def test_bad_root_table_and_jsonl_too(tmp_path):
    root = tmp_path / "bad-root"
    shutil.copytree(FIXTURES / "bad-root", root, symlinks=True)
    table = runner.invoke(app, ["scan", str(root), "--proc-root", PROC])
    assert table.exit_code == 0 and "F040 info" in table.stdout  # the stray file in the root
    lines = runner.invoke(app, ["scan", str(root), "--proc-root", PROC, "-f", "jsonl"]).stdout.splitlines()
    # + the summary; no orphan shims: the capture's shims work in the reference's root, not this one
    assert len(lines) == len(BAD_ROOT) + 1
    assert "H013" in {f["code"] for f in orjson.loads(lines[-1])["findings"]}


@pytest.fixture
def one(tmp_path):
    """A root with one good container 'c' (pid 30857 of the reference proc), to be damaged."""
    root = tmp_path / "root"
    shutil.copytree(FIXTURES / "bad-root" / "ok", root / "c")
    return root


def _init(root):
    return scan(root)["c"]["processes"][0]


def test_fifo_where_a_file_belongs_hangs_containerd_not_recover(one):
    os.unlink(one / "c/init/pid")
    os.mkfifo(one / "c/init/pid")
    p = _init(one)
    assert "F007" in {f["code"] for f in p["findings"]}
    assert p["containerd_would"] == "hang-daemon" and p["verdict"] == "not-started"


def test_socket_where_a_file_belongs(one):
    os.unlink(one / "c/init/exitStatus") if (one / "c/init/exitStatus").exists() else None
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(one / "c/init/exitStatus"))
    try:
        p = _init(one)
        assert "F007" in {f["code"] for f in p["findings"]}
    finally:
        s.close()


def test_file_over_one_mib_is_not_read(one):
    (one / "c/init/process.json").write_bytes(b" " * (MAX_FILE_BYTES + 1))
    c = scan(one)["c"]
    assert "F006" in all_codes(c) and c["containerd_would"] == "drop-container"


def test_symlinked_container_dir_is_not_followed(one, tmp_path):
    outside = tmp_path / "outside"
    shutil.copytree(one / "c", outside)
    os.symlink(outside, one / "linked")
    result = runner.invoke(app, ["scan", str(one), "--proc-root", PROC, "-f", "json"])
    doc = orjson.loads(result.stdout)
    assert [c["id"] for c in doc["containers"]] == ["c"]
    assert "F040" in [f["code"] for f in doc["findings"]]


def test_hostile_names_are_escaped_in_text_and_exact_in_json(one):
    evil = "evil\x1b[31m\nname"
    shutil.copytree(one / "c", one / evil)
    table = runner.invoke(app, ["scan", str(one), "--proc-root", PROC]).stdout
    assert "\x1b" not in table and "evil\\x1b[31m\\nname"[:12] in table
    got = scan(one)
    assert evil in got
    (f041,) = [f for f in got[evil]["findings"] if f["code"] == "F041"]
    # escaped once: one backslash before x1b and n, as the table shows the name (not repr() on top)
    assert f041["message"].startswith("name 'evil\\x1b[31m\\nname' holds")
    assert "name 'evil\\x1b[31m\\nname' holds" in table


def test_non_utf8_name(one):
    bad = os.fsdecode(b"c-\xff")
    shutil.copytree(one / "c", one / bad)
    got = scan(one)
    assert "c-\\xff" in got  # JSON cannot hold the byte: shown escaped
    assert "F041" in all_codes(got["c-\\xff"])


def test_file_vanishing_between_listing_and_reading(one):
    opened = OpenRoot(str(one))
    root = Reader(opened)
    cfd = os.open(str(one / "c" / "init"), os.O_RDONLY | os.O_DIRECTORY)
    try:
        entries = {e.name: e for e in os.scandir(cfd)}
        os.unlink(one / "c/init/pid")
        (fact,) = root._read_listed(cfd, entries, ("pid",), "c/init")
    finally:
        os.close(cfd)
        opened.close()
    assert fact.problem == "vanished"
    assert [f.code for f in layout.file_findings(fact, required=False)] == ["F011"]
    assert layout.parse_pid(fact).containerd is None


def test_a_dir_below_the_root_is_opened_once_never_through_a_link_one_path_at_a_time(tmp_path):
    (tmp_path / "tasks" / "k8s.io").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "tasks" / "moby")
    opened = OpenRoot(str(tmp_path))
    fd = opened.dir_fd("tasks", "k8s.io")
    assert opened.dir_fd("tasks", "k8s.io") == fd  # kept: a namespace of many tasks is opened once
    assert os.path.samestat(os.fstat(fd), os.stat(tmp_path / "tasks" / "k8s.io"))
    with pytest.raises(OSError):  # a link is not followed (ELOOP), and nothing is kept of it
        opened.dir_fd("tasks", "moby")
    (tmp_path / "tasks" / "default").mkdir()
    other = opened.dir_fd("tasks", "default")  # another namespace: the last one is closed
    assert os.path.samestat(os.fstat(other), os.stat(tmp_path / "tasks" / "default"))
    assert sorted(opened._dirs) == [("tasks",), ("tasks", "default")]
    kept = [opened.dir_fd("tasks"), other]
    opened.close()
    for each in kept:
        with pytest.raises(OSError):  # closed with the root
            os.fstat(each)


def test_root_that_is_not_a_directory_is_a_usage_error(tmp_path):
    (tmp_path / "file").write_text("x")
    for path in (tmp_path / "file", tmp_path / "missing"):
        result = runner.invoke(app, ["scan", str(path)])
        assert result.exit_code == 2
        assert "not a readable directory" in result.stderr and result.stdout == ""


def test_leftover_repair_temp_file_is_reported_and_never_read(one):
    (one / "c/init/.recover-tmp-abc123").write_bytes(b"")
    p = _init(one)
    assert "F043" in {f["code"] for f in p["findings"]}
    assert p["exit_status"] is None


def test_one_process_skipped_while_the_container_loads(reference):
    from reference import WEB

    (reference / "root" / WEB / "debug-shell" / "pid").write_bytes(b"30894\n")
    c = {c["id"]: c for c in orjson.loads(runner.invoke(app, [
        "scan", str(reference / "root"), "--proc-root", str(reference / "proc"), "-f", "json"]).stdout)["containers"]}[WEB]
    shell = next(p for p in c["processes"] if p["id"] == "debug-shell")
    assert shell["containerd_would"] == "skip-process" and c["containerd_would"] == "keep"
    assert {"F032", "R004"} <= {f["code"] for f in shell["findings"]}


def test_proc_dir_without_boot_id(reference):
    (reference / "proc" / "sys" / "kernel" / "random" / "boot_id").unlink()
    doc = orjson.loads(runner.invoke(app, ["scan", str(reference / "root"), "--proc-root",
                                           str(reference / "proc"), "-f", "json"]).stdout)
    assert "H006" in {f["code"] for f in doc["findings"]}
    assert doc["host"]["boot_id"] is None and doc["host"]["btime"]


def test_proc_dir_without_boot_time_is_not_a_proc_root(reference):
    (reference / "proc" / "stat").unlink()
    result = runner.invoke(app, ["scan", str(reference / "root"), "--proc-root", str(reference / "proc")])
    assert result.exit_code == 2 and "btime" in result.stderr and result.stdout == ""


def test_without_root_decides_what_it_can_and_says_what_it_could_not(tmp_path):
    import tempfile

    top = tempfile.mkdtemp(prefix="recover-unpriv-", dir="/tmp")
    try:
        os.chmod(top, 0o755)
        root = os.path.join(top, "root")
        proc = os.path.join(top, "proc")
        shutil.copytree(FIXTURES / "bad-root" / "ok", os.path.join(root, "c"))
        shutil.copytree(FIXTURES / "bad-root" / "ok", os.path.join(root, "locked"))
        shutil.copytree(FIXTURES / "bad-root" / "ok", os.path.join(root, "locked-state"))
        shutil.copytree(REFERENCE / "proc", proc, symlinks=True)
        world_readable(top)
        os.chmod(os.path.join(root, "c", "init", "process.json"), 0o000)
        os.chmod(os.path.join(root, "locked"), 0o000)
        os.chmod(os.path.join(root, "locked-state", "state.json"), 0o000)
        doc = scan_as_nobody(root, proc)
        got = {c["id"]: c for c in doc["containers"]}
        # unreadable is not missing: containerd, as root, reads what recover may not
        assert "F012" in all_codes(got["c"]) and got["c"]["containerd_would"] is None
        assert "F042" in all_codes(got["locked"]) and got["locked"]["containerd_would"] is None
        assert "F012" in all_codes(got["locked-state"]) and got["locked-state"]["containerd_would"] is None
        assert not {"R001", "R002", "F001"} & set().union(*(all_codes(c) for c in got.values()))
        assert got["c"]["processes"][0]["verdict"] == "orphaned"  # still judged from what was read
    finally:
        os.chmod(os.path.join(top, "root", "locked"), 0o755)
        shutil.rmtree(top)


@pytest.mark.emits("H005")
def test_hidepid_makes_absence_no_proof_of_death(tmp_path):
    import tempfile

    if os.geteuid() != 0:
        pytest.skip("needs root to mount a procfs and become an unprivileged user")
    top = tempfile.mkdtemp(prefix="recover-hidepid-", dir="/tmp")
    try:
        os.chmod(top, 0o755)
        root, proc = os.path.join(top, "root"), os.path.join(top, "proc")
        os.mkdir(proc)
        shutil.copytree(FIXTURES / "bad-root" / "ok", os.path.join(root, "c"))
        state = orjson.loads((FIXTURES / "bad-root" / "ok" / "state.json").read_bytes())
        with open(os.path.join(root, "c", "state.json"), "wb") as f:  # a bundle that exists here
            f.write(orjson.dumps(dict(state, bundle=top)))
        world_readable(root)
        doc = scan_as_nobody(root, proc, hidepid=True)
        if doc is None:
            pytest.skip("no mount namespace or procfs mount allowed here")
        assert "H005" in {f["code"] for f in doc["findings"]}
        p = doc["containers"][0]["processes"][0]
        assert p["verdict"] == "unknown"  # pid 30857 is not visible: not proof that it died
        assert p["containerd_would"] is None  # containerd, as root, would see what recover cannot
        assert "L006" in {f["code"] for f in p["findings"]}
    finally:
        shutil.rmtree(top)


def test_hostile_captured_proc_dir(one, tmp_path):
    proc = tmp_path / "proc"
    shutil.copytree(REFERENCE / "proc", proc, symlinks=True)
    (proc / "\u00b2").mkdir()  # isdigit() is true for it; int() is not
    (proc / "30857" / "stat").unlink()
    os.mkfifo(proc / "30857" / "stat")  # a FIFO must never be read: the scan would hang
    result = runner.invoke(app, ["scan", str(one), "--proc-root", str(proc), "-f", "json"])
    assert result.exit_code == 0
    assert orjson.loads(result.stdout)["containers"][0]["processes"][0]["verdict"] == "vanished"


def test_containerd_reads_starttime_then_pid_then_exit_status(one):
    (one / "c/init/pid").write_bytes(b"abc")
    os.mkfifo(one / "c/init/exitStatus")  # never read: the bad pid stops containerd first
    assert _init(one)["containerd_would"] == "drop-container"  # the only process is skipped
    (one / "c/init/pid").write_bytes(b"30857")
    assert _init(one)["containerd_would"] == "hang-daemon"
    os.unlink(one / "c/init/exitStatus")
    os.unlink(one / "c/init/starttime")
    os.mkdir(one / "c/init/starttime")  # exists but cannot be read: the process fails to load
    assert scan(one)["c"]["containerd_would"] == "drop-container"


def test_a_file_larger_than_fstat_says_is_read_to_its_end_within_the_limit():
    """procfs says 0 bytes for /proc/version and gives more: the first read, sized from fstat,
    comes back long, and the rest is read in chunks; past the limit it is too big."""
    from recover.fsread import read_regular

    proc = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert os.stat("/proc/version").st_size == 0
        whole = read_regular(proc, "version", "version")
        with open("/proc/version", "rb") as f:
            assert whole.data == f.read() and whole.size == len(whole.data) > 1
        cut = read_regular(proc, "version", "version", limit=5)
        assert (cut.data, cut.problem) == (None, "too-big")
    finally:
        os.close(proc)
