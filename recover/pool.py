"""Forked workers over the shards of a list, their results merged in order as they stream.

A scan judges container dirs independently, and CPython runs one thread at a time: a large root
is judged by one forked worker per usable CPU.  Worker w takes shards w, w+N, w+2N...; the parent
reads shard 0 from worker 0, shard 1 from worker 1, ... and yields each shard's items as they
arrive, so output keeps its order and memory stays flat (a worker runs at most a pipe's worth
ahead).  Each worker ends by sending what it accumulated (`finish()`); a worker that fails sends
its traceback, which the parent raises.  Workers are forks: they share nothing afterwards, each
has its own caches, and they end with os._exit (no buffer of the parent is flushed twice).

What a worker sends goes through `marshal` (builtin, loaded at every start; pickle and struct
would add 4 ms to each): items and `finish()` results are made of bytes, str, int, None, lists,
tuples, sets and plain dicts.  Both ends are the same interpreter, so its format always agrees.
"""

from __future__ import annotations

import fcntl
import marshal
import os
import signal
import traceback
from collections.abc import Callable, Iterator
from typing import Any

_ITEMS, _DONE, _FAILED = b"I", b"D", b"F"  # a header: one of these, then the payload's length
_LENGTH_BYTES = 8
_PIPE_BYTES = 1 << 20  # room for a worker to run ahead of the merge (Linux's default cap for a pipe)


class WorkerFailed(Exception):
    """A worker raised: a bug, reported with the worker's traceback."""


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0))


def ordered_map(shards: int, work: Callable[[int], list[Any]], finish: Callable[[], Any],
                workers: int) -> Iterator[Any]:
    """Yield the items of `work(0)`, `work(1)`, ... `work(shards - 1)` in order, computed by
    `workers` forked processes; return the list of each worker's `finish()`."""
    children: list[tuple[int, int]] = []  # (pid, read fd)
    try:
        for w in range(workers):
            read_fd, write_fd = os.pipe()
            try:
                fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
            except OSError:
                pass  # a smaller pipe only makes workers wait sooner
            pid = os.fork()
            if pid == 0:  # the worker: never returns
                os.close(read_fd)
                for _, fd in children:
                    os.close(fd)
                _serve(write_fd, range(w, shards, workers), work, finish)
            os.close(write_fd)
            children.append((pid, read_fd))
        for shard in range(shards):
            yield from _receive(children[shard % workers][1], _ITEMS)
        finished = [_receive(fd, _DONE) for _, fd in children]
        while children:
            pid, fd = children.pop()
            os.close(fd)
            if (status := os.waitpid(pid, 0)[1]) != 0:
                raise WorkerFailed(f"scan worker {pid} ended with wait status {status}")
        return finished
    finally:
        for pid, fd in children:  # stopped early (an error, a closed output): end the workers
            os.close(fd)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)


def _serve(fd: int, shards: range, work: Callable[[int], list[Any]], finish: Callable[[], Any]) -> None:
    code = 0
    try:
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C ends the worker, quietly; the parent reports
        for shard in shards:
            _send(fd, _ITEMS, work(shard))
        _send(fd, _DONE, finish())
    except BaseException:  # noqa: BLE001 - whatever it is, the parent must hear of it
        code = 1
        try:
            _send(fd, _FAILED, traceback.format_exc())
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


def _read_exactly(fd: int, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = os.read(fd, min(left, _PIPE_BYTES))
        if not chunk:
            raise WorkerFailed("a scan worker ended without a word (killed?)")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
