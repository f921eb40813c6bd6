"""The judge alone: pure, so any file facts with any host facts give one verdict and never raise."""

from __future__ import annotations

import json

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from recover.fsread import FileFact
from recover.generations.containerd_0_2 import files as layout
from recover.generations.containerd_0_2.builder import process_json, state_json
from recover.generations.containerd_0_2.predict import (
    CONTAINERD_WOULD,
    predict_container,
)
from recover.generations.containerd_0_2.reader import (
    ProcessFiles,
    container_record,
    process_record,
)
from recover.host import ProcessFacts, ProcStat
from recover.judge import judge_container
from recover.records import ContainerRecord, ProcessRecord
from recover.verdicts import VERDICTS, HostFacts

HOST = HostFacts(proc_read=True, live=False, btime=1_000_000, clock_ticks=100, root_on_tmpfs=False)


def record(pid=b"100", starttime=b"5000", exit_status=None, process=None, pid_mtime=1_000_100 * 10**9,
           pid_id="init") -> ProcessRecord:
    def f(name, data, mtime=1):
        return FileFact(f"c/{pid_id}/{name}", "missing" if data is None else "file", data=data,
                        size=None if data is None else len(data), mtime_ns=mtime)
    spec = layout.parse_json_doc(f("process.json", process if process is not None else
                                   json.dumps(process_json(["sleep", "1"])).encode()), layout.PROCESS_SCHEMA, "F021")
    return process_record(pid_id, f"c/{pid_id}", ProcessFiles(
        spec, layout.parse_pid(f("pid", pid, pid_mtime)), layout.parse_starttime(f("starttime", starttime)),
        layout.parse_exit_status(f("exitStatus", exit_status))), [])


def container(*procs: ProcessRecord) -> ContainerRecord:
    state = layout.parse_json_doc(FileFact("c/state.json", "file", data=json.dumps(state_json("/b")).encode()),
                                  layout.STATE_SCHEMA, "F020")
    return container_record("c", "c", state, list(procs), [])


def stat(pid=100, state="S", ppid=50, start=5000, exit_code=0, comm="sleep") -> ProcStat:
    raw = f"{pid} ({comm}) {state} {ppid} " + " ".join(["0"] * 17) + f" {start} " + " ".join(["0"] * 30)
    return ProcStat(pid, comm, state, ppid, start, exit_code, raw.encode())


def judge(rec, facts, host=HOST, bundle_exists=None):
    return judge_all(container(rec), {rec.id: facts}, host, bundle_exists)


def judge_all(record, facts, host=HOST, bundle_exists=None):
    """The judge with containerd 0.2.9's predictor, as the 0.2 layout plugs it in."""
    return judge_container(record, facts, host,
                           lambda record, decisions: predict_container(record, decisions, facts, host, bundle_exists))


def under_shim(s: ProcStat, **kw) -> ProcessFacts:
    return ProcessFacts(pid=s.pid, pid_source="pid-file", stat=s, tgid=s.pid, parent=stat(50, ppid=1),
                        parent_is_shim=True, shim_pid=50, shim_state="alive", containerd_stat=s, **kw)


def test_running_keeps_running():
    j = judge(record(), under_shim(stat()))
    p = j.processes[0]
    assert (p.verdict, p.identity, p.containerd_would, j.containerd_would) == ("running", "start-time", "keep-running", "keep")


def test_orphan_of_pid_1_is_killed_by_containerd_and_hangs_it_when_frozen():
    s = stat(ppid=1)
    facts = ProcessFacts(pid=100, pid_source="pid-file", stat=s, tgid=100, parent=stat(1, ppid=0), containerd_stat=s)
    assert judge(record(), facts).processes[0].containerd_would == "kill-record-137"
    j = judge(record(), msgspec.structs.replace(facts, frozen=True))
    assert (j.processes[0].containerd_would, j.containerd_would) == ("hang-daemon", "hang-daemon")


def test_bundle_missing_drops_the_container():
    j = judge(record(), under_shim(stat()), bundle_exists=False)
    assert j.containerd_would == "drop-container"
    assert "R003" in {f.code for f in j.findings}


