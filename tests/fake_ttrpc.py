"""A fake shim for tests/test_shimapi.py: a ttrpc server on a real unix socket, in a thread,
answering each request as its test says, including what a real shim never sends (an oversized
frame, another stream id, a cut frame, garbage).

    with FakeShim(tmp_path / "s", tasks(3, {"": running(42)})) as shim:
        answer = ask_shim(str(shim.path), "ns", "t1", [], None, 2)
        shim.requests          # [(stream id, ttrpc.Request)], in the order received

A handler gets (connection, stream id, request) and writes what it likes with `frame()`; it
returns False to hang up.  The server reads frames as ttrpc does (10-byte header, then the data).
"""

from __future__ import annotations

import os
import socket
import struct
import threading
from collections.abc import Callable
from pathlib import Path

from recover.generations.runtime_v2.shimapi.messages import shim_v2_pb2, shim_v3_pb2
from recover.generations.runtime_v2.shimapi.messages.runc_pb2 import ProcessDetails
from recover.generations.runtime_v2.shimapi.messages.task_pb2 import ProcessInfo
from recover.generations.runtime_v2.shimapi.messages.ttrpc_pb2 import Request, Response

HEADER = struct.Struct(">IIBB")
MESSAGES = {2: shim_v2_pb2, 3: shim_v3_pb2}
IO_TIMEOUT = 10  # s: a test that waits this long has failed anyway
POLL = 0.005  # s: how often the server's loops look whether the test is over (a hundred fakes a test)

Handler = Callable[[socket.socket, int, Request], bool]


def frame(conn: socket.socket, stream: int, data: bytes, kind: int = 2, length: int | None = None) -> None:
    """Send one frame; `length` overrides the header's (a lie about the data that follows)."""
    conn.sendall(HEADER.pack(len(data) if length is None else length, stream, kind, 0) + data)


def respond(conn: socket.socket, stream: int, payload: bytes = b"", code: int = 0, message: str = "") -> None:
    response = Response(payload=payload)
    if code:
        response.status.code, response.status.message = code, message
    frame(conn, stream, response.SerializeToString())


class FakeShim:
    def __init__(self, path: Path, handler: Handler):
        self.path = path
        self.handler = handler
        self.requests: list[tuple[int, Request]] = []
        self.errors: list[BaseException] = []
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        dir_fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
        try:  # through the dir's fd: a path may be longer than a unix address holds
            self._listener.bind(f"/proc/self/fd/{dir_fd}/{path.name}")
        finally:
            os.close(dir_fd)
        self._listener.listen(8)
        self._listener.settimeout(POLL)  # the accept loop looks at _stop this often
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="fake-shim", daemon=True)
        self._thread.start()

    def __enter__(self) -> FakeShim:
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(IO_TIMEOUT)
        self._listener.close()
        assert not self._thread.is_alive(), "the fake shim did not stop"
        if self.errors:
            raise AssertionError("the fake shim failed") from self.errors[0]

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            with conn:
                try:
                    self._converse(conn)
                except (ConnectionError, TimeoutError):
                    pass  # the client hung up: what a test may want
                except BaseException as e:  # noqa: BLE001 - handed to the test on leaving
                    self.errors.append(e)

    def _converse(self, conn: socket.socket) -> None:
        conn.settimeout(POLL)
        while not self._stop.is_set():
            try:
                header = _read(conn, HEADER.size, self._stop)
            except EOFError:
                return
            length, stream, _kind, _flags = HEADER.unpack(header)
            request = Request()
            request.ParseFromString(_read(conn, length, self._stop))
            self.requests.append((stream, request))
            if self.handler(conn, stream, request) is False:
                return


def _read(conn: socket.socket, size: int, stop: threading.Event) -> bytes:
    buf = b""
    while len(buf) < size:
        if stop.is_set():
            raise EOFError
        try:
            chunk = conn.recv(size - len(buf))
        except TimeoutError:
            continue
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


# -- handlers


def state(status: int, pid: int, exit_status: int = 0, exited_at: tuple[int, int] | None = (-62135596800, 0)):
    """A StateResponse's fields (exited_at: (seconds, nanos), Go's zero time by default, None: absent)."""
    return {"status": status, "pid": pid, "exit_status": exit_status, "exited_at": exited_at}


def tasks(api: int, states: dict[str, dict], pids: list[tuple[int, str | None, str | None]] = ()) -> Handler:
    """A shim of one task API version, as a runc shim answers: State for the exec ids in `states`
    ("" the init; others NotFound), Pids as listed ((pid, exec id, or another Any type url));
    the other version's service: code 12."""
    service = f"containerd.task.v{api}.Task"
    messages = MESSAGES.get(api)  # None: a shim of a version that serves neither

    def handle(conn, stream, request) -> bool:
        if request.service != service:
            respond(conn, stream, code=12, message=f"service {request.service}")
        elif request.method == "State":
            asked = messages.StateRequest.FromString(request.payload)
            fields = states.get(asked.exec_id)
            if fields is None:
                respond(conn, stream, code=5, message=f"process does not exist {asked.exec_id}: not found")
                return True
            response = messages.StateResponse(id=asked.exec_id or asked.id, pid=fields["pid"],
                                              status=fields["status"], exit_status=fields["exit_status"])
            if fields["exited_at"] is not None:
                response.exited_at.seconds, response.exited_at.nanos = fields["exited_at"]
            respond(conn, stream, response.SerializeToString())
        elif request.method == "Pids":
            response = messages.PidsResponse()
            for pid, exec_id, other_type in pids:
                info = ProcessInfo(pid=pid)
                if exec_id is not None:
                    info.info.type_url = "containerd.runc.v1.ProcessDetails"
                    info.info.value = ProcessDetails(exec_id=exec_id).SerializeToString()
                elif other_type is not None:
                    info.info.type_url, info.info.value = other_type, b"\x0a\x01x"
                response.processes.append(info)
            respond(conn, stream, response.SerializeToString())
        else:
            respond(conn, stream, code=12, message=f"{request.service}/{request.method}")
        return True

    return handle
