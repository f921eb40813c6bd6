"""The deploy files: the DaemonSet against the Kubernetes API's schema (kubernetes-validate, strict:
a field the API does not know fails), the Prometheus rules with promtool (check, unit tests), and
a textfile of the metrics `recover watch` writes, linted by `promtool check metrics`."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import kubernetes_validate
import pytest
import typer
import yaml
from promtool import check_metrics, promtool_missing, run_promtool

from recover.cli import app

CHECKOUT = Path(__file__).resolve().parent.parent
DAEMONSET = CHECKOUT / "deploy" / "kubernetes" / "recover-daemonset.yaml"
RULES = CHECKOUT / "deploy" / "prometheus" / "recover-rules.yml"
RULE_TESTS = CHECKOUT / "deploy" / "prometheus" / "recover-rules.test.yml"
# appArmorProfile in securityContext is 1.30's; the newest the validator ships is checked too
KUBERNETES_VERSIONS = ["1.30.0", kubernetes_validate.utils.latest_version()]

# What `recover watch` writes (all gauges, every series labelled with the root)
METRICS = {
    "recover_scan_ok": ("root",),
    "recover_scan_duration_seconds": ("root",),
    "recover_scan_timestamp_seconds": ("root",),
    "recover_info": ("root", "layout", "daemon", "version", "version_from"),
    "recover_processes": ("root", "verdict"),
    "recover_restart_processes": ("root", "version", "would", "harm"),
    "recover_upgrade_processes": ("root", "version", "would", "harm"),
    "recover_dockerd_containers": ("root", "would"),
    "recover_findings": ("root", "code", "severity"),
    "recover_hazard": ("root", "container", "code"),
    "recover_hazards_truncated": ("root",),
}

# A textfile built by hand from the names above, as a node would hold it
SAMPLE_TEXTFILE = """\
# HELP recover_scan_ok 1 when the last scan judged the root, 0 when it could not.
# TYPE recover_scan_ok gauge
recover_scan_ok{root="/proc/1/root/run/containerd"} 1
# HELP recover_scan_duration_seconds How long the last scan took.
# TYPE recover_scan_duration_seconds gauge
recover_scan_duration_seconds{root="/proc/1/root/run/containerd"} 0.412
# HELP recover_scan_timestamp_seconds When the last scan ended (Unix time).
# TYPE recover_scan_timestamp_seconds gauge
recover_scan_timestamp_seconds{root="/proc/1/root/run/containerd"} 1796683607.125
# HELP recover_info The daemon version judged, and how it was told.
# TYPE recover_info gauge
recover_info{root="/proc/1/root/run/containerd",layout="containerd-runtime-v2",daemon="containerd",version="1.7.34",version_from="binary"} 1
# HELP recover_processes Processes in the state root, by verdict.
# TYPE recover_processes gauge
recover_processes{root="/proc/1/root/run/containerd",verdict="running"} 41
recover_processes{root="/proc/1/root/run/containerd",verdict="exited"} 2
recover_processes{root="/proc/1/root/run/containerd",verdict="orphaned"} 1
recover_processes{root="/proc/1/root/run/containerd",verdict="zombie"} 0
recover_processes{root="/proc/1/root/run/containerd",verdict="pid-reused"} 0
recover_processes{root="/proc/1/root/run/containerd",verdict="vanished"} 0
recover_processes{root="/proc/1/root/run/containerd",verdict="not-started"} 0
recover_processes{root="/proc/1/root/run/containerd",verdict="unknown"} 0
# HELP recover_restart_processes Processes by what the daemon that will start would do to them on restart.
# TYPE recover_restart_processes gauge
recover_restart_processes{root="/proc/1/root/run/containerd",version="1.7.34",would="keep-running",harm="none"} 41
recover_restart_processes{root="/proc/1/root/run/containerd",version="1.7.34",would="sigkill",harm="kill"} 1
recover_restart_processes{root="/proc/1/root/run/containerd",version="1.7.34",would="delete",harm="lose-exit"} 2
# HELP recover_upgrade_processes Processes by what the daemon named by --upgrade-to would do to them.
# TYPE recover_upgrade_processes gauge
recover_upgrade_processes{root="/proc/1/root/run/containerd",version="2.3.4",would="keep-running",harm="none"} 41
recover_upgrade_processes{root="/proc/1/root/run/containerd",version="2.3.4",would="delete",harm="lose-exit"} 3
# HELP recover_dockerd_containers Docker's containers by what dockerd's restart would do.
# TYPE recover_dockerd_containers gauge
recover_dockerd_containers{root="/proc/1/root/run/containerd",would="keep-running"} 3
recover_dockerd_containers{root="/proc/1/root/run/containerd",would="hang"} 0
# HELP recover_findings Findings of the last scan, by code and severity.
# TYPE recover_findings gauge
recover_findings{root="/proc/1/root/run/containerd",code="H003",severity="error"} 1
recover_findings{root="/proc/1/root/run/containerd",code="R101",severity="error"} 1
# HELP recover_hazard 1 per container and error-severity hazard code.
# TYPE recover_hazard gauge
recover_hazard{root="/proc/1/root/run/containerd",container="k8s.io/4f1c2e",code="R101"} 1
# HELP recover_hazards_truncated Hazard series left out over the cap.
# TYPE recover_hazards_truncated gauge
recover_hazards_truncated{root="/proc/1/root/run/containerd"} 0
"""


def manifests() -> list[dict]:
    return [d for d in yaml.safe_load_all(DAEMONSET.read_text()) if d]


def daemonset() -> dict:
    (ds,) = [d for d in manifests() if d["kind"] == "DaemonSet"]
    return ds


def needs_promtool():
    if (reason := promtool_missing()) is not None:
        pytest.skip(reason)


# --- the DaemonSet ---------------------------------------------------------------------------

@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_is_valid_for_the_kubernetes_api(version):
    docs = manifests()
    assert [d["kind"] for d in docs] == ["Namespace", "ServiceAccount", "DaemonSet"]
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def _pod(ds: dict) -> dict:
    return ds["spec"]["template"]["spec"]


def _rejected(doc: dict, version: str = "1.30.0") -> str:
    with pytest.raises(kubernetes_validate.ValidationError) as caught:
        kubernetes_validate.validate(doc, version, strict=True)
    return caught.value.message


def test_the_validator_rejects_real_mistakes():
    misspelled = daemonset()
    _pod(misspelled)["hostPid"] = _pod(misspelled).pop("hostPID")
    assert "'hostPid' was unexpected" in _rejected(misspelled)

    wrong_type = daemonset()
    _pod(wrong_type)["terminationGracePeriodSeconds"] = "10"
    assert "is not of type 'integer'" in _rejected(wrong_type)

    nested = daemonset()
    _pod(nested)["containers"][0]["securityContext"]["capabilities"]["add"] = "SYS_PTRACE"
    assert "is not of type 'array'" in _rejected(nested)

    unnamed = daemonset()
    del _pod(unnamed)["containers"][0]["name"]
    assert "'name' is a required property" in _rejected(unnamed)

    # and it knows the API's versions: appArmorProfile is not 1.29's
    assert "'appArmorProfile' was unexpected" in _rejected(daemonset(), "1.29.0")


def test_the_pod_sees_the_host_with_least_privilege():
    pod = _pod(daemonset())
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert pod["hostPID"] is True  # /proc is the host's, and /proc/1/root its mount namespace
    assert pod["automountServiceAccountToken"] is False  # talks to no API server
    assert pod["securityContext"]["runAsUser"] == 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert security["allowPrivilegeEscalation"] is False and security["privileged"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"], "add": ["SYS_PTRACE", "DAC_READ_SEARCH"]}
    assert pod["tolerations"] == [{"operator": "Exists"}]
    assert set(container["resources"]) == {"requests", "limits"}
    # the only host dir is the textfile collector's, where the textfile is written
    host_paths = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    assert host_paths == {"textfile": "/var/lib/node_exporter/textfile_collector"}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    args = container["args"]
    assert args[:2] == ["watch", "/proc/1/root/run/containerd"]
    textfile = Path(args[args.index("--textfile") + 1])
    assert mounts[str(textfile.parent)]["name"] == "textfile" and not mounts[str(textfile.parent)].get("readOnly")
    assert textfile.suffix == ".prom"  # node_exporter reads *.prom only


def test_recover_watch_takes_the_daemonsets_arguments():
    """Every option the DaemonSet passes is one of `recover watch`'s."""
    commands = typer.main.get_command(app).commands
    if "watch" not in commands:
        pytest.skip("this tree has no `recover watch` yet")
    known = {opt for p in commands["watch"].params for opt in p.opts}
    args = daemonset()["spec"]["template"]["spec"]["containers"][0]["args"]
    assert {a for a in args if a.startswith("--")} <= known


