"""The command line: exit codes, root selection, --container, stdout only for data."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest
from typer.testing import CliRunner

from recover import scan as scan_module
from recover.cli import app
from reference import CACHE, CRON, WEB, WORKER

runner = CliRunner()


def run(*args):
    return runner.invoke(app, list(args))


def test_help_documents_exit_codes():
    for args in (["--help"], ["scan", "--help"]):
        out = run(*args).stdout
        assert "Exit codes" in out and "internal error" in out


def test_no_args_shows_help():
    result = run()
    assert "scan" in result.output and "demo" in result.output


def test_no_default_root_is_a_usage_error(monkeypatch, tmp_path):
    monkeypatch.setattr(scan_module, "DEFAULT_ROOTS", (str(tmp_path / "a"), str(tmp_path / "b")))
    result = run("scan")
    assert result.exit_code == 2 and result.stdout == ""
    assert "--help" in result.stderr and "recover demo" in result.stderr


def test_default_root_is_the_first_that_exists(monkeypatch, reference):
    monkeypatch.setattr(scan_module, "DEFAULT_ROOTS", ("/nonexistent", str(reference / "root")))
    result = run("scan", "--proc-root", str(reference / "proc"), "-f", "json")
    assert orjson.loads(result.stdout)["root"] == str(reference / "root")


@pytest.mark.parametrize("prefix, ids", [
    ([WEB[:6]], [WEB]), ([CRON], [CRON]), ([WEB[:3], CACHE[:4]], [WEB, CACHE]),
])
def test_container_prefix(reference, prefix, ids):
    args = [a for p in prefix for a in ("--container", p)]
    result = run("scan", str(reference / "root"), "--proc-root", str(reference / "proc"), "-f", "json", *args)
    assert [c["id"] for c in orjson.loads(result.stdout)["containers"]] == sorted(ids)


def test_ambiguous_prefix_lists_candidates(reference):
    (reference / "root" / (WEB[:4] + "x")).mkdir()
    result = run("scan", str(reference / "root"), "--container", WEB[:4])
    assert result.exit_code == 2 and result.stdout == ""
    assert "ambiguous" in result.stderr and WEB in result.stderr


def test_unknown_container_and_bad_format(reference):
    assert run("scan", str(reference / "root"), "--container", "zzz").exit_code == 2
    result = run("scan", str(reference / "root"), "--format", "yaml")
    assert result.exit_code == 2 and "table, json, jsonl" in result.stderr


def test_python_dash_m_and_stdout_is_data_only(reference):
    proc = subprocess.run([sys.executable, "-m", "recover", "scan", str(reference / "root"),
                           "--proc-root", str(reference / "proc"), "-f", "json"],
                          capture_output=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr == b""
    doc = orjson.loads(proc.stdout)
    assert {c["id"] for c in doc["containers"]} == {WEB, WORKER, CRON, CACHE}


def test_internal_error_exits_3_not_1(monkeypatch, reference):
    from recover import cli

    def boom(*a, **k):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(cli, "_open_scan", boom)
    monkeypatch.setattr(sys, "argv", ["recover", "scan", str(reference / "root")])
    with pytest.raises(SystemExit) as e:
        cli.main()
    assert e.value.code == 3
