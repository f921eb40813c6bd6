"""Real containerd 1.6 captures, judged as their truth says: verdicts against the processes as they
were before the restart, predictions against what the restarted daemon really did."""

from __future__ import annotations

import orjson
import pytest
from reference_v2 import extract, scan_args, state_dir, truth
from typer.testing import CliRunner

from recover.cli import app

runner = CliRunner()


def scan(top, *args) -> dict:
    result = runner.invoke(app, ["scan", *scan_args(top), "-f", "json", *args])
    assert result.exit_code == 0, result.output
    return orjson.loads(result.stdout)


def by_key(doc) -> dict[str, dict]:
    return {f"{c['namespace']}/{c['id']}": c for c in doc["containers"]}


def codes(c) -> set[str]:
    return {f["code"] for f in c["findings"]} | {f["code"] for p in c["processes"] for f in p["findings"]}


@pytest.fixture(scope="module")
def multi(tmp_path_factory):
    return extract("multi", tmp_path_factory.mktemp("multi"))


# What containerd 1.6.20 did to each task of ctrd16-multi (its README and truth.json), in recover's words.
MULTI = {
    "aa/aa-shim-killed": "kill-live-processes",
    "default/a-none": "reconnect",
    "default/b-shim-killed": "kill-live-processes",
    "default/c-shim-init-killed": "clean-up",
    "default/d-init-exited": "reconnect",
    "default/e-exec-exited": "reconnect",
    "default/f-address-removed": "kill-live-processes",
    "default/g-socket-removed": "kill-live-processes",
    "default/h-bundle-emptied": "delete-silently-and-leak",
    "default/.i-bundle-hidden": "skip-and-leak",
    "default/j-shim-stopped": "block-then-kill",
    "default/k-pid-reused": "clean-up",
    "default/m-init-pid-garbage": "reconnect",
    "default/n-exec-pidfile-removed": "reconnect",
    "zz/zz-none": "reconnect",
}


def test_multi_fault_capture_is_judged_as_the_daemon_acted(multi):
    doc = scan(multi)
    assert doc["layout"] == "containerd-runtime-v2"
    got = by_key(doc)
    assert {k: c["containerd_would"] for k, c in got.items()} == MULTI
    t = truth(multi)
    for key, would in MULTI.items():
        task = t[key.replace("/.", "/")]
        killed = {k["name"] for k in task["killed"]}
        if would in ("kill-live-processes", "block-then-kill"):
            assert killed == {"init", "e1"}, key
        else:
            assert not killed, key
        if would == "reconnect":
            assert task["task_listed_after"] is not None, key


def test_multi_verdicts_follow_the_processes_before_the_restart(multi):
    got = by_key(scan(multi))
    t = truth(multi)

    def verdicts(key):
        return {p["id"]: p["verdict"] for p in got[key]["processes"]}

    for key in ("default/a-none", "zz/zz-none", "default/f-address-removed", "default/g-socket-removed",
                "default/j-shim-stopped"):
        assert set(verdicts(key).values()) == {"running"}, key  # healthy, whatever containerd will do
    for key in ("aa/aa-shim-killed", "default/b-shim-killed"):
        assert verdicts(key) == {"init": "orphaned", "e1": "orphaned"}, key
    # exited while containerd was down, under a live shim: the shim holds the statuses
    d = got["default/d-init-exited"]["processes"]
    assert [(p["verdict"], p["exit_status_source"]) for p in d] == [("exited", "shim-memory")] * 2
    assert verdicts("default/e-exec-exited") == {"init": "running", "e1": "exited"}
    # SIGKILLed init held back by an unreaped zombie (PF_EXITING), and that zombie: both exited, 137
    c = got["default/c-shim-init-killed"]["processes"]
    assert [(p["verdict"], p["exit_status"]) for p in c] == [("zombie", 137), ("zombie", 137)]
    assert t["default/c-shim-init-killed"]["before_restart"]["processes"]["init"]["exiting"] is True
    # init.pid rewritten to name an unrelated live process: runc's start ticks say it is not the init
    k = {p["id"]: p for p in got["default/k-pid-reused"]["processes"]}
    assert k["init"]["verdict"] == "pid-reused" and k["init"]["pid"] == t["default/k-pid-reused"]["pids"]["victim"]
    # garbage in init.pid: the init is found through runc's state, and runs
    m = {p["id"]: p for p in got["default/m-init-pid-garbage"]["processes"]}
    assert m["init"]["verdict"] == "running" and m["init"]["pid"] == t["default/m-init-pid-garbage"]["pids"]["init"]
    assert "F101" in codes(got["default/m-init-pid-garbage"])


def test_multi_findings_say_what_to_do_first(multi):
    got = by_key(scan(multi))
    f = got["default/f-address-removed"]
    (r101,) = [x for x in f["findings"] if x["code"] == "R101"]
    # the address to restore: sha256 of <grpc address>/<ns>/<id>, the name of the shim's live socket
    address = "unix:///run/containerd/s/" + __import__("hashlib").sha256(
        b"/run/ctrd16-multi/containerd.sock/default/f-address-removed").hexdigest()
    assert address in r101["message"]
    assert f["shim"]["address_problem"] == "address is missing"
    assert "R105" in codes(got["default/j-shim-stopped"]) and "kill -CONT" in str(got["default/j-shim-stopped"])
    assert "R103" in codes(got["default/h-bundle-emptied"]) and "R103" in codes(got["default/.i-bundle-hidden"])
    assert "R102" in codes(got["default/c-shim-init-killed"])
    assert "H011" in codes(got["default/k-pid-reused"])
    assert {"L011"} <= codes(got["default/d-init-exited"])
    assert not {c for c in codes(got["default/a-none"])}  # a healthy task: nothing to say


