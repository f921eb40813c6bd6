"""Signals that stop a command (SIGINT, SIGTERM, SIGHUP) become an exception, so that cleanup runs.

Python's default turns only SIGINT into an exception (KeyboardInterrupt, which click then turns
into "Aborted!" and exit 1, the code that means "findings"); SIGTERM and SIGHUP kill the process
at once and `finally` never runs.  With `install()`, each raises `Stopped` in the main thread,
and the console entry point exits 128 + the signal number.  Code that must not be cut short
(the demo's cleanup) runs under `run_whole`.
"""

from __future__ import annotations

import signal
from collections.abc import Callable

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

_held: list[int] | None = None  # while run_whole runs: the stop signals that arrived meanwhile


class Stopped(BaseException):
    """A stop signal arrived.  A BaseException: no `except Exception` swallows it."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _on_signal(signum: int, frame: object) -> None:
    if _held is not None:
        _held.append(signum)
        return
    raise Stopped(signum)


def install() -> None:
    """Handle the stop signals; one that is ignored (nohup, a shell's background job) stays ignored."""
    for sig in STOP_SIGNALS:
        if signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, _on_signal)


def run_whole(work: Callable[[], None]) -> None:
    """Run `work` to its end: a stop signal meanwhile is held, then raised once it returns.

    Python runs a handler some bytecodes after the signal: one that arrived just before the hold
    began raises inside it, and `work` (which must be safe to repeat) starts again.
    """
    global _held
    arrived: list[int] = []
    while True:
        try:
            _held = arrived
            work()
            break
        except Stopped as e:
            arrived.append(e.signum)
    _held = None
    if arrived:
        raise Stopped(arrived[0])
