"""The shim task API client (recover/generations/runtime_v2/shimapi): ttrpc framing and every
failure against a fake shim on a real socket (tests/fake_ttrpc.py), then real shims of containerd
1.6.20, 1.7.34 and 2.3.4 with their daemon SIGKILLed (one lab per version, all at once): what each
answers for a healthy task, an init that exited 42, the wrong API version, a stopped shim, a dead
one, another user; and that asking changes nothing the daemon then does (SPEC-v2 §5)."""

from __future__ import annotations

import functools
import os
import signal
import socket
import struct
import tempfile
import time
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fake_ttrpc import FakeShim, frame, respond, state, tasks
from lab_fixtures import run_concurrently, unique
from recover.generations.runtime_v2.shimapi import (NAMESPACE_METADATA, PidInfo, ProcessState, ShimAnswer,
                                                    ShimFailure, ask_shim)
from recover.generations.runtime_v2.shimapi.messages import shim_v2_pb2, shim_v3_pb2
from recover.generations.runtime_v2.shimapi.messages.ttrpc_pb2 import Response
from recover.generations.runtime_v2.shimapi.ttrpc import MAX_DATA, Connection
from recover.generations.runtime_v2.lab import VERSIONS, Containerd, alive, proc_stat, wait_until

RUNNING, STOPPED = 2, 3  # containerd.v1.types.Status
NOBODY = 65534
TIMEOUT = 1.0  # s: the client's timeout where a test waits it out
SLACK = 1.0  # s: how much later than its timeout a call may return (a loaded 2-core machine)


def ask(path, exec_ids=(), api=None, timeout=5.0, namespace="ns", task="t1") -> ShimAnswer:
    return ask_shim(str(path), namespace, task, list(exec_ids), api, timeout)


def sock_path(tmp_path: Path) -> Path:
    return tmp_path / "shim.sock"


# ---------------------------------------------------------------- a well-behaved shim


def test_it_asks_state_of_init_and_execs_then_pids_on_odd_rising_streams(tmp_path):
    states = {"": state(RUNNING, 100), "e1": state(RUNNING, 101)}
    pids = [(100, None, None), (101, "e1", None), (102, None, "other.Type")]
    with FakeShim(sock_path(tmp_path), tasks(3, states, pids)) as shim:
        answer = ask(shim.path, ["e1"], api=3, namespace="k8s.io", timeout=5)
    assert answer == ShimAnswer(3, None, ProcessState("RUNNING", 100, 0, None),
                                (("e1", ProcessState("RUNNING", 101, 0, None)),),
                                (PidInfo(100, None), PidInfo(101, "e1"), PidInfo(102, None)))
    assert answer.exec("e1") == ProcessState("RUNNING", 101, 0, None) and answer.exec("e2") is None
    assert [s for s, _ in shim.requests] == [1, 3, 5]
    assert [(r.service, r.method) for _, r in shim.requests] == [
        ("containerd.task.v3.Task", "State"), ("containerd.task.v3.Task", "State"), ("containerd.task.v3.Task", "Pids")]
    asked = [shim_v3_pb2.StateRequest.FromString(r.payload) for _, r in shim.requests[:2]]
    assert [(a.id, a.exec_id) for a in asked] == [("t1", ""), ("t1", "e1")]
    for _, r in shim.requests:
        assert [(kv.key, kv.value) for kv in r.metadata] == [(NAMESPACE_METADATA, "k8s.io")]
        assert 0 < r.timeout_nano <= 5e9, "the shim is told when we give up"


def test_an_exited_process_has_its_status_and_exit_time_in_ns(tmp_path):
    states = {"": state(STOPPED, 100, 42, (1_796_671_709, 170_774_642)), "e1": state(STOPPED, 101, 137, None)}
    with FakeShim(sock_path(tmp_path), tasks(2, states)) as shim:
        answer = ask(shim.path, ["e1"], api=2)
    assert answer.init == ProcessState("STOPPED", 100, 42, 1_796_671_709_170_774_642)
    assert answer.exec("e1") == ProcessState("STOPPED", 101, 137, None), "no exited_at at all: None"
    assert answer.pids == ()


