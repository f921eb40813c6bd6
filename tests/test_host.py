"""/proc parsing: the stat line, wait statuses, containerd's own (broken) stat parser."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recover.generations.containerd_0_2 import is_shim_of
from recover.generations.containerd_0_2.predict import _Panic, go_read_proc_stat_field
from recover.host import HostView, parse_stat, wait_status_to_exit


def stat_line(pid: int, comm: bytes, state=b"S", ppid=1, start=194198, exit_code=9) -> bytes:
    rest = [state, str(ppid).encode()] + [b"0"] * 17 + [str(start).encode()] + [b"0"] * 29 + [str(exit_code).encode()]
    return b"%d (%s) " % (pid, comm) + b" ".join(rest) + b"\n"


@pytest.mark.parametrize("comm", [b"sleep", b"a) b", b"x) y z", b"(ugly )pr()cess(", b") ", b"))", b"a b c",
                                  b"new\nline", b"\xff\xfe", b""])
def test_stat_split_at_first_paren_and_last_paren(comm):
    st_ = parse_stat(stat_line(42, comm, b"Z", 7, 555, 0x0300))
    assert (st_.pid, st_.state, st_.ppid, st_.starttime, st_.exit_code) == (42, "Z", 7, 555, 0x0300)
    assert os.fsencode(st_.comm) == comm


def test_old_kernel_without_exit_code():
    line = b"5 (sh) S 1 " + b" ".join([b"0"] * 17) + b" 99 0"
    assert parse_stat(line).exit_code is None and parse_stat(line).starttime == 99


@pytest.mark.parametrize("data", [b"", b"garbage", b"12 (x", b"x (y) S 1", b"12 (y) S notanumber",
                                  stat_line(1, b"x", start=1 << 64), stat_line(1 << 40, b"x"), stat_line(1, b"x", ppid=-1)])
def test_bad_stat_is_none(data):
    assert parse_stat(data) is None


@given(st.binary(max_size=300))
def test_stat_parser_never_raises(data):
    parse_stat(data)


@given(st.binary(max_size=15))
def test_any_comm_parses(comm):
    assert parse_stat(stat_line(7, comm)).starttime == 194198


@pytest.mark.parametrize("status, code", [(9, 137), (15, 143), (0x0300, 3), (0, 0), (0x8b, 139)])
def test_wait_status(status, code):
    assert wait_status_to_exit(status) == code


def test_containerd_stat_parser_panics_on_a_comm_with_paren_space():
    assert go_read_proc_stat_field(stat_line(1, b"sleep"), 22) == b"194198"
    assert go_read_proc_stat_field(stat_line(1, b"sleep"), 4) == b"1"
    with pytest.raises(_Panic):
        go_read_proc_stat_field(stat_line(1, b"a) b"), 22)
    with pytest.raises(_Panic):
        go_read_proc_stat_field(stat_line(1, b"a) b"), 4)
    assert go_read_proc_stat_field(stat_line(1, b"x) y z"), 4) == b"z"  # no panic, wrong value


@given(st.lists(st.sampled_from([b") ", b" ", b")", b"(", b"a", b"7"]), max_size=60).map(b"".join),
       st.sampled_from([4, 22]))
def test_containerd_stat_parser_is_readprocstatfield_written_out(line, field):
    """Go's code, as written: strings.Split at every ") ", the second piece split at every " "."""
    parts = line.split(b") ")
    pieces = parts[1].split(b" ") if len(parts) >= 2 else []
    if len(parts) < 2 or field - 3 >= len(pieces):
        with pytest.raises(_Panic):
            go_read_proc_stat_field(line, field)
    else:
        assert go_read_proc_stat_field(line, field) == pieces[field - 3]


def test_shim_rule():
    cid = "c" * 64
    real = ["docker-containerd-shim", cid, "/bundle", "docker-runc"]
    script = ["/usr/bin/python3", "/opt/recover/generations/containerd_0_2/shim/containerd-shim", cid, "/b", "runc"]
    assert is_shim_of(real, f"/run/x/{cid}/init", "docker-containerd-shim", cid, "init")
    assert is_shim_of(real, None, "/usr/bin/docker-containerd-shim", cid, "init")  # cwd unreadable
    assert is_shim_of(real, f"/copy/{cid}/init", "", cid, "init")  # old root: shim name empty
    assert not is_shim_of(real, f"/run/x/{cid}/exec1", "docker-containerd-shim", cid, "init")
    assert not is_shim_of(real, None, "containerd-shim", cid, "init")  # another shim binary
    assert not is_shim_of(["sleep", cid], None, "", cid, "init")
    assert is_shim_of(script, f"/r/{cid}/init", "containerd-shim", cid, "init")
    assert not is_shim_of(["sh", "-c", "containerd-shim", cid], None, "containerd-shim", cid, "init")


def test_host_view_on_the_reference_capture():
    from reference import REFERENCE

    host = HostView(str(REFERENCE / "proc"))
    assert not host.live and host.btime == 1795873557
    assert host.boot_id == "81026294-d097-426e-882f-4fe85bac1382"
    assert host.stat(30857).starttime == 194198 and host.stat(31003) is None
    assert host.tgid(30857) == 30857
    assert host.children(30840) == [30857]
    assert host.frozen(30965) is None  # not knowable from a capture


def test_live_host_view():
    host = HostView("/proc")
    assert host.live and host.btime and host.boot_id
    me = host.stat(os.getpid())
    assert me.pid == os.getpid() and me.ppid == os.getppid()
    assert os.getpid() in host.listed()
