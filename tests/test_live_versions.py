"""What containerd 1.6, 1.7 and 2.x each do to the same task (recover/generations/runtime_v2/predict.py),
on trees with live processes under the stand-in shim (recover/generations/runtime_v2/builder.py), judged with
--containerd-version: the rules where the versions differ (SPEC-v2 §2a), and the advice that works
on the version judged.  The real daemons are tests/test_restart_versions.py's."""

from __future__ import annotations

import hashlib
import json

import orjson
import pytest
from typer.testing import CliRunner

from recover.builders import become_subreaper
from recover.cli import app
from recover.generations.runtime_v2.builder import TaskBuilder

runner = CliRunner()
NS = "default"
T = "versions-task"  # an id no other test's shims use
POD, C = "versions-pod", "versions-ctr"


@pytest.fixture(scope="module", autouse=True)
def subreaper():
    become_subreaper()


@pytest.fixture
def builder(tmp_path):
    with TaskBuilder(tmp_path) as b:
        yield b


def judged(b: TaskBuilder, version: str, tid: str = T) -> dict:
    result = runner.invoke(app, ["scan", *b.scan_args(), "-f", "json", "--containerd-version", version])
    assert result.exit_code == 0, result.output
    (c,) = [c for c in orjson.loads(result.stdout)["containers"] if c["id"] == tid]
    return c


def restored(b: TaskBuilder) -> str:
    """The address containerd gives the task's shim: its socket in the dir containerd hard-codes,
    named sha256 of <grpc address>/<ns>/<id> (the stand-in listens elsewhere: see builder_v2)."""
    return "unix:///run/containerd/s/" + hashlib.sha256(f"{b.grpc_address}/{NS}/{T}".encode()).hexdigest()


def said(c: dict) -> dict[str, str]:
    """code -> message of the task's own findings (one each)."""
    return {f["code"]: f["message"] for f in c["findings"]}


def test_an_exit_under_a_live_shim_is_kept_by_16_and_lost_by_17_and_2x(builder):
    t = builder.start_task(NS, T, ("sh", "-c", "exit 3"))
    assert t.wait() == 3
    kept = judged(builder, "1.6.20")
    assert kept["containerd_would"] == "reconnect" and "re-adopts the task stopped" in kept["containerd_would_why"]
    assert not {"R102", "R107"} & set(said(kept))
    for version in ("1.7.34", "2.3.4"):
        lost = judged(builder, version)
        assert lost["containerd_would"] == "clean-up", version
        r107 = said(lost)["R107"]
        assert f"containerd {version} cleans it up as a leaked shim" in r107
        assert f"its shim (pid {t.shim.pid}) is shut down" in r107 and "only its live shim" in r107
        assert "R102" not in said(lost)  # the exit is saveable now: R107, an error, not R102
    every = judged(builder, "all")
    assert every["containerd_would"] == "clean-up"  # the worst leads
    assert every["containerd_would_by_version"] == {"1.6": "reconnect", "1.7": "clean-up", "2.x": "clean-up"}
    assert said(every)["R107"].startswith("containerd 1.7 and 2.x: ")


def test_versions_that_say_a_finding_differently_say_it_in_one_finding(builder):
    """A stopped shim with a live exec: each version leaves the task otherwise (R105's end): judged
    for every version, one R105 (a finding's code and place are its identity), each version's part
    named inside it."""
    t = builder.start_task(NS, T)
    t.exec("e1")
    t.shim.stop()
    every = judged(builder, "all")
    (r105,) = [f["message"] for f in every["findings"] if f["code"] == "R105"]
    for b in ("1.6", "1.7", "2.x"):
        assert f"containerd {b}: its shim (pid {t.shim.pid}) is stopped" in r105, r105
    assert r105.count("kill -CONT") == 3


def test_a_pod_container_whose_init_exited_is_recorded_255_by_17_and_2x(builder):
    pod = builder.start_task("k8s.io", POD, sandbox=True)
    ctr = builder.start_task("k8s.io", C, ("sh", "-c", "exit 42"), pod=pod)
    assert ctr.wait() == 42
    builder.cri_checkpoint(C, "running", pid=ctr.init)
    kept = judged(builder, "1.6.20", C)
    assert (kept["containerd_would"], kept["cri"]["cri_would"]) == ("reconnect", "record-exit")
    for version in ("1.7.34", "2.3.4"):
        lost = judged(builder, version, C)
        assert (lost["containerd_would"], lost["cri"]["cri_would"]) == ("clean-up", "record-255-unknown")
        assert "the pod's shim lives on (it serves the sandbox)" in said(lost)["R107"]
        assert "CRI then records 255" in said(lost)["R107"] and "R106" in said(lost)
    # the sandbox itself runs: every version reconnects it
    assert {judged(builder, v, POD)["containerd_would"] for v in ("1.6.20", "1.7.34", "2.3.4")} == {"reconnect"}