def test_pid_reused_with_no_starttime_and_ppid_1_means_containerd_kills_a_stranger():
    s = stat(ppid=1, start=900_000)  # started long after the pid file was written
    facts = ProcessFacts(pid=100, pid_source="pid-file", stat=s, tgid=100, containerd_stat=s)
    p = judge(record(starttime=None), facts).processes[0]
    assert (p.verdict, p.identity, p.containerd_would) == ("pid-reused", "pid-file-mtime", "kill-record-137")
    assert "R009" in {f.code for f in p.findings}


def test_identity_assumed_without_starttime_or_btime():
    host = HostFacts(proc_read=True, live=False, btime=None, clock_ticks=100)
    p = judge(record(starttime=None), under_shim(stat()), host).processes[0]
    assert (p.verdict, p.identity) == ("running", "assumed")
    assert "L008" in {f.code for f in p.findings}


def test_tmpfs_root_is_never_from_a_previous_boot():
    old = record(pid_mtime=10 * 10**9)  # long before btime
    on_disk = judge(old, under_shim(stat())).processes[0]
    assert on_disk.verdict == "pid-reused"
    tmpfs = HostFacts(proc_read=True, live=False, btime=1_000_000, clock_ticks=100, root_on_tmpfs=True)
    assert judge(old, under_shim(stat()), tmpfs).processes[0].verdict == "running"


def test_drop_by_undecodable_process_stops_at_that_dir():
    bad = record(process=b"{", pid_id="a-exec")
    good = record()
    j = judge_all(container(bad, good), {"a-exec": ProcessFacts(), "init": under_shim(stat())})
    assert j.containerd_would == "drop-container"
    assert {p.containerd_would for p in j.processes} == {"drop-container"}


# --- any facts: exactly one verdict, never an exception -------------------------------------

file_bytes = st.none() | st.sampled_from([b"", b"100", b"100\n", b"+100", b"-1", b"0", b"abc", b"%!u(uint32=255)",
                                          b"5000", b"5000\n", b"\0\0", b"4294967296"]) | st.binary(max_size=12)
stats = st.none() | st.builds(stat, pid=st.sampled_from([100, 101]), state=st.sampled_from("RSDTtZXI"),
                              ppid=st.sampled_from([0, 1, 50, 77]), start=st.sampled_from([5000, 5001, 10**8]),
                              exit_code=st.none() | st.integers(0, 0xFFFF),
                              comm=st.sampled_from(["sleep", "a) b", "x) y z", "(", ")"]))
facts_st = st.builds(
    ProcessFacts, pid=st.none() | st.sampled_from([100, 101]),
    pid_source=st.none() | st.sampled_from(["pid-file", "shim-child"]), stat=stats,
    tgid=st.none() | st.sampled_from([100, 101, 7]), parent=stats, parent_is_shim=st.booleans(),
    shim_pid=st.none() | st.just(50), shim_state=st.sampled_from(["alive", "stopped", "zombie", "gone"]),
    shim_children=st.none() | st.integers(0, 3), containerd_stat=stats, frozen=st.none() | st.booleans())
hosts = st.builds(HostFacts, proc_read=st.booleans(), live=st.booleans(), btime=st.none() | st.just(1_000_000),
                  clock_ticks=st.just(100), hidepid=st.booleans(), root_on_tmpfs=st.none() | st.booleans())


@settings(max_examples=400, deadline=None)
@given(pid=file_bytes, starttime=file_bytes, exit_status=file_bytes, facts=facts_st, host=hosts,
       bundle=st.none() | st.booleans())
def test_any_facts_give_exactly_one_verdict(pid, starttime, exit_status, facts, host, bundle):
    j = judge(record(pid, starttime, exit_status), facts, host, bundle)
    (p,) = j.processes
    assert p.verdict in VERDICTS
    assert p.containerd_would is None or p.containerd_would in CONTAINERD_WOULD
    assert j.containerd_would in (None, "keep", "drop-container", "crash-daemon", "hang-daemon")
    for f in p.findings:
        assert f.severity in ("error", "warning", "info") and f.message
