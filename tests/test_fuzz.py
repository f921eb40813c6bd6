"""Fuzz: seeded faults on copies of the reference root.  Every copy: exit 0 within 20 s, one
valid JSON document, no traceback, the canary outside the root never opened, the root unchanged.

RECOVER_FUZZ_ITERATIONS sets how many copies (bench/fuzz.py runs many more)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading

import orjson
import pytest
from fuzzing import mutate, snapshot
from reference import copy_reference

ITERATIONS = int(os.environ.get("RECOVER_FUZZ_ITERATIONS", "12"))
CANARY_TEXT = b"CANARY-3f9a1c: this file is outside the root"


class FifoCanary:
    """A FIFO outside the root with a writer blocked in open(): any reader that opens it lets the
    writer through, so 'never opened' can be proved, not assumed."""

    def __init__(self, path):
        self.path = path
        os.mkfifo(path)
        self.opened = threading.Event()
        self._thread = threading.Thread(target=self._wait, daemon=True)
        self._thread.start()

    def _wait(self):
        try:
            fd = os.open(self.path, os.O_WRONLY)
        except OSError:
            return
        self.opened.set()
        os.close(fd)

    def release(self):
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)  # lets the writer's open return
        self._thread.join(5)
        os.close(fd)


def run_recover(args, timeout=20):
    return subprocess.run([sys.executable, "-m", "recover", *args], capture_output=True, timeout=timeout)


@pytest.mark.parametrize("seed", range(ITERATIONS))
def test_fuzzed_root(tmp_path, seed):
    rng = random.Random(seed)
    capture = copy_reference(tmp_path / "capture")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "canary").write_bytes(CANARY_TEXT)
    fifo = FifoCanary(outside / "canary-fifo")
    canary = outside / (rng.choice(["canary", "canary-fifo"]))
    root = capture / "root"
    faults = mutate(root, rng, canary, faults=rng.randrange(1, 6))
    before = snapshot(root)
    try:
        scanned: dict = {}
        for args in (["scan", str(root), "--proc-root", str(capture / "proc"), "-f", "json"],
                     ["check", str(root), "--proc-root", str(capture / "proc"), "-f", "json"]):
            result = run_recover(args)
            assert result.returncode in (0, 1) if args[0] == "check" else result.returncode == 0, (faults, result.stderr)
            assert b"Traceback" not in result.stderr, (faults, result.stderr)
            doc = orjson.loads(result.stdout)  # exactly one JSON document
            assert isinstance(doc, dict), faults
            assert CANARY_TEXT not in result.stdout
            if args[0] == "scan":
                scanned = doc
        targets = [c["id"] for c in scanned["containers"] if c["id"].isascii() and c["id"].isprintable()]
        for target in targets[:2]:  # explain holds the same invariants
            result = run_recover(["explain", target, "--root", str(root), "--proc-root", str(capture / "proc"),
                                  "-f", "json"])
            assert result.returncode in (0, 2), (faults, target, result.stderr)  # 2: a prefix now ambiguous
            assert b"Traceback" not in result.stderr, (faults, result.stderr)
            if result.returncode == 0:
                assert orjson.loads(result.stdout)["schema"] == "recover.explain/1"
            assert CANARY_TEXT not in result.stdout
        assert not fifo.opened.is_set(), faults
        assert snapshot(root) == before, faults
    finally:
        fifo.release()