def test_a_status_this_client_does_not_name_is_kept_as_its_number(tmp_path):
    with FakeShim(sock_path(tmp_path), tasks(3, {"": state(9, 100)})) as shim:
        assert ask(shim.path).init.status == "STATUS_9"


def test_without_api_it_tries_3_then_2_on_the_same_connection(tmp_path):
    with FakeShim(sock_path(tmp_path), tasks(2, {"": state(RUNNING, 7), "e1": state(RUNNING, 8)})) as shim:
        answer = ask(shim.path, ["e1"], api=None)
    assert answer.api == 2 and answer.init.pid == 7 and answer.exec("e1").pid == 8
    assert [(s, r.service, r.method) for s, r in shim.requests] == [
        (1, "containerd.task.v3.Task", "State"), (3, "containerd.task.v2.Task", "State"),
        (5, "containerd.task.v2.Task", "State"), (7, "containerd.task.v2.Task", "Pids")]


@pytest.mark.parametrize("api", [2, None])
def test_the_wrong_api_is_unimplemented_and_nothing_more_is_asked(tmp_path, api):
    with FakeShim(sock_path(tmp_path), tasks(4, {"": state(RUNNING, 7)})) as shim:
        answer = ask(shim.path, ["e1"], api=api)
    assert answer.api is None and answer.failure.kind == "unimplemented" and answer.failure.code == 12
    assert answer.init == answer.failure == answer.exec("e1") == answer.pids
    assert "service containerd.task.v2.Task" in answer.failure.message
    assert len(shim.requests) == (1 if api else 2)


def test_an_error_status_is_that_process_s_answer_and_the_rest_goes_on(tmp_path):
    with FakeShim(sock_path(tmp_path), tasks(3, {"": state(RUNNING, 7)}, [(7, None, None)])) as shim:
        answer = ask(shim.path, ["gone", "also-gone"])
    assert answer.failure is None and answer.api == 3 and answer.init.pid == 7
    assert answer.exec("gone") == ShimFailure("error", "process does not exist gone: not found", 5)
    assert answer.exec("also-gone").code == 5 and answer.pids == (PidInfo(7, None),)


def test_the_messages_name_no_method_but_state_and_pids():
    for module in (shim_v2_pb2, shim_v3_pb2):
        assert list(module.DESCRIPTOR.services_by_name["Task"].methods_by_name) == ["State", "Pids"]


def test_an_answer_is_a_frozen_value_that_encodes():
    answer = ShimAnswer(3, None, ProcessState("RUNNING", 1, 0, None), (("e1", ShimFailure("error", "x", 5)),), ())
    with pytest.raises(AttributeError):
        answer.api = 2
    assert hash(answer) == hash(ShimAnswer(3, None, ProcessState("RUNNING", 1, 0, None),
                                           (("e1", ShimFailure("error", "x", 5)),), ()))
    assert msgspec.json.decode(msgspec.json.encode(answer))["execs"][0][1]["kind"] == "error"


def test_arguments_that_make_no_sense_are_the_caller_s_error(tmp_path):
    with pytest.raises(ValueError, match="version 2 or 3"):
        ask(tmp_path / "s", api=1)
    with pytest.raises(ValueError, match="positive"):
        ask(tmp_path / "s", timeout=0)


# ---------------------------------------------------------------- what real shims never send


def misbehaving(what: str):
    """A shim that answers its first request by doing `what`."""
    def handle(conn, stream, request) -> bool:
        if what == "oversized":
            frame(conn, stream, b"", length=MAX_DATA + 1)  # and never the 4 MiB: nothing waits for them
        elif what == "other-stream":
            respond(conn, stream + 2, shim_v3_pb2.StateResponse(pid=1).SerializeToString())
        elif what == "data-frame":
            frame(conn, stream, b"", kind=3)
        elif what == "truncated":
            frame(conn, stream, b"\x0a\x05", length=100)
            return False
        elif what == "closed":
            return False
        elif what == "garbage-response":
            frame(conn, stream, b"\xff\xff\xff\xff")
        elif what == "garbage-payload":
            respond(conn, stream, b"\x0a\xff\xff\xff\xff")  # field 1, a length past the end
        elif what == "silent":
            pass
        return True
    return handle


