"""Shared fixtures.  Set before anything imports typer: rich must not colour CliRunner output."""

import os

os.environ["TERM"] = "dumb"
os.environ.pop("FORCE_COLOR", None)
os.environ.pop("GITHUB_ACTIONS", None)
os.environ.pop("COLUMNS", None)  # a width set by the shell would wrap the tables tests read
os.environ["NO_COLOR"] = "1"
# What containerd does on restart depends on its version, which recover reads from the binary that
# will start: the host's own would make every prediction depend on what this machine has installed.
# The suite judges containerd 1.6.20 (its captures and the builders' trees are 1.6's) unless a test
# names another version, or unsets this to test how the version is found.
os.environ["RECOVER_CONTAINERD_VERSION"] = "1.6.20"

import pathlib  # noqa: E402

import pytest  # noqa: E402

import recover.rules  # noqa: E402
from reference import copy_reference  # noqa: E402

# Every code the suite makes recover emit, in this process (tests/test_zz_catalog.py checks that
# the catalog holds no code that no test ever produces).  Installed before any other recover
# module binds `finding`, so that every finding passes through it.
EMITTED: set[str] = set()
_finding = recover.rules.finding


def _recording_finding(code, message, path=None):
    EMITTED.add(code)
    return _finding(code, message, path)


recover.rules.finding = _recording_finding


# Codes that only skipped tests would have made recover emit (a test marked `emits(...)` that
# needs root, run as another user): the catalog check counts only what ran.
EXCUSED: set[str] = set()


def pytest_configure(config):
    config.addinivalue_line("markers", "emits(*codes): finding codes this test is there to make recover emit; "
                                       "when it is skipped, the catalog check does not ask for them")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    if report.skipped:
        for mark in item.iter_markers("emits"):
            EXCUSED.update(mark.args)


def record_emitted(doc) -> None:
    """Count the codes of a JSON report made by another process (a child, a subprocess)."""
    if isinstance(doc, dict):
        if isinstance(doc.get("code"), str) and "severity" in doc:
            EMITTED.add(doc["code"])
        for value in doc.values():
            record_emitted(value)
    elif isinstance(doc, list):
        for value in doc:
            record_emitted(value)


@pytest.fixture
def reference(tmp_path: pathlib.Path) -> pathlib.Path:
    """A fresh copy of the reference capture (FIFOs and mtimes restored); returns its dir."""
    return copy_reference(tmp_path / "capture")
