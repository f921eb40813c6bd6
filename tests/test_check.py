"""check: the gate's logic and every output format, each validated by parsing it."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from reference import CACHE, CRON, FIXTURES
from typer.testing import CliRunner

from recover.check import Gate, Located, parse_codes
from recover.cli import app
from recover.render import _gh_data, _gh_property
from recover.rules import RULES

runner = CliRunner()


def check(reference, *args, root=None):
    return runner.invoke(app, ["check", str(root or reference / "root"), "--proc-root", str(reference / "proc"), *args])


def test_reference_fails_the_gate_and_says_why(reference):
    result = check(reference)
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    # containers named by the 12 characters the scan table shows (the full id is in json)
    assert f"L001 error {CACHE[:12]}/init: pid 31003 is gone and no exit status was recorded" in lines
    assert any(line.startswith(f"R006 error {CRON[:12]}/init: ") for line in lines)
    assert lines[-1].startswith("FAILED: 3 finding(s) at or above error")


def test_a_clean_root_passes(reference, tmp_path):
    root = tmp_path / "clean"
    root.mkdir()
    result = runner.invoke(app, ["check", str(root)])  # the live /proc: no shim of this root
    assert result.exit_code == 0 and result.stdout.startswith("passed")


@pytest.mark.parametrize("args, code", [
    (["--ignore", "L,R006"], 0),  # what remains is the R005 warning
    (["--ignore", "L,R006", "--fail-on", "warning"], 1),
    (["--select", "R005"], 0),
    (["--select", "R005", "--fail-on", "warning"], 1),
    (["--select", "r00"], 1),  # prefixes, case-insensitive
    (["--select", "H"], 0),
    (["--fail-on", "bogus"], 2),
])
def test_select_ignore_fail_on(reference, args, code):
    assert check(reference, *args).exit_code == code


def test_baseline_round_trip(reference, tmp_path):
    baseline = tmp_path / "baseline.json"
    assert check(reference, "--write-baseline", str(baseline)).exit_code == 1
    doc = orjson.loads(baseline.read_bytes())
    assert doc["schema"] == "recover.baseline/1" and len(doc["findings"]) == 5
    again = check(reference, "--baseline", str(baseline), "-f", "json")
    assert again.exit_code == 0
    out = orjson.loads(again.stdout)
    assert all(f["baselined"] and not f["fails"] for f in out["findings"])
    assert out["summary"]["baselined"] == 5 and out["summary"]["passed"] is True
    # a new problem is not in the baseline: the gate fails again
    (reference / "root" / CRON / "init" / "pid").write_bytes(b"30965\n")
    assert check(reference, "--baseline", str(baseline)).exit_code == 1
    (tmp_path / "bad.json").write_text("{}")
    assert check(reference, "--baseline", str(tmp_path / "bad.json")).exit_code == 2


def test_fingerprints_are_stable_and_ignore_the_message():
    a = Located("L001", "error", "c", "init", "c/init", "pid 5 is gone")
    b = Located("L001", "error", "c", "init", "c/init", "pid 7 is gone")
    assert a.fingerprint == b.fingerprint
    assert a.fingerprint != Located("L001", "error", "c", "exec", "c/exec", "x").fingerprint
    assert parse_codes(" l0 , R006,") == ("L0", "R006")
    assert Gate(select=("L",)).counts(a) and not Gate(ignore=("L00",)).counts(a)


def test_json_and_jsonl(reference):
    doc = orjson.loads(check(reference, "-f", "json").stdout)
    assert doc["schema"] == "recover.check/1"
    f = next(x for x in doc["findings"] if x["code"] == "L001")
    assert (f["container"], f["process"], f["path"], f["severity"]) == (CACHE, "init", f"{CACHE}/init", "error")
    lines = [orjson.loads(x) for x in check(reference, "-f", "jsonl").stdout.splitlines()]
    assert lines[:-1] == doc["findings"] and lines[-1] == {"summary": doc["summary"]}


def test_junit_parses_with_a_case_per_container_and_process(reference):
    result = check(reference, "-f", "junit")
    suite = ET.fromstring(result.stdout.encode())
    # 4 containers and 5 processes; failures counts failing test cases (2), not findings (3)
    assert suite.tag == "testsuite" and suite.get("tests") == "9" and suite.get("failures") == "2"
    cases = suite.findall("testcase")
    assert len(cases) == 9
    failing = {(c.get("classname"), c.get("name")): [f.get("type") for f in c.findall("failure")] for c in cases}
    assert failing[(CACHE, "init")] == ["L001"]
    assert sorted(failing[(CRON, "init")]) == ["L003", "R006"]
    assert sum(bool(v) for v in failing.values()) == 2


def test_junit_keeps_container_findings(tmp_path):
    root = tmp_path / "bad-root"
    shutil.copytree(FIXTURES / "bad-root", root, symlinks=True)
    proc = str(FIXTURES / "reference" / "proc")
    doc = orjson.loads(runner.invoke(app, ["check", str(root), "--proc-root", proc, "--select", "R00",
                                           "-f", "json"]).stdout)
    container_level = {f["container"] for f in doc["findings"] if f["code"] in ("R001", "R002", "R003")}
    assert len(container_level) >= 10
    suite = ET.fromstring(runner.invoke(app, ["check", str(root), "--proc-root", proc, "-f", "junit",
                                              "--select", "R00"]).stdout.encode())
    cases = {(c.get("classname"), c.get("name")): c for c in suite.findall("testcase")}
    for cid in container_level:
        assert {f.get("type") for f in cases[(cid, cid)].findall("failure")} & {"R001", "R002", "R003"}, cid
    assert int(suite.get("failures")) == sum(1 for c in cases.values() if c.findall("failure"))


@pytest.mark.parametrize("flag", ["--select", "--ignore"])
def test_an_unknown_code_is_a_usage_error(reference, flag):
    result = check(reference, flag, "L001,ZZZ")
    assert result.exit_code == 2 and "ZZZ" in result.stderr and result.stdout == ""
    assert check(reference, flag, "l00").exit_code in (0, 1)  # a prefix of real codes is fine


def test_junit_with_hostile_names_is_still_xml(reference):
    evil = "evil\x1b[0m\x07"
    shutil.copytree(reference / "root" / CACHE, reference / "root" / evil,
                    ignore=shutil.ignore_patterns("exit", "control"))
    suite = ET.fromstring(check(reference, "-f", "junit").stdout.encode())
    assert any("evil" in (c.get("classname") or "") for c in suite.findall("testcase"))


def test_github_annotations_and_escaping(reference):
    lines = check(reference, "-f", "github").stdout.splitlines()
    assert f"::error file={CACHE}/init,title=L001::pid 31003 is gone and no exit status was recorded" in lines
    assert any(line.startswith("::warning ") for line in lines)
    assert _gh_data("a%b\r\nc") == "a%25b%0D%0Ac"
    assert _gh_property("a:b,c%\n") == "a%3Ab%2Cc%25%0A"


def test_sarif(reference):
    doc = orjson.loads(check(reference, "-f", "sarif").stdout)
    assert doc["version"] == "2.1.0"
    run = doc["runs"][0]
    driver = run["tool"]["driver"]
    assert driver["name"] == "recover" and {r["id"] for r in driver["rules"]} == set(RULES)
    results = run["results"]
    assert {r["ruleId"] for r in results} == {"L001", "L003", "R005", "R006", "H017"}
    for r in results:
        assert r["level"] in ("error", "warning", "note") and r["message"]["text"]
        assert driver["rules"][r["ruleIndex"]]["id"] == r["ruleId"]
        loc = r["locations"][0]["physicalLocation"]["artifactLocation"]
        assert not loc["uri"].startswith("/") and loc["uriBaseId"] == "ROOT"
        assert r["partialFingerprints"]["recoverFingerprint/v1"]
    again = orjson.loads(check(reference, "-f", "sarif").stdout)["runs"][0]["results"]
    assert [r["partialFingerprints"] for r in again] == [r["partialFingerprints"] for r in results]


def _metrics(text):
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_prometheus_textfile_from_check_and_scan(reference):
    for args in (["check", "-f", "prometheus"], ["scan", "-f", "prometheus"]):
        result = runner.invoke(app, [args[0], str(reference / "root"), "--proc-root", str(reference / "proc"), *args[1:]])
        text = result.stdout
        assert text.endswith("\n")
        m = _metrics(text)
        root = str(reference / "root")
        assert m[("recover_processes", (("root", root), ("verdict", "running")))] == 2
        assert m[("recover_processes", (("root", root), ("verdict", "zombie")))] == 0
        assert m[("recover_findings", (("code", "R006"), ("root", root), ("severity", "error")))] == 1
        assert m[("recover_scan_timestamp_seconds", (("root", root),))] > 1e9
        # textfile collector rules: HELP and TYPE once per metric, before its samples
        for name in ("recover_processes", "recover_findings", "recover_scan_timestamp_seconds"):
            assert text.count(f"# TYPE {name} gauge") == 1


def test_rules_command():
    doc = orjson.loads(runner.invoke(app, ["rules", "-f", "json"]).stdout)
    assert [r["code"] for r in doc] == list(RULES)
    assert all(r["severity"] in ("error", "warning", "info") and r["title"] and r["action"] for r in doc)
    table = runner.invoke(app, ["rules"]).stdout
    assert "R007" in table and "WHAT TO DO" in table
    assert runner.invoke(app, ["rules", "-f", "xml"]).exit_code == 2


def test_codes_are_family_letter_and_three_digits():
    import re

    assert all(re.fullmatch(r"[FLRH]\d{3}", c) for c in RULES)


def test_bad_root_check_is_deterministic(tmp_path):
    root = tmp_path / "bad-root"
    shutil.copytree(FIXTURES / "bad-root", root, symlinks=True)
    a = runner.invoke(app, ["check", str(root), "--offline", "-f", "json"]).stdout
    b = runner.invoke(app, ["check", str(root), "--offline", "-f", "json"]).stdout
    assert a == b


def test_check_on_a_built_root_with_live_processes(tmp_path):
    from recover.builders import become_subreaper
    from recover.generations.containerd_0_2.builder import RootBuilder

    become_subreaper()
    cid = "cd" * 32
    with RootBuilder(tmp_path / "root") as b:
        b.start_process(cid, "init")
        b.start_process(cid, "exec-1")
        ok = runner.invoke(app, ["check", str(b.root), "-f", "junit"])
        assert ok.exit_code == 0, ok.stdout
        suite = ET.fromstring(ok.stdout.encode())
        assert suite.get("tests") == "3" and suite.get("failures") == "0"  # the container and 2 processes
        b.live[0].kill_shim()  # an orphan now: the gate fails
        failed = runner.invoke(app, ["check", str(b.root), "-f", "github"])
        assert failed.exit_code == 1
        assert any(line.startswith("::error ") and "title=L003" in line for line in failed.stdout.splitlines())