@pytest.mark.parametrize("what, says", [
    ("oversized", f"a frame of {MAX_DATA + 1} bytes"),
    ("other-stream", "an answer on stream 3, asked on 1"),
    ("data-frame", "a frame of type 3"),
    ("truncated", "closed after 2 of 100 bytes"),
    ("closed", "the connection was closed"),
    ("garbage-response", "not a ttrpc Response"),
])
def test_a_broken_frame_is_a_protocol_failure_that_ends_the_conversation(tmp_path, what, says):
    with FakeShim(sock_path(tmp_path), misbehaving(what)) as shim:
        t0 = time.monotonic()
        answer = ask(shim.path, ["e1"], api=3, timeout=5)
        took = time.monotonic() - t0
    assert answer.failure.kind == "protocol" and says in answer.failure.message
    assert answer.init == answer.failure == answer.exec("e1") == answer.pids and answer.api is None
    assert len(shim.requests) == 1, "nothing more is asked on a connection in an unknown state"
    assert took < 5, "it did not wait for what was never coming"


def test_a_payload_that_does_not_parse_is_that_call_s_protocol_failure(tmp_path):
    with FakeShim(sock_path(tmp_path), misbehaving("garbage-payload")) as shim:
        answer = ask(shim.path, api=3, timeout=5)
    assert answer.init.kind == "protocol" and "not a StateResponse" in answer.init.message


def answering(frames: dict[str, bytes], then_hang_up: bool = False):
    """A shim that answers each method with the raw bytes given (header and all), and hangs up
    after a method it has none for (or after every answer: what was cut short stays short)."""
    def handle(conn, stream, request) -> bool:
        raw = frames.get(request.method)
        if raw is None:
            return False
        conn.sendall(raw.replace(b"<stream>", struct.pack(">I", stream)))
        return not then_hang_up
    return handle


def respond_bytes(payload: bytes, status: tuple[int, str] | None = None) -> bytes:
    """A response frame holding `payload`, on the stream the handler fills in."""
    response = Response(payload=payload)
    if status:
        response.status.code, response.status.message = status
    data = response.SerializeToString()
    return struct.pack(">I", len(data)) + b"<stream>" + b"\x02\x00" + data


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=st.binary(max_size=40), state_payload=st.binary(max_size=40), pids_payload=st.binary(max_size=40),
       status=st.none() | st.tuples(st.integers(-2**31, 2**31 - 1), st.text(max_size=10)))
def test_nothing_a_shim_sends_makes_it_raise(first, state_payload, pids_payload, status):
    """Raw bytes for a first answer; garbage State and Pids payloads inside good frames; any
    status: always an answer, never an exception."""
    with tempfile.TemporaryDirectory() as top:
        for handler in (answering({"State": first}, then_hang_up=True),
                        answering({"State": respond_bytes(state_payload, status), "Pids": respond_bytes(pids_payload)})):
            with FakeShim(Path(top) / "s", handler) as shim:
                answer = ask(shim.path, ["e1"], api=3, timeout=5)
            assert isinstance(answer, ShimAnswer)
            msgspec.json.encode(answer)
            os.unlink(Path(top) / "s")


def test_garbled_process_details_are_a_protocol_failure_of_pids(tmp_path):
    pids = shim_v3_pb2.PidsResponse()
    info = pids.processes.add(pid=7).info
    info.type_url, info.value = "containerd.runc.v1.ProcessDetails", b"\x0a\xff"  # a length past the end
    state_ = shim_v3_pb2.StateResponse(pid=7, status=RUNNING).SerializeToString()
    frames = {"State": respond_bytes(state_), "Pids": respond_bytes(pids.SerializeToString())}
    with FakeShim(sock_path(tmp_path), answering(frames)) as shim:
        answer = ask(shim.path, api=3)
    assert answer.init.pid == 7 and answer.failure is None
    assert answer.pids.kind == "protocol" and "ProcessDetails does not parse" in answer.pids.message