def address_as_json(t, version: int | None) -> None:
    doc = {"address": (t.bundle / "address").read_text(), "protocol": "ttrpc"}
    if version is not None:
        doc["version"] = version
    (t.bundle / "address").write_text(json.dumps(doc))


@pytest.mark.parametrize("json_version, on_17", [(2, "reconnect"), (3, "kill-live-processes"),
                                                  (None, "kill-live-processes")])
def test_json_in_address_is_read_by_17_up_to_version_2_only(builder, json_version, on_17):
    t = builder.start_task(NS, T)
    address = (t.bundle / "address").read_text()
    address_as_json(t, json_version)
    c = judged(builder, "1.7.34")
    assert c["containerd_would"] == on_17
    if on_17 == "reconnect":
        assert c["shim"]["address"] == address
    else:
        r101 = said(c)["R101"]
        assert ("JSON without a version" if json_version is None else "containerd 1.7 takes version 2 at most") in r101
        assert f"write '{restored(builder)}' (no newline) to {t.bundle / 'address'}" in r101  # plain, as 1.7 reads
    # 1.6 and 2.x (without a bootstrap.json) dial JSON as written: the healthy task is killed
    for version in ("1.6.20", "2.3.4"):
        c = judged(builder, version)
        assert c["containerd_would"] == "kill-live-processes"
        assert "address holds JSON, which containerd" in said(c)["R101"]


def made_by_2x(t, *, bootstrap: bool) -> str:
    """The bundle as a 2.x daemon and shim leave it: the `s` link and bootstrap.json version 3 (or,
    bootstrap=False, that file replaced by a plain `address`, the fault 2.x kills a task for)."""
    address = (t.bundle / "address").read_text()
    (t.bundle / "s").symlink_to("/run/containerd/s")
    if bootstrap:
        (t.bundle / "bootstrap.json").write_text(
            json.dumps({"version": 3, "address": address, "protocol": "ttrpc"}, separators=(",", ":")))
        (t.bundle / "address").unlink()
    return address


def test_a_2x_bundle_is_reached_by_2x_only(builder):
    t = builder.start_task(NS, T)
    made_by_2x(t, bootstrap=True)
    c = judged(builder, "2.3.4")
    assert (c["containerd_would"], c["shim"]["address_file"], c["shim"]["api"]) == ("reconnect", "bootstrap.json", 3)
    for version, behaviour in (("1.6.20", "1.6"), ("1.7.34", "1.7")):
        c = judged(builder, version)
        assert c["containerd_would"] == "kill-live-processes"
        r101 = said(c)["R101"]
        assert f"address is missing (containerd {behaviour} reads no bootstrap.json)" in r101
        assert "which only containerd 2.x can reach" in r101  # no file would make it reachable


def test_a_plain_address_beside_a_2x_shim_gets_it_killed_by_2x_and_the_advice_is_bootstrap_json(builder):
    t = builder.start_task(NS, T)
    made_by_2x(t, bootstrap=False)
    c = judged(builder, "2.3.4")
    assert (c["containerd_would"], c["shim"]["api"]) == ("kill-live-processes", 3)
    r101 = said(c)["R101"]
    assert "speaks task API v2 to it (it migrates `address` to bootstrap.json version 2)" in r101
    assert "its shim serves v3 only" in r101
    want = json.dumps({"version": 3, "address": restored(builder), "protocol": "ttrpc"}, separators=(",", ":"))
    assert f"write '{want}' (no newline) to {t.bundle / 'bootstrap.json'}" in r101


def test_a_1x_shims_plain_address_is_migrated_by_2x(builder):
    """An upgrade: a task a 1.x shim serves keeps working under 2.x (bootstrap.json version 2)."""
    builder.start_task(NS, T)
    c = judged(builder, "2.3.4")
    assert (c["containerd_would"], c["shim"]["api"]) == ("reconnect", 2)
    assert "writes bootstrap.json version 2 from `address` first" in c["containerd_would_why"]


def test_a_stopped_shim_without_a_live_exec_is_cleaned_up_in_5_s(builder):
    t = builder.start_task(NS, T)
    t.shim.stop()
    for version in ("1.6.20", "1.7.34", "2.3.4"):
        r105 = said(judged(builder, version))["R105"]
        assert "blocks about 5 s" in r105 and "the task is removed (bundle, work dir, runc's state)" in r105
    t.shim.resume()
    t.exec("e1")
    t.shim.stop()
    aftermath = {"1.6.20": "takes the task back stopped (exit 137)", "1.7.34": "cleans the task up as a leaked shim",
                 "2.3.4": "its bundle is removed (runc's state is left)"}
    for version, words in aftermath.items():
        r105 = said(judged(builder, version))["R105"]
        assert "blocks about 10 s" in r105 and words in r105, version