def test_multi_bundle_removed_while_its_shim_lives_is_an_orphan_shim(multi):
    doc = scan(multi)
    t = truth(multi)
    assert [(o["container"], o["pid"]) for o in doc["orphan_shims"]] == [
        ("default/l-bundle-removed", t["default/l-bundle-removed"]["pids"]["shim"])]
    assert "H003" in {f["code"] for f in doc["findings"]}


@pytest.mark.parametrize("name, key, would, verdicts", [
    ("a", "default/ta", "reconnect", {"init": "running", "e1": "running"}),
    ("b", "default/tb", "kill-live-processes", {"init": "orphaned", "e1": "orphaned"}),
    ("d", "default/td", "reconnect", {"init": "exited", "e1": "exited"}),
])
def test_earlier_captures(tmp_path, name, key, would, verdicts):
    top = extract(name, tmp_path)
    got = by_key(scan(top))
    assert got[key]["containerd_would"] == would
    assert {p["id"]: p["verdict"] for p in got[key]["processes"]} == verdicts


def test_cri_pod_whose_container_exited(tmp_path):
    top = extract("cri-d", tmp_path)
    t = truth(top)
    got = by_key(scan(top))
    sandbox, container = got[f"k8s.io/{t['ids']['sandbox']}"], got[f"k8s.io/{t['ids']['container']}"]
    assert sandbox["container_type"] == "sandbox" and sandbox["containerd_would"] == "reconnect"
    assert container["sandbox"] == t["ids"]["sandbox"]  # its shim is the pod's
    assert container["shim"]["pid"] == t["pids"]["shim"] == sandbox["shim"]["pid"]
    (init,) = container["processes"]
    assert (init["verdict"], init["exit_status_source"]) == ("exited", "shim-memory")
    # CRI's checkpoint says running; the re-adopted task is stopped: CRI records the true exit
    assert container["cri"]["state"] == "running" and container["cri"]["cri_would"] == "record-exit"
    assert t["status_after"]["ExitCode"] == t["true_exit"]


@pytest.mark.parametrize("before, after, problem", [
    ("", "\n", "a newline after the socket path"),
    (" ", "", "whitespace around the socket path"),
])
def test_an_address_with_whitespace_is_unreachable(tmp_path, before, after, problem):
    """containerd 1.6-2.0 dial the `address` file's bytes as written: `echo`'s newline names another,
    absent socket, so the healthy task is cleaned up and SIGKILLed (seen on 1.6.20,
    tests/test_restart_versions.py)."""
    top = extract("multi", tmp_path)
    address = state_dir(top) / "io.containerd.runtime.v2.task" / "default" / "a-none" / "address"
    written = address.read_text()
    address.write_text(before + written + after)
    a = by_key(scan(top))["default/a-none"]
    assert a["containerd_would"] == "kill-live-processes"
    assert a["shim"]["address_problem"] == f"address holds {problem}, which containerd dials as written"
    (r101,) = [f for f in a["findings"] if f["code"] == "R101"]
    assert f"write {written!r} (no newline)" in r101["message"]


def explain(top, target, *args):
    return runner.invoke(app, ["explain", target, "--root", *scan_args(top), *args])


def test_explain_a_task(multi):
    result = explain(multi, "default/f-address-removed", "-f", "json")
    assert result.exit_code == 0, result.output
    doc = orjson.loads(result.stdout)
    assert (doc["layout"], doc["namespace"], doc["container"]) == ("containerd-runtime-v2", "default",
                                                                   "f-address-removed")
    rows = {e["name"]: e for d in doc["files"] for e in d["entries"]}
    assert rows["address"]["type"] == "missing" and rows["log"]["parsed"].startswith("FIFO")
    assert "start tick" in rows["(runc state)"]["parsed"] and "never followed" in rows["work"]["parsed"]
    assert [p["id"] for p in doc["processes"]] == ["init", "e1"]
    init = doc["processes"][0]
    assert init["verdict"] == "running" and init["evidence"]["identity"] == "start-time"
    assert doc["containerd_would"] == "kill-live-processes" and "address is missing" in doc["containerd_why"]
    assert doc["task"]["shim"]["state"] == "alive"
    # a capture: no socket can be seen listening, so no address is planned; the kills are said
    assert [(a["process"], a["action"]) for a in doc["repair_would"]] == [("e1", "none"), ("init", "none")]
    assert all("--stop-orphans" in a["reason"] for a in doc["repair_would"])
    text = explain(multi, "default/f-address-removed").stdout
    assert "containerd 1.6.20 would: kill-live-processes" in text and "restore the address" in text


def test_explain_targets_a_task_by_prefix_and_a_process(multi):
    doc = orjson.loads(explain(multi, "d-init/e1", "-f", "json").stdout)
    assert (doc["container"], doc["process"]) == ("d-init-exited", "e1")
    (e1,) = doc["processes"]
    assert (e1["verdict"], e1["exit_status_source"]) == ("exited", "shim-memory")
    assert explain(multi, "default/d-init-exited/init").exit_code == 0
    ambiguous = explain(multi, "a")  # a-none and aa-shim-killed
    assert ambiguous.exit_code == 2 and "ambiguous" in ambiguous.stderr
    missing = explain(multi, "default/a-none/nope")
    assert missing.exit_code == 2 and "no process" in missing.stderr
