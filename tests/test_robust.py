"""Hostile trees from hypothesis, and a root that changes while it is scanned."""

from __future__ import annotations

import io
import os
import random
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import orjson
from fuzzing import snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import FIXTURES, REFERENCE

from recover.render import render_json
from recover.rules import RULES
from recover.scan import NotAStateRoot, Scan

NAMES = st.sampled_from(["state.json", "process.json", "pid", "starttime", "exitStatus", ".pid", "exit",
                         "control", "init", "exec", "events.log", "..x", "a\nb", "\x1b[2J", os.fsdecode(b"\xff"),
                         "x" * 200])
KINDS = st.sampled_from(["file", "empty", "big", "fifo", "socket", "dir", "link-in", "link-out", "link-loop",
                         "link-proc", "link-dotdot"])
CONTENTS = st.sampled_from([b"123", b"{}", b'{"args":["x"]}', b"\0\0", b"\xff\xfe", b"%!u(uint32=9)", b"-1",
                            b'{"capabilities":["CAP_KILL"]}', b"[" * 50])

# a tree: up to three levels of entries, each a name, a kind and content
TREES = st.lists(st.tuples(st.lists(NAMES, min_size=1, max_size=3), KINDS, CONTENTS), max_size=25)


def build(top: Path, tree, outside: Path) -> list[socket.socket]:
    """Make the generated tree under `top`, and only there: an entry whose parent is reached
    through a link made earlier (one may point at `/`) is left out, so that building never
    writes outside the temp dir."""
    sockets = []
    real_top = os.path.realpath(top)
    for parts, kind, content in tree:
        path = top.joinpath(*parts)
        parent = path.parent
        while not parent.exists() and parent != top:
            parent = parent.parent
        if os.path.realpath(parent) != real_top and not os.path.realpath(parent).startswith(real_top + "/"):
            continue
        if any(p.is_symlink() for p in [top.joinpath(*parts[:i]) for i in range(1, len(parts))]):
            continue
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.exists() or path.is_symlink():
                continue
            if kind == "file":
                path.write_bytes(content)
            elif kind == "empty":
                path.write_bytes(b"")
            elif kind == "big":
                with open(path, "wb") as f:
                    f.truncate((1 << 20) + 1)
            elif kind == "fifo":
                os.mkfifo(path)
            elif kind == "socket":
                if len(str(path)) < 100:
                    s = socket.socket(socket.AF_UNIX)
                    s.bind(str(path))
                    sockets.append(s)
            elif kind == "dir":
                path.mkdir()
            elif kind == "link-in":
                os.symlink("pid", path)
            elif kind == "link-out":
                os.symlink(outside, path)
            elif kind == "link-loop":
                os.symlink(path.name, path)
            elif kind == "link-proc":
                os.symlink("/proc/self/fd/0", path)
            elif kind == "link-dotdot":
                os.symlink("../../../../../../..", path)
        except (OSError, ValueError):
            continue  # e.g. a file where a parent dir should be: the tree just is what it is
    return sockets


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TREES)
def test_any_tree_scans_to_one_document_and_is_left_as_it_was(tree):
    with tempfile.TemporaryDirectory() as tmp:
        top, outside = Path(tmp) / "root", Path(tmp) / "outside"
        top.mkdir()
        outside.mkdir()
        (outside / "canary").write_bytes(b"CANARY")
        sockets = build(top, tree, outside / "canary")
        try:
            before = snapshot(top)
            out = io.BytesIO()
            try:
                with Scan(str(top), proc_root=str(REFERENCE / "proc")) as s:
                    render_json(s, out)
            except NotAStateRoot as e:  # no 0.2 file anywhere: refused, never misread
                assert e.classification.generation is None
            else:
                doc = orjson.loads(out.getvalue())
                assert doc["summary"]["containers"] == len(doc["containers"])
                assert b"CANARY" not in out.getvalue()
            assert snapshot(top) == before
        finally:
            for s in sockets:
                s.close()


def test_a_root_mutated_while_it_is_scanned(tmp_path):
    root = tmp_path / "root"
    template = FIXTURES / "bad-root" / "ok"
    for i in range(40):
        shutil.copytree(template, root / f"c{i:03d}")
    stop = threading.Event()
    errors = []

    def churn():
        rng = random.Random(7)
        n = 1000
        while not stop.is_set():
            try:
                victim = root / f"c{rng.randrange(40):03d}"
                action = rng.randrange(6)
                if action == 0:
                    shutil.rmtree(victim, ignore_errors=True)
                elif action == 1:
                    shutil.copytree(template, root / f"c{n}", dirs_exist_ok=True)
                    n += 1
                elif action == 2 and (victim / "init").exists():
                    (victim / "init" / "pid").write_bytes(rng.choice([b"", b"30857", b"garbage"]))
                elif action == 3 and (victim / "init").exists():
                    with open(victim / "init" / "process.json", "r+b") as f:
                        f.truncate(rng.randrange(100))
                elif action == 4 and (victim / "init").exists():
                    shutil.rmtree(victim / "init", ignore_errors=True)
                else:
                    shutil.copytree(template, victim, dirs_exist_ok=True)
            except OSError:
                pass  # racing with itself is fine
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

    thread = threading.Thread(target=churn)
    thread.start()
    try:
        deadline = time.monotonic() + 3
        scans = 0
        while time.monotonic() < deadline:
            out = io.BytesIO()
            with Scan(str(root), proc_root=str(REFERENCE / "proc")) as s:
                render_json(s, out)
            doc = orjson.loads(out.getvalue())
            codes = {f["code"] for c in doc["containers"] for p in c["processes"] for f in p["findings"]}
            codes |= {f["code"] for c in doc["containers"] for f in c["findings"]}
            assert codes <= set(RULES)
            scans += 1
    finally:
        stop.set()
        thread.join()
    assert scans > 3 and not errors