def test_a_shim_that_never_answers_times_out_on_the_read(tmp_path):
    with FakeShim(sock_path(tmp_path), misbehaving("silent")) as shim:
        t0 = time.monotonic()
        answer = ask(shim.path, ["e1"], api=None, timeout=TIMEOUT)
        took = time.monotonic() - t0
    assert answer.failure.kind == "timeout" and "no answer to State" in answer.failure.message
    assert answer.init == answer.exec("e1") == answer.pids == answer.failure
    assert TIMEOUT <= took < TIMEOUT + SLACK
    assert len(shim.requests) == 1


# ---------------------------------------------------------------- reaching the socket


def test_no_socket_at_the_path(tmp_path):
    answer = ask(tmp_path / "absent", ["e1"])
    assert answer.failure.kind == "no-socket" and answer.init == answer.exec("e1") == answer.pids == answer.failure
    (tmp_path / "file").write_text("")
    assert ask(tmp_path / "file").failure == ShimFailure("no-socket", f"{tmp_path / 'file'}: not a socket")
    assert ask(tmp_path / "file" / "below").failure.kind == "no-socket"


def test_a_socket_file_nobody_listens_on_is_refused(tmp_path):
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(sock_path(tmp_path)))  # the file stays when its socket is closed, as a dead shim's
    answer = ask(sock_path(tmp_path))
    assert answer.failure.kind == "refused" and "nobody listens" in answer.failure.message


def test_a_full_listen_backlog_is_a_timeout_at_once(tmp_path):
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(sock_path(tmp_path)))
        listener.listen(0)  # and never accepts
        queued = []
        try:
            while True:  # fill the backlog (a stopped shim's, after many tries)
                c = socket.socket(socket.AF_UNIX)
                queued.append(c)
                c.setblocking(False)
                c.connect(str(sock_path(tmp_path)))
        except BlockingIOError:
            pass
        t0 = time.monotonic()
        answer = ask(sock_path(tmp_path), timeout=30)
        took = time.monotonic() - t0
        for c in queued:
            c.close()
    assert answer.failure.kind == "timeout" and "backlog is full" in answer.failure.message
    assert took < 5


