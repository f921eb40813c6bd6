"""The command line: exit codes, root selection, --container, stdout only for data."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import orjson
import pytest
import typer
from reference import CACHE, CRON, WEB, WORKER
from typer.testing import CliRunner

from recover import scan as scan_module
from recover.cli import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, list(args))


def test_help_documents_exit_codes():
    for args in (["--help"], ["scan", "--help"]):
        out = run(*args).stdout
        assert "Exit codes" in out and "internal error" in out


@pytest.mark.parametrize("command", [[], ["scan"], ["guard"], ["repair"]])
def test_help_speaks_of_both_generations(command):
    out = " ".join(run(*command, "--help").stdout.split())
    assert "containerd 0.2" in out and ("containerd 1.x/2.x" in out or "1.6, 1.7 and 2.x" in out), out


def test_repair_help_says_what_it_refuses():
    out = " ".join(run("repair", "--help").stdout.split())
    assert "Refuses (exit 4" in out and "a copy of a live root" in out and "captured proc dir" in out
    assert "/proc/PID/root" in out and "a containerd daemon runs on" in out


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
    assert result.exit_code == 2 and "text, json, jsonl, prometheus" in result.stderr


def test_python_dash_m_and_stdout_is_data_only(reference):
    proc = subprocess.run([sys.executable, "-m", "recover", "scan", str(reference / "root"),
                           "--proc-root", str(reference / "proc"), "-f", "json"],
                          capture_output=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr == b""
    doc = orjson.loads(proc.stdout)
    assert {c["id"] for c in doc["containers"]} == {WEB, WORKER, CRON, CACHE}


def test_internal_error_exits_3_not_1(monkeypatch, reference):
    from recover import cli
    from recover.cli import judging

    def boom(*a, **k):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(judging, "_open_scan", boom)
    monkeypatch.setattr(sys, "argv", ["recover", "scan", str(reference / "root")])
    with pytest.raises(SystemExit) as e:
        cli.main()
    assert e.value.code == 3


# --- conventions ---------------------------------------------------------------------------

def test_version_and_short_help():
    from importlib.metadata import version

    result = run("--version")
    assert result.exit_code == 0 and result.stdout == f"recover {version('recover')}\n"
    assert run("-h").stdout == run("--help").stdout
    for command in ("scan", "check", "explain", "rules", "repair", "demo"):
        short = run(command, "-h")
        assert short.exit_code == 0 and short.stdout == run(command, "--help").stdout


def test_scan_format_text_and_its_old_name_table(reference):
    args = ["scan", str(reference / "root"), "--proc-root", str(reference / "proc")]
    text = run(*args, "-f", "text")
    assert text.exit_code == 0 and text.stdout == run(*args, "-f", "table").stdout == run(*args).stdout
    help_text = " ".join(run("scan", "--help").stdout.split())
    assert all(name in help_text for name in ("text", "json", "jsonl", "prometheus"))


def test_help_names_only_options_the_command_has():
    for command in ("scan", "check", "explain", "repair"):
        help_text = run(command, "--help").stdout
        has = "--image-root" in {p.opts[0] for p in typer.main.get_command(app).commands[command].params
                                 if p.opts[0].startswith("--")}
        assert ("--image-root" in help_text) == has, command


# --- a reader that goes away: `| head` ---------------------------------------------------------

def closed_pipe_run(args: list[str]) -> subprocess.CompletedProcess:
    """Run recover with stdout on a pipe whose read end is closed before it starts: its first
    write of data fails (EPIPE), wherever that happens."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([sys.executable, "-m", "recover", *args], stdout=write_end,
                              stderr=subprocess.PIPE, timeout=60)
    finally:
        os.close(write_end)


