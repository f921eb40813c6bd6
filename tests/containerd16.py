"""The real containerd 1.6 lab (recover/lab.py) for pytest: a skip that names what is missing,
and a daemon fixture."""

from __future__ import annotations

import pytest

from recover.lab import Containerd16, missing


def skip_unless_usable() -> None:
    """pytest.skip, naming what is missing, when a real containerd 1.6 cannot run here."""
    reason = missing()
    if reason:
        pytest.skip(f"real containerd 1.6: {reason}")


@pytest.fixture(scope="module")
def containerd16():
    """A started daemon for the module (tests share it: use distinct container ids)."""
    skip_unless_usable()
    d = Containerd16.create()
    try:
        d.start()
        yield d
    finally:
        d.close()