# --- the Prometheus rules --------------------------------------------------------------------

def _rules() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def test_the_rules_read_only_the_metrics_recover_writes():
    used = {m for r in _rules() for m in re.findall(r"\brecover_\w+", r["expr"])}
    assert used and used <= set(METRICS), used - set(METRICS)
    for rule in _rules():
        if "alert" in rule:
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}
            assert {"summary", "description"} <= set(rule["annotations"])
            assert "$labels.instance" in rule["annotations"]["summary"]


def test_every_alert_has_a_case_where_it_fires_and_one_where_it_does_not():
    cases = [c for t in yaml.safe_load(RULE_TESTS.read_text())["tests"] for c in t.get("alert_rule_test", [])]
    for alert in (r["alert"] for r in _rules() if "alert" in r):
        expected = [c["exp_alerts"] for c in cases if c["alertname"] == alert]
        assert any(expected), f"{alert}: no case where it fires"
        assert any(not e for e in expected), f"{alert}: no case where it stays quiet"


def test_promtool_checks_the_rules():
    needs_promtool()
    done = run_promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_unit_tests_of_the_rules_pass():
    needs_promtool()
    done = run_promtool("test", "rules", str(RULE_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_fails_broken_rules(tmp_path):
    """The two checks above can fail: a rule that does not parse, and a rule whose alert no
    longer fires where its unit test says it does."""
    needs_promtool()
    text = RULES.read_text()
    unparsable = tmp_path / "unparsable.yml"
    unparsable.write_text(text.replace('{harm="kill"}) > 0', '{harm="kill"}) >', 1))
    done = run_promtool("check", "rules", str(unparsable))
    assert done.returncode != 0 and "parse error" in done.stdout + done.stderr

    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    (tmp_path / RULES.name).write_text(text.replace('{harm="kill"}) > 0', '{harm="kill"}) > 5', 1))
    done = run_promtool("test", "rules", str(tmp_path / RULE_TESTS.name))
    assert done.returncode != 0 and "RecoverRestartWouldKill" in done.stdout + done.stderr


# --- the textfile ----------------------------------------------------------------------------

def test_the_sample_textfile_names_every_metric_with_its_labels():
    seen = {}
    for line in SAMPLE_TEXTFILE.splitlines():
        if not line.startswith("#"):
            name, labels = re.fullmatch(r"(\w+)\{(.*)\} \S+", line).groups()
            seen.setdefault(name, set()).add(tuple(re.findall(r'(\w+)="', labels)))
    assert seen == {name: {labels} for name, labels in METRICS.items()}


def test_promtool_accepts_the_sample_textfile():
    needs_promtool()
    assert check_metrics(SAMPLE_TEXTFILE) == []


def test_promtool_check_metrics_finds_problems():
    needs_promtool()
    assert check_metrics("recover_scan_ok 1\n") == ["recover_scan_ok no help text"]
    counter = "# HELP recover_scans Scans.\n# TYPE recover_scans counter\nrecover_scans 3\n"
    assert check_metrics(counter) == ['recover_scans counter metrics should have "_total" suffix']
    assert any("parsing error" in p for p in check_metrics('recover_scan_ok{root="/run 1\n'))
