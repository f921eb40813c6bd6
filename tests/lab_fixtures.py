"""The real-containerd lab (recover/generations/runtime_v2/lab) for pytest: a skip that names what is missing, a
module-scoped 1.6.20 daemon, and crash cycles run concurrently, one per version.

Real daemons are slow (a restore blocks seconds per faulty task), so a test that needs one cycle
per version runs them at once, in threads of this process (not pytest-xdist: tests/conftest.py
counts emitted finding codes in this process), each lab in its own base dir and mount namespace:

    @pytest.fixture(scope="module")
    def cycles():
        return run_concurrently({v: functools.partial(my_cycle, v) for v in VERSIONS})

    @pytest.mark.parametrize("version", VERSIONS)
    def test_it(cycles, version):
        outcome = cycles[version]           # skips when that version cannot run here
                                            # (not root, binaries missing); re-raises its error

A cycle makes its own lab (`with Containerd.create(version=...)`) and returns what it saw; it
names its containerd namespaces with unique() when recover scans them (a live shim of another
run of the suite, in another mount namespace, may have the same namespace and id).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Hashable, Mapping
from concurrent.futures import ThreadPoolExecutor, wait

import pytest

from recover.generations.runtime_v2.lab import VERSIONS, Containerd, missing

CYCLE_TIMEOUT = 300  # s for all cycles together: each lab operation has its own, shorter timeout


def skip_unless_usable(version: str = "1.6.20") -> None:
    """pytest.skip, naming what is missing, when a real containerd of this version cannot run here."""
    reason = missing(version)
    if reason:
        pytest.skip(f"real containerd {version}: {reason}")


def unique(what: str) -> str:
    """A containerd namespace name no other run uses."""
    return f"{what}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def containerd16():
    """A started 1.6.20 daemon for the module (tests share it: use distinct container ids)."""
    skip_unless_usable()
    d = Containerd.create()
    try:
        d.start()
        yield d
    finally:
        d.close()


def version_of(key: Hashable) -> str:
    """The containerd version a cycle's key names: the key itself, or its first item."""
    version = key[0] if isinstance(key, tuple) else key
    if version not in VERSIONS:
        raise ValueError(f"a cycle's key names its version first, not {key!r}")
    return version


class Outcomes(Mapping):
    """What each cycle returned; reading a cycle that could not run skips, one that failed
    raises its error."""

    def __init__(self, results: dict, errors: dict[Hashable, BaseException], skipped: dict[Hashable, str],
                 took: dict[Hashable, float]):
        self._results, self._errors, self._skipped, self.took = results, errors, skipped, took

    def __getitem__(self, key):
        if key in self._skipped:
            pytest.skip(self._skipped[key])
        if isinstance(self._errors.get(key), pytest.skip.Exception):  # the cycle skipped itself
            raise self._errors[key]
        if key in self._errors:
            raise AssertionError(f"the cycle {key!r} failed") from self._errors[key]
        return self._results[key]

    def __iter__(self):
        return iter({**self._results, **self._errors, **self._skipped})

    def __len__(self) -> int:
        return len(self._results) + len(self._errors) + len(self._skipped)


def run_concurrently(cycles: dict[Hashable, Callable[[], object]], timeout: float = CYCLE_TIMEOUT) -> Outcomes:
    """Run each cycle (key: its version, or a tuple whose first item is it) in a thread of its
    own, all at once; those whose version cannot run here are not started."""
    skipped = {k: f"real containerd {version_of(k)}: {r}" for k in cycles if (r := missing(version_of(k)))}
    runnable = {k: c for k, c in cycles.items() if k not in skipped}
    results: dict = {}
    errors: dict[Hashable, BaseException] = {}
    took: dict[Hashable, float] = {}
    lock = threading.Lock()

    def run(key, cycle) -> None:
        t0 = time.monotonic()
        try:
            value = cycle()
            with lock:
                results[key] = value
        except BaseException as e:  # handed to the test that reads this key
            with lock:
                errors[key] = e
        finally:
            took[key] = time.monotonic() - t0

    if runnable:
        with ThreadPoolExecutor(max_workers=len(runnable), thread_name_prefix="lab-cycle") as pool:
            futures = [pool.submit(run, k, c) for k, c in runnable.items()]
            _, late = wait(futures, timeout)
            if late:
                # A thread cannot be stopped: its lab's own timeouts end it, and leaving the
                # executor waits for that.  Its test fails all the same.
                with lock:
                    for key in runnable:
                        if key not in results and key not in errors:
                            errors[key] = TimeoutError(f"the cycle {key!r} took over {timeout} s")
    return Outcomes(results, errors, skipped, took)