def test_a_path_too_long_for_a_unix_address_is_reached_through_its_dir(tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    path = deep / "shim.sock"
    assert len(str(path)) > 108
    with FakeShim(path, tasks(3, {"": state(RUNNING, 5)})) as shim:
        assert ask(shim.path).init.pid == 5
    assert ask(deep / "absent").failure.kind == "no-socket"


def test_a_connection_is_closed_whatever_happens(tmp_path):
    before = set(os.listdir("/proc/self/fd"))
    with FakeShim(sock_path(tmp_path), misbehaving("garbage-response")) as shim:
        for _ in range(3):
            ask(shim.path, api=3)
        ask(tmp_path / "absent")
        with Connection(str(shim.path), time.monotonic() + 5) as conn:
            pass
        assert conn._sock.fileno() == -1
    assert set(os.listdir("/proc/self/fd")) <= before, "the fake's are closed: what is left is the client's"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may connect to any socket whatever its mode")
def test_a_socket_we_may_not_use_is_denied(tmp_path):
    with FakeShim(sock_path(tmp_path), tasks(3, {"": state(RUNNING, 5)})) as shim:
        os.chmod(shim.path, 0)
        assert ask(shim.path).failure.kind == "denied"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the fake shim runs as nobody")
def test_a_shim_of_another_user_that_hangs_up_is_denied():
    """As a ttrpc server does (UnixSocketRequireSameUser): accept, read SO_PEERCRED, close."""
    top = tempfile.mkdtemp()
    os.chmod(top, 0o777)
    path = os.path.join(top, "s")
    ready_r, ready_w = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            with socket.socket(socket.AF_UNIX) as listener:
                listener.bind(path)
                listener.listen(1)
                os.write(ready_w, b"1")
                listener.settimeout(20)
                conn, _ = listener.accept()
                struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
                conn.close()
        finally:
            os._exit(0)
    try:
        os.close(ready_w)
        assert os.read(ready_r, 1) == b"1"
        answer = ask(path, timeout=10)
    finally:
        os.close(ready_r)
        os.waitpid(child, 0)
        os.unlink(path)
        os.rmdir(top)
    assert answer.failure.kind == "denied", answer.failure
    assert f"uid {NOBODY} gid {NOBODY}" in answer.failure.message and "we are uid 0 gid 0" in answer.failure.message


# ---------------------------------------------------------------- real shims


def api_of(version: str) -> int:
    return 3 if VERSIONS[version].major >= 2 else 2


def all_stopped(pid: int) -> bool:
    """Every thread of the process is stopped: SIGSTOP reaches a Go process's threads one by one,
    and one still running would answer."""
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return False
    return all((st := proc_stat(int(t))) is not None and st.state in ("T", "t") for t in threads)


def all_gone(pid: int) -> bool:
    """The process is reaped, or a zombie whose every thread is gone.  Its leader turns zombie
    while other threads still exit with the files they share: a shim's listener stays open that
    long, and a connection queued on it then is reset, not refused."""
    st = proc_stat(pid)
    try:
        return st is None or (st.state in ("Z", "X") and os.listdir(f"/proc/{pid}/task") == [str(pid)])
    except FileNotFoundError:  # reaped meanwhile
        return True


def reaped(pid: int, start: int) -> bool:
    st = proc_stat(pid)
    return st is None or st.start != start


def ask_as_nobody(path: str, namespace: str, task_id: str) -> dict:
    """ask_shim from a child that dropped root, as far as the socket (the lab's dirs opened up)."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            with os.fdopen(write_end, "wb") as out:
                out.write(msgspec.json.encode(ask_shim(path, namespace, task_id, [], None, 5).failure))
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        data = f.read()
    os.waitpid(child, 0)
    return msgspec.json.decode(data)


def shim_cycle(version: str) -> dict:
    """Tasks made, the daemon SIGKILLed, each shim asked (or not) in each state, the daemon
    started again: what was answered, how long the stopped shim took, what the daemon then did."""
    ns = unique("shimapi")
    api = api_of(version)
    with Containerd.create(version=version, namespace=ns) as d:
        d.start()
        healthy = d.run("healthy")
        exits = d.run("exits")  # e1 exits 43 on SIGTERM; e2 dies with the init (SIGKILL: 137)
        d.ctr("task", "exec", "-d", "--exec-id", "e2", "exits", "/bin/sh", "-c", "sleep 1000000")
        e2 = int(wait_until(lambda: _text(d.paths.bundle(ns, "exits") / "e2.pid"), 10, "e2.pid"))
        twins = {name: d.run(name, exec_id=None) for name in ("twin-asked", "twin-unasked")}
        dead = d.run("dead", exec_id=None)
        socket_of = {t: str(d.paths.shim_socket(ns, t)) for t in ("healthy", "exits", "twin-asked", "dead")}
        d.crash()
        seen: dict = {"healthy_task": healthy, "exits_task": exits, "e2": e2, "twins": twins, "api": api}

        def asked(task, exec_ids=(), api=api, timeout=5.0) -> ShimAnswer:
            return ask_shim(socket_of[task], ns, task, list(exec_ids), api, timeout)

        seen["healthy"] = asked("healthy", ["e1"])
        seen["healthy_any_api"] = asked("healthy", ["e1"], api=None)
        seen["healthy_wrong_api"] = asked("healthy", ["e1"], api=5 - api)
        messages = shim_v3_pb2 if api == 3 else shim_v2_pb2
        with Connection(socket_of["healthy"], time.monotonic() + 5) as conn:  # no metadata at all
            service = f"containerd.task.v{api}.Task"
            seen["state_without_metadata"] = messages.StateResponse.FromString(
                conn.call(service, "State", messages.StateRequest(id="healthy").SerializeToString()))
            seen["pids_without_metadata"] = messages.PidsResponse.FromString(
                conn.call(service, "Pids", messages.PidsRequest(id="healthy").SerializeToString()))

        # an init that exits 42 under its live shim, its execs before it (43) and with it (137)
        e1_start = proc_stat(exits.execs["e1"]).start
        os.kill(exits.execs["e1"], signal.SIGTERM)
        wait_until(lambda: reaped(exits.execs["e1"], e1_start), 10, "e1 to be reaped")
        os.kill(exits.init, signal.SIGTERM)
        wait_until(lambda: reaped(exits.init, exits.init_start), 10, "the init to be reaped")

        def once_stopped(task: str, exec_ids=()) -> ShimAnswer:
            """Asked until init and execs are STOPPED: a shim records an exit just after reaping it."""
            def answer() -> ShimAnswer | None:
                a = asked(task, exec_ids)
                processes = [a.init, *(a.exec(e) for e in exec_ids)]
                return a if all(isinstance(p, ProcessState) and p.status == "STOPPED" for p in processes) else None
            return wait_until(answer, 10, f"{task}'s shim to report every process stopped")

        seen["exits"] = once_stopped("exits", ["e1", "e2"])

        # twins: the same fault; one is asked, the other never
        for twin in twins.values():
            os.kill(twin.init, signal.SIGTERM)
        for twin in twins.values():
            wait_until(lambda twin=twin: reaped(twin.init, twin.init_start), 10, "a twin's init to be reaped")
        seen["twin_asked"] = once_stopped("twin-asked")

        # a stopped shim: the connection is accepted, nothing answers
        os.kill(healthy.shim, signal.SIGSTOP)
        wait_until(lambda: all_stopped(healthy.shim), 10, "the shim to stop")
        t0 = time.monotonic()
        seen["stopped"] = asked("healthy", ["e1"], api=None, timeout=TIMEOUT)
        seen["stopped_took"] = time.monotonic() - t0
        os.kill(healthy.shim, signal.SIGCONT)
        wait_until(lambda: not all_stopped(healthy.shim), 10, "the shim to resume")
        seen["resumed"] = asked("healthy", ["e1"])

        # a dead shim's socket file, a socket that was never there, another user
        os.kill(dead.shim, signal.SIGKILL)
        wait_until(lambda: all_gone(dead.shim), 10, "the shim to die")
        seen["dead"] = asked("dead")
        seen["missing"] = ask_shim(str(d.paths.run_containerd / "s" / ("0" * 64)), ns, "nothing", [], None, 5)
        for p in (d.paths.base, d.paths.run_containerd / "s"):
            os.chmod(p, 0o711)  # nobody may reach the socket: the shim itself decides
        os.chmod(socket_of["healthy"], 0o666)
        seen["as_nobody"] = ask_as_nobody(socket_of["healthy"], ns, "healthy")
        seen["twin_shims_before"] = {name: alive(t.shim) for name, t in twins.items()}

        d.start()
        seen["after"] = d.task_list()
        if version.startswith("1.6"):
            # ctr logs the status of the task it deletes: "task <id> exit with non-zero exit code 42"
            seen["rm"] = {name: d.ctr("task", "rm", name).stderr for name in twins}
        else:  # 1.7 and 2.x shut the shims down: wait for it
            for t in twins.values():
                wait_until(lambda t=t: not alive(t.shim), 10, "a twin's shim to exit")
        seen["twin_bundles_after"] = {name: d.paths.bundle(ns, name).exists() for name in twins}
        seen["twin_shims_after"] = {name: alive(t.shim) for name, t in twins.items()}
        seen["healthy_alive_after"] = alive(healthy.init, healthy.init_start) and alive(healthy.execs["e1"])
    return seen


def _text(path: Path) -> str | None:
    try:
        return path.read_text() or None
    except FileNotFoundError:
        return None


@pytest.fixture(scope="module")
def cycles():
    return run_concurrently({v: functools.partial(shim_cycle, v) for v in VERSIONS})


@pytest.mark.parametrize("version", VERSIONS)
def test_a_healthy_task_is_running_with_its_pids(cycles, version):
    seen = cycles[version]
    task = seen["healthy_task"]
    answer = seen["healthy"]
    assert answer.api == seen["api"] and answer.failure is None
    assert answer.init == ProcessState("RUNNING", task.init, 0, None), "Go's zero time: no exit"
    assert answer.exec("e1") == ProcessState("RUNNING", task.execs["e1"], 0, None)
    pids = {p.pid: p.exec_id for p in answer.pids}
    assert pids[task.init] is None and pids[task.execs["e1"]] == "e1"
    assert len(pids) == 4, "init, exec, and the sleep each of them runs"
    assert seen["healthy_any_api"] == answer, "api=None finds the version the shim serves"


@pytest.mark.parametrize("version", VERSIONS)
def test_state_and_pids_need_no_namespace_metadata(cycles, version):
    seen = cycles[version]
    state_ = seen["state_without_metadata"]
    assert (state_.pid, state_.status) == (seen["healthy_task"].init, RUNNING)
    assert {p.pid for p in seen["pids_without_metadata"].processes} == {p.pid for p in seen["healthy"].pids}


@pytest.mark.parametrize("version", VERSIONS)
def test_an_init_that_exited_under_its_live_shim_is_stopped_with_its_status(cycles, version):
    seen = cycles[version]
    answer, task = seen["exits"], seen["exits_task"]
    init, e1, e2 = answer.init, answer.exec("e1"), answer.exec("e2")
    assert (init.status, init.pid, init.exit_status) == ("STOPPED", task.init, 42)
    assert (e1.status, e1.pid, e1.exit_status) == ("STOPPED", task.execs["e1"], 43), "exited on SIGTERM"
    assert (e2.status, e2.pid, e2.exit_status) == ("STOPPED", seen["e2"], 137), "killed with its pid namespace"
    assert e1.exited_at < init.exited_at and e1.exited_at < e2.exited_at, "e1 was reaped before the others died"
    assert abs(init.exited_at - time.time_ns()) < 86400e9, "ns since the epoch"
    assert answer.pids == () and answer.failure is None


@pytest.mark.parametrize("version", VERSIONS)
def test_the_wrong_api_version_is_unimplemented(cycles, version):
    seen = cycles[version]
    failure = seen["healthy_wrong_api"].failure
    other = 5 - seen["api"]
    assert failure == ShimFailure("unimplemented", f"service containerd.task.v{other}.Task", 12)
    assert seen["healthy_wrong_api"].init == failure and seen["healthy_wrong_api"].api is None


@pytest.mark.parametrize("version", VERSIONS)
def test_a_stopped_shim_times_out_and_is_unharmed(cycles, version):
    seen = cycles[version]
    answer = seen["stopped"]
    assert answer.failure.kind == "timeout" and answer.init == answer.failure == answer.pids
    assert TIMEOUT <= seen["stopped_took"] < TIMEOUT + SLACK
    assert seen["resumed"] == seen["healthy"], "after SIGCONT it answers as before"
    task = seen["healthy_task"]
    assert seen["after"]["healthy"] == (task.init, "RUNNING") and seen["healthy_alive_after"]


@pytest.mark.parametrize("version", VERSIONS)
def test_a_dead_shim_s_socket_is_refused_and_a_missing_one_is_no_socket(cycles, version):
    seen = cycles[version]
    assert seen["dead"].failure.kind == "refused", seen["dead"].failure
    assert seen["missing"].failure.kind == "no-socket"


@pytest.mark.parametrize("version", VERSIONS)
def test_a_shim_answers_only_its_own_user(cycles, version):
    failure = cycles[version]["as_nobody"]
    # it accepts, reads SO_PEERCRED and hangs up (a reset, or a broken pipe if we wrote late)
    assert failure["kind"] == "denied" and "listens as uid 0 gid 0" in failure["message"]


@pytest.mark.parametrize("version", VERSIONS)
def test_asking_changes_nothing_the_daemon_then_does(cycles, version):
    """Twins with the same fault (the init exited 42 under its live shim), one asked: 1.6 keeps
    both STOPPED with 42; 1.7 and 2.x clean both up (SPEC-v2 §2a.1)."""
    seen = cycles[version]
    assert seen["twin_asked"].init.exit_status == 42 and seen["twin_asked"].init.status == "STOPPED"
    assert seen["twin_shims_before"] == {"twin-asked": True, "twin-unasked": True}
    after = {name: seen["after"].get(name) for name in seen["twins"]}
    if version.startswith("1.6"):
        assert after == {name: (t.init, "STOPPED") for name, t in seen["twins"].items()}
        for name, said in seen["rm"].items():
            assert f"task {name} exit with non-zero exit code 42" in said
    else:
        assert after == {"twin-asked": None, "twin-unasked": None}
        assert seen["twin_bundles_after"] == seen["twin_shims_after"] == {"twin-asked": False, "twin-unasked": False}