@pytest.mark.parametrize("command, code", [
    ("scan -f json ROOT --proc-root PROC", 0), ("scan ROOT --proc-root PROC", 0),
    ("scan -f jsonl ROOT --proc-root PROC", 0),
    ("check ROOT --proc-root PROC", 1), ("check -f json ROOT --proc-root PROC", 1),  # 1: findings
    ("check --select F040 ROOT --proc-root PROC", 0),
    (f"explain {WEB[:8]} --root ROOT --proc-root PROC", 0), ("repair -f json ROOT --proc-root PROC", 0),
    ("rules", 0), ("--version", 0),
])
def test_a_closed_stdout_ends_the_output_not_the_command(reference, command, code):
    args = command.replace("ROOT", str(reference / "root")).replace("PROC", str(reference / "proc")).split()
    r = closed_pipe_run(args)
    assert r.returncode == code, r.stderr  # as the command would have exited
    # no traceback, no "Exception ignored", no "Broken pipe": only what the command says anyway
    said = [line for line in r.stderr.decode().splitlines()
            if not line.startswith("recover: note: --apply will refuse")]  # a dry run beside a captured proc
    assert said == []


STOPPED_MID_SCAN = """
import os, signal, sys
from recover import cli
from recover.cli import judging

def stopped(*args, **kwargs):  # the signal arrives while the command runs
    os.kill(os.getpid(), signal.%s)
    raise AssertionError("not stopped")

judging._open_scan = stopped
sys.argv = ["recover", "check", "/nonexistent"]
cli.main()
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_a_stop_signal_exits_128_plus_its_number(sig):
    r = subprocess.run([sys.executable, "-c", STOPPED_MID_SCAN % sig.name], capture_output=True, timeout=60,
                       preexec_fn=lambda: signal.signal(sig, signal.SIG_DFL))  # not ignored, as under `&`
    assert r.returncode == 128 + sig, r.stderr  # never 1 (findings), as click's "Aborted!" would be
    assert r.stdout == b"" and r.stderr == b""


def test_text_names_containers_as_the_table_does_and_json_in_full(reference):
    args = ["scan", str(reference / "root"), "--proc-root", str(reference / "proc")]
    text = run(*args).stdout
    shown = {line.split()[0] for line in text.split("\n\n")[0].splitlines()[2:]}
    assert shown == {WEB[:12], WORKER[:12], CRON[:12], CACHE[:12]}
    findings = text.split("\nfindings:\n", 1)[1].splitlines()
    assert findings and all(line.split()[2][:12] in shown for line in findings if "/" in line.split()[2])
    assert not any(full in text for full in (WEB, WORKER, CRON, CACHE))
    doc = orjson.loads(run(*args, "-f", "json").stdout)
    assert {c["id"] for c in doc["containers"]} == {WEB, WORKER, CRON, CACHE}


def test_the_package_is_typed():
    from importlib.resources import files

    assert (files("recover") / "py.typed").is_file()  # listed in package-data: installed with it


@pytest.mark.parametrize("args", [["scan", "--bogus"], ["scan", "a", "b"], ["explain"], ["bogus"], ["scan", "-f"],
                                  ["rules", "--bogus"]])
def test_clicks_own_usage_errors_are_one_line_with_exit_2(args):
    """What click itself refuses (an unknown option, an extra argument, a missing one) is said as
    every usage error is: one `recover:` line on stderr, exit 2 (the console entry point)."""
    r = subprocess.run([sys.executable, "-m", "recover", *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("recover: "), r.stderr


def test_empty_ids_versions_and_a_missing_baseline_are_said_plainly(reference, tmp_path):
    root = str(reference / "root")
    for wanted in ("", "ns/"):
        result = run("scan", root, "-c", wanted)
        assert result.exit_code == 2 and "no container id given" in result.stderr, wanted
    result = run("scan", root, "--containerd-version", "")
    assert result.exit_code == 2 and "--containerd-version: an empty value" in result.stderr
    result = run("check", root, "--baseline", str(tmp_path / "nope.json"))
    assert result.exit_code == 2 and result.stderr == (
        f"recover: --baseline {tmp_path / 'nope.json'}: No such file or directory\n")
