"""Forked workers over the shards of a list, their results merged in order as they stream.

A scan judges container dirs independently, and CPython runs one thread at a time: a large root
is judged by one forked worker per usable CPU.  The parent hands out shards in order, a few at a
time: a worker that sends a shard's items gets the next shard not yet handed out, so a worker on
a faster (or less busy) CPU takes more of them and both end together.  The parent yields each
shard's items in shard order; those that arrive before their turn wait, a bounded few (a worker
is handed nothing more while they do), so output keeps its order and memory stays flat.  Each
worker ends by sending what it accumulated (`finish()`); a worker that fails sends its
traceback, which the parent raises.  Workers are forks: they share nothing afterwards, each has
its own caches, and they end with os._exit (no buffer of the parent is flushed twice).

What a worker sends goes through `marshal` (builtin, loaded at every start; pickle and struct
would add 4 ms to each): items and `finish()` results are made of bytes, str, int, None, lists,
tuples, sets and plain dicts.  Both ends are the same interpreter, so its format always agrees.
"""

from __future__ import annotations

import fcntl
import marshal
import os
import select
import signal
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, NoReturn

_ITEMS, _DONE, _FAILED = b"I", b"D", b"F"  # a header: one of these, then the payload's length
_LENGTH_BYTES = 8
_SHARD_BYTES = 4  # a shard number, parent to worker
_PIPE_BYTES = 1 << 20  # room for a worker's results (Linux's default cap for a pipe)
_HANDED = 2  # shards a worker holds: the one it works on and the next, so it never waits for the parent
_EARLY = 8  # shards kept before their turn; past this, no worker is handed more until they drain


class WorkerFailed(Exception):
    """A worker raised: a bug, reported with the worker's traceback."""


class _Worker(NamedTuple):
    pid: int
    results: int  # read end of what it sends
    shards: int  # write end of the shard numbers it is handed


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0))


def ordered_map(shards: int, work: Callable[[int], list[Any]], finish: Callable[[], Any],
                workers: int) -> Iterator[Any]:
    """Yield the items of `work(0)`, `work(1)`, ... `work(shards - 1)` in order, computed by
    `workers` forked processes; return the list of each worker's `finish()`."""
    started: list[_Worker] = []
    open_fds: set[int] = set()  # the parent's ends of the workers' pipes not closed yet
    try:
        for _ in range(workers):
            worker = _fork(work, finish, started)
            started.append(worker)
            open_fds.update((worker.results, worker.shards))
        handed: dict[int, deque[int]] = {w.results: deque() for w in started}  # in the order handed
        early: dict[int, list[Any]] = {}
        next_shard = 0

        def hand_out() -> None:
            """Top every worker up to _HANDED shards, while few shards wait for their turn."""
            nonlocal next_shard
            for w in started:
                queue = handed[w.results]
                while next_shard < shards and len(queue) < _HANDED and len(early) < _EARLY:
                    try:
                        os.write(w.shards, next_shard.to_bytes(_SHARD_BYTES, "little"))
                    except BrokenPipeError:  # never taken for a closed output: the worker has ended
                        _last_words(w)
                    queue.append(next_shard)
                    next_shard += 1

        poller = select.poll()
        for w in started:
            poller.register(w.results, select.POLLIN)
        hand_out()
        for shard in range(shards):
            while shard not in early:  # it was handed out (all before it are done): it will come
                for fd, _ in poller.poll():
                    early[handed[fd].popleft()] = _receive(fd, _ITEMS)  # a worker sends in the order handed
                hand_out()
            yield from early.pop(shard)
            hand_out()
        for w in started:
            os.close(w.shards)  # no more shards: each worker finishes
            open_fds.discard(w.shards)
        finished = [_receive(w.results, _DONE) for w in started]
        while started:
            w = started.pop()
            os.close(w.results)
            open_fds.discard(w.results)
            if (status := os.waitpid(w.pid, 0)[1]) != 0:
                raise WorkerFailed(f"scan worker {w.pid} ended with wait status {status}")
        return finished
    finally:
        for fd in open_fds:  # stopped early (an error, a closed output): end the workers
            os.close(fd)
        for w in started:
            try:
                os.kill(w.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(w.pid, 0)


def _last_words(w: _Worker) -> NoReturn:
    """A worker that can no longer be handed a shard has ended: raise what it said last (its
    traceback), or that it said nothing; what it sent before is of no use any more."""
    while True:
        _receive(w.results, _ITEMS)


def _fork(work: Callable[[int], list[Any]], finish: Callable[[], Any], others: list[_Worker]) -> _Worker:
    results_read, results_write = os.pipe()
    shards_read, shards_write = os.pipe()
    try:
        fcntl.fcntl(results_write, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
    except OSError:
        pass  # a smaller pipe only makes the worker wait sooner
    try:
        pid = os.fork()
    except OSError:
        for fd in (results_read, results_write, shards_read, shards_write):
            os.close(fd)
        raise
    if pid == 0:  # the worker: never returns
        os.close(results_read)
        os.close(shards_write)
        for w in others:
            os.close(w.results)
            os.close(w.shards)
        _serve(shards_read, results_write, work, finish)
    os.close(results_write)
    os.close(shards_read)
    return _Worker(pid, results_read, shards_write)


def _serve(shards: int, results: int, work: Callable[[int], list[Any]], finish: Callable[[], Any]) -> None:
    code = 0
    try:
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C ends the worker, quietly; the parent reports
        while number := _read_exactly(shards, _SHARD_BYTES, end_ok=True):
            _send(results, _ITEMS, work(int.from_bytes(number, "little")))
        _send(results, _DONE, finish())
    except BaseException:  # noqa: BLE001 - whatever it is, the parent must hear of it
        code = 1
        try:
            _send(results, _FAILED, traceback.format_exc())
        except BaseException:  # noqa: BLE001 - the parent is gone
            pass
    finally:
        os._exit(code)


def _send(fd: int, kind: bytes, value: Any) -> None:
    payload = marshal.dumps(value)
    view = memoryview(kind + len(payload).to_bytes(_LENGTH_BYTES, "little") + payload)
    while view:
        view = view[os.write(fd, view):]


def _receive(fd: int, expected: bytes) -> Any:
    header = _read_exactly(fd, 1 + _LENGTH_BYTES)
    kind, length = header[:1], int.from_bytes(header[1:], "little")
    value = marshal.loads(_read_exactly(fd, length))
    if kind == _FAILED:
        raise WorkerFailed(f"a scan worker failed:\n{value}")
    if kind != expected:
        raise WorkerFailed(f"a scan worker sent {kind!r} where {expected!r} was due")
    return value


def _read_exactly(fd: int, size: int, *, end_ok: bool = False) -> bytes:
    """`size` bytes from fd; b"" at its end when `end_ok` and nothing came (else the sender died)."""
    chunks, left = [], size
    while left:
        chunk = os.read(fd, min(left, _PIPE_BYTES))
        if not chunk:
            if end_ok and left == size:
                return b""
            raise WorkerFailed("a scan worker ended without a word (killed?)")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
