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
from typer.testing import CliRunner

from recover import layout
from recover.cli import app
from recover.root import Root
from reference import FIXTURES, REFERENCE

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
    assert len(lines) == len(BAD_ROOT) + 2  # + orphan shims + summary


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
    (one / "c/init/process.json").write_bytes(b" " * (layout.MAX_FILE_BYTES + 1))
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
    assert "F041" in all_codes(got[evil])


def test_non_utf8_name(one):
    bad = os.fsdecode(b"c-\xff")
    shutil.copytree(one / "c", one / bad)
    got = scan(one)
    assert "c-\\xff" in got  # JSON cannot hold the byte: shown escaped
    assert "F041" in all_codes(got["c-\\xff"])


def test_file_vanishing_between_listing_and_reading(one):
    root = Root(str(one))
    cfd = os.open(str(one / "c" / "init"), os.O_RDONLY | os.O_DIRECTORY)
    try:
        entry = next(e for e in os.scandir(cfd) if e.name == "pid")
        os.unlink(one / "c/init/pid")
        fact = root._read_entry(cfd, entry, "c/init/pid")
    finally:
        os.close(cfd)
        root.close()
    assert fact.problem == "vanished"
    assert [f.code for f in layout.file_findings(fact, required=False)] == ["F011"]
    assert layout.parse_pid(fact).containerd is None


def test_root_that_is_not_a_directory_is_a_usage_error(tmp_path):
    (tmp_path / "file").write_text("x")
    for path in (tmp_path / "file", tmp_path / "missing"):
        result = runner.invoke(app, ["scan", str(path)])
        assert result.exit_code == 2
        assert "not a readable directory" in result.stderr and result.stdout == ""
