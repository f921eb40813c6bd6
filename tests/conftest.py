"""Shared fixtures.  Set before anything imports typer: rich must not colour CliRunner output."""

import os

os.environ["TERM"] = "dumb"
os.environ.pop("FORCE_COLOR", None)
os.environ.pop("GITHUB_ACTIONS", None)
os.environ["NO_COLOR"] = "1"

import pathlib  # noqa: E402

import pytest  # noqa: E402

from reference import copy_reference  # noqa: E402


@pytest.fixture
def reference(tmp_path: pathlib.Path) -> pathlib.Path:
    """A fresh copy of the reference capture (FIFOs and mtimes restored); returns its dir."""
    return copy_reference(tmp_path / "capture")
