"""ttrpc, the RPC a containerd shim serves on its unix socket: unary calls only, as
github.com/containerd/ttrpc's PROTOCOL.md describes them.

A frame is a 10-byte big-endian header (uint32 data length, uint32 stream id, uint8 type, uint8
flags) and its data, at most 4 MiB.  A client opens a stream with a request frame (type 1) on a
new odd stream id, higher than the last (1, 3, 5...: a ttrpc server refuses any other with
InvalidArgument), and a unary call's only answer is one response frame (type 2) on that stream.
The data are protobuf: `ttrpc.Request {service, method, payload, timeout_nano, metadata}` and
`ttrpc.Response {status, payload}` (messages/ttrpc.proto).  There is no handshake; the server may
refuse a peer of another user (SO_PEERCRED) by closing the connection.

Everything that can hang has a deadline: connect, each write and each read.  A SIGSTOPped shim
still accepts connections (the kernel queues them in its listen backlog) and never answers, so a
timeout on connect alone would hang on the first read.  Whatever goes wrong, a call raises
`ShimError` (a kind and a message), never anything else: a shim's misbehaviour is a finding, not
a crash.  After any error but an error status, the connection is of no further use (a late
answer may still come) and every later call raises the same error.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import struct
import time
from typing import Literal

from google.protobuf.message import DecodeError

from .messages.ttrpc_pb2 import KeyValue, Request, Response

HEADER = struct.Struct(">IIBB")  # data length, stream id, message type, flags
MAX_DATA = 4 << 20  # ttrpc's messageLengthMax: a longer frame is refused, never read
TYPE_REQUEST, TYPE_RESPONSE = 1, 2
UNIMPLEMENTED = 12  # the status code (grpc's) of a service or method the server does not serve
_SUN_PATH_MAX = 107  # sockaddr_un's sun_path holds 108 bytes, the last a NUL

FailureKind = Literal["no-socket", "refused", "timeout", "denied", "unimplemented", "error", "protocol"]
Metadata = tuple[tuple[str, str], ...]  # ttrpc's request metadata: (key, value) pairs


class ShimError(Exception):
    """Why a call got no answer: the connection's failure, or the error status the shim answered
    (kind "unimplemented" for code 12, "error" for any other, with its code)."""

    def __init__(self, kind: FailureKind, message: str, code: int | None = None):
        super().__init__(message)
        self.kind, self.message, self.code = kind, message, code


class Connection:
    """One connection to a ttrpc server; use as a context manager: it is closed on leaving."""

    def __init__(self, path: str, deadline: float):
        """Connect to the unix socket at `path` before `deadline` (time.monotonic())."""
        self.path = path
        self.deadline = deadline
        self._stream = 1
        self._answered = 0  # responses read: a peer that answered once did not refuse us
        self.broken: ShimError | None = None
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            self._connect()
        except BaseException:
            self._sock.close()
            raise

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    # -- connecting

    def _connect(self) -> None:
        self._sock.settimeout(self._remaining("connecting"))
        try:
            if len(os.fsencode(self.path)) <= _SUN_PATH_MAX:
                self._sock.connect(self.path)
            else:
                self._connect_through_dir_fd()
        except TimeoutError:
            raise ShimError("timeout", f"{self.path}: no connection within the timeout") from None
        except OSError as e:
            raise self._connect_error(e) from None

    def _connect_through_dir_fd(self) -> None:
        """A path too long for sockaddr_un (a root read through /proc/<pid>/root, an image mounted
        deep) is reached through its dir, opened by fd: /proc/self/fd/N/<name> is short."""
        head, name = os.path.split(self.path)
        fd = os.open(head or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            self._sock.connect(f"/proc/self/fd/{fd}/{name}")
        finally:
            os.close(fd)

    def _connect_error(self, e: OSError) -> ShimError:
        what = f"{self.path}: {e.strerror or e}"
        if e.errno == errno.EAGAIN:
            # A unix socket's connect() with a timeout does not wait for room in the listen backlog:
            # it fails at once when the backlog is full, which takes a listener that has accepted
            # nothing for long (a stopped or hung shim; Go listens with a backlog of somaxconn).
            return ShimError("timeout", f"{what}: the shim's listen backlog is full (it accepts no "
                                        "connection: stopped or hung?)")
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            return ShimError("no-socket", what)
        if e.errno in (errno.EACCES, errno.EPERM):
            return ShimError("denied", f"{what} (the socket or a dir above it is not ours to use)")
        if e.errno == errno.ECONNREFUSED:
            # connect() says the same of a file that is no socket: tell them apart
            try:
                is_socket = stat.S_ISSOCK(os.stat(self.path).st_mode)
            except OSError:
                is_socket = True
            if not is_socket:
                return ShimError("no-socket", f"{self.path}: not a socket")
            return ShimError("refused", f"{what} (a socket file nobody listens on: the shim is gone)")
        return ShimError("refused", what)

    # -- calls

    def call(self, service: str, method: str, payload: bytes, metadata: Metadata = ()) -> bytes:
        """One unary call: the response's payload, or ShimError."""
        if self.broken is not None:
            raise self.broken
        try:
            return self._call(service, method, payload, metadata)
        except ShimError as e:
            if e.kind not in ("unimplemented", "error"):  # anything but an answer ends the connection
                self.broken = e
            raise

    def _call(self, service: str, method: str, payload: bytes, metadata: Metadata) -> bytes:
        stream, self._stream = self._stream, self._stream + 2
        request = Request(service=service, method=method, payload=payload,
                          # the shim gives up too when we do (ttrpc sets the handler's deadline)
                          timeout_nano=int(self._remaining(f"calling {method}") * 1e9),
                          metadata=[KeyValue(key=k, value=v) for k, v in metadata])
        data = request.SerializeToString()
        self._send(HEADER.pack(len(data), stream, TYPE_REQUEST, 0) + data, method)
        length, got_stream, kind, _flags = HEADER.unpack(self._recv(HEADER.size, method))
        if length > MAX_DATA:
            raise ShimError("protocol", f"{method}: a frame of {length} bytes, over ttrpc's {MAX_DATA}")
        if got_stream != stream:
            raise ShimError("protocol", f"{method}: an answer on stream {got_stream}, asked on {stream}")
        if kind != TYPE_RESPONSE:
            raise ShimError("protocol", f"{method}: a frame of type {kind} where a response (2) was due")
        body = self._recv(length, method)
        self._answered += 1
        response = Response()
        try:
            response.ParseFromString(body)
        except DecodeError as e:
            raise ShimError("protocol", f"{method}: the response is not a ttrpc Response: {e}") from None
        if response.status.code != 0:
            code = response.status.code
            raise ShimError("unimplemented" if code == UNIMPLEMENTED else "error",
                            response.status.message or f"status code {code}", code)
        return response.payload

    def _remaining(self, doing: str) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise ShimError("timeout", f"{self.path}: no answer within the timeout ({doing})")
        return left

    def _send(self, frame: bytes, method: str) -> None:
        # A request is a few hundred bytes: it fits the socket buffer, so sendall() returns at
        # once even to a stopped shim; the deadline still bounds it.
        try:
            self._sock.settimeout(self._remaining(f"sending {method}"))
            self._sock.sendall(frame)
        except TimeoutError:
            raise ShimError("timeout", f"{self.path}: {method} could not be sent within the timeout") from None
        except OSError as e:
            raise self._closed_error(method, e.strerror or str(e)) from None

    def _recv(self, size: int, method: str) -> bytes:
        """Exactly `size` bytes, each read bounded by what is left of the deadline."""
        buf = bytearray()
        while len(buf) < size:
            try:
                self._sock.settimeout(self._remaining(f"waiting for {method}'s answer"))
                chunk = self._sock.recv(min(size - len(buf), 1 << 16))
            except TimeoutError:
                raise ShimError("timeout", f"{self.path}: no answer to {method} within the timeout "
                                           "(a stopped shim accepts the connection and never answers)") from None
            except OSError as e:
                raise self._closed_error(method, e.strerror or str(e)) from None
            if not chunk:
                cut = f" after {len(buf)} of {size} bytes" if buf else ""
                raise self._closed_error(method, f"the connection was closed{cut}")
            buf += chunk
        return bytes(buf)

    def _closed_error(self, method: str, what: str) -> ShimError:
        """The peer hung up.  A ttrpc server does that to a client of another uid or gid (it checks
        SO_PEERCRED and closes): say so when that is why, before it ever answered."""
        if self._answered == 0:
            peer = self._peer()
            if peer is not None and peer != (os.geteuid(), os.getegid()):
                return ShimError("denied", f"{self.path}: {what}: the shim listens as uid {peer[0]} gid {peer[1]} "
                                           "and answers only its own user and group; we are uid "
                                           f"{os.geteuid()} gid {os.getegid()}")
        return ShimError("protocol", f"{self.path}: {method}: {what}")

    def _peer(self) -> tuple[int, int] | None:
        """The uid and gid that listened on the socket (SO_PEERCRED), or None.  Its pid is not
        told: it is the `containerd-shim-runc-v2 start` that made the socket and handed it to the
        shim before it exited."""
        try:
            raw = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        except OSError:
            return None
        _pid, uid, gid = struct.unpack("3i", raw)
        return uid, gid
