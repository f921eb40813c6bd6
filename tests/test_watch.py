"""`recover watch` (recover/watch.py, recover/metrics.py): a live root rescanned, its metrics
written whole to a node_exporter textfile; a shim killed mid-way shows within one interval; a
root that goes away is said and survived; SIGTERM ends it cleanly; nothing else is written.
With Debian's prometheus-node-exporter and promtool (tests/promtool.py): a real scrape."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from recover.builders import become_subreaper
from recover.generations.runtime_v2.builder import TaskBuilder

NS = "fleet"


@pytest.fixture(scope="module", autouse=True)
def subreaper():
    become_subreaper()


LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def normal(key: str) -> str:
    """`name{labels}` with its labels sorted, as node_exporter serves them."""
    name, brace, labels = key.partition("{")
    return name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(LABEL.findall(labels))) + "}" if brace else "")


def samples(text: str) -> dict[str, float]:
    """`name{labels}` (labels sorted) -> value, for every sample line of a textfile or a scrape."""
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            found[normal(key)] = float(value)
    return found


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (got := predicate()):
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def start_watch(b: TaskBuilder, textfile: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "recover", "watch", *b.scan_args(), "--textfile", str(textfile),
                             "--containerd-version", "1.6.20", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def kill_rows(text: str, root: str) -> float:
    return samples(text).get(normal(f'recover_restart_processes{{root="{root}",version="1.6.20",'
                                    f'would="kill-live-processes",harm="kill"}}'), 0)


def test_a_killed_shim_shows_within_one_interval_and_sigterm_ends_it_cleanly(tmp_path):
    out = tmp_path / "textfile"
    out.mkdir()
    with TaskBuilder(tmp_path / "c") as b:
        healthy, doomed = b.start_task(NS, "healthy"), b.start_task(NS, "doomed")
        textfile = out / "recover.prom"
        watch = start_watch(b, textfile, "--interval", "0.5", "--upgrade-to", "2.3.4")
        try:
            root = str(b.state)
            first = wait_for(lambda: textfile.exists() and textfile.read_text(), 20, "the first textfile")
            assert samples(first)[f'recover_scan_ok{{root="{root}"}}'] == 1
            assert samples(first)[normal(f'recover_processes{{root="{root}",verdict="running"}}')] == 2
            assert kill_rows(first, root) == 0
            assert f'recover_upgrade_processes{{root="{root}",version="2.3.4",would="reconnect",harm="none"}} 2' in first
            doomed.shim.kill()
            killed_at = time.monotonic()
            def with_kill() -> str | None:
                text = textfile.read_text()
                return text if kill_rows(text, root) == 1 else None

            text = wait_for(with_kill, 5, "the killed shim in the metrics")
            assert time.monotonic() - killed_at < 2  # one interval (0.5 s), a scan, and a loaded machine's slack
            assert f'recover_hazard{{root="{root}",container="{NS}/doomed",code="R101"}} 1' in text
            assert samples(text)[normal(f'recover_findings{{root="{root}",code="R101",severity="error"}}')] == 1
            assert healthy.init  # still ours: the builder stops it
        finally:
            watch.send_signal(signal.SIGTERM)
            _, err = watch.communicate(timeout=20)
        assert watch.returncode == 0, err
        assert b"stopped by signal 15" in err
        assert os.listdir(out) == ["recover.prom"]  # whole files only, nothing else written
        assert samples(textfile.read_text())[f'recover_scan_ok{{root="{b.state}"}}'] == 1


def test_a_root_that_goes_away_is_said_and_survived(tmp_path):
    with TaskBuilder(tmp_path / "c") as b:
        b.start_task(NS, "t")
        textfile = tmp_path / "recover.prom"
        watch = start_watch(b, textfile, "--interval", "0.3")
        ok = f'recover_scan_ok{{root="{b.state}"}}'
        try:
            wait_for(lambda: textfile.exists() and samples(textfile.read_text()).get(ok) == 1, 20, "a scan")
            b.state.rename(tmp_path / "away")
            wait_for(lambda: samples(textfile.read_text()).get(ok) == 0, 5, "recover_scan_ok 0")
            assert watch.poll() is None
            (tmp_path / "away").rename(b.state)
            wait_for(lambda: samples(textfile.read_text()).get(ok) == 1, 5, "recover_scan_ok 1 again")
        finally:
            watch.send_signal(signal.SIGTERM)
            watch.communicate(timeout=20)
        assert watch.returncode == 0


def test_usage_errors(tmp_path):
    for args, said in ((["--textfile", str(tmp_path / "x.txt")], "*.prom"), ([], "--textfile is required"),
                       (["--textfile", str(tmp_path / "no" / "x.prom")], "does not exist"),
                       (["--textfile", str(tmp_path / "x.prom"), "--interval", "0"], "--interval"),
                       (["--textfile", str(tmp_path / "x.prom"), "--upgrade-to", "9.9"], "9.9")):
        r = subprocess.run([sys.executable, "-m", "recover", "watch", str(tmp_path), *args], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 2 and said in r.stderr and r.stderr.count("\n") == 1, (args, r.stderr)


def test_the_textfile_passes_promtool(tmp_path):
    from promtool import check_metrics, promtool_missing

    if reason := promtool_missing():
        pytest.skip(reason)
    with TaskBuilder(tmp_path / "c") as b:
        b.start_task(NS, "a")
        b.start_task(NS, "b").shim.kill()
        textfile = tmp_path / "recover.prom"
        r = subprocess.run([sys.executable, "-m", "recover", "watch", *b.scan_args(), "--textfile", str(textfile),
                            "--count", "1", "--upgrade-to", "2.3.4"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert check_metrics(textfile.read_text()) == []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_real_node_exporter_serves_what_watch_writes(tmp_path):
    from promtool import NODE_EXPORTER, node_exporter_missing

    if reason := node_exporter_missing():
        pytest.skip(reason)
    collector = tmp_path / "textfile"
    collector.mkdir()
    port = free_port()
    exporter = subprocess.Popen([NODE_EXPORTER, "--collector.disable-defaults", "--collector.textfile",
                                 f"--collector.textfile.directory={collector}", f"--web.listen-address=127.0.0.1:{port}"],
                                stdout=subprocess.DEVNULL, stderr=open(tmp_path / "node_exporter.log", "wb"))

    def scrape() -> str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                return r.read().decode()
        except OSError:
            return ""

    try:
        with TaskBuilder(tmp_path / "c") as b:
            b.start_task(NS, "web")
            doomed = b.start_task(NS, "doomed")
            watch = start_watch(b, collector / "recover.prom", "--interval", "1")
            root = str(b.state)
            try:
                first = wait_for(lambda: (lambda t: t if "recover_scan_ok" in t else None)(scrape()), 30,
                                 "recover's series")
                assert samples(first)[f'recover_scan_ok{{root="{root}"}}'] == 1
                assert samples(first)["node_textfile_scrape_error"] == 0
                assert kill_rows(first, root) == 0
                doomed.shim.kill()
                wait_for(lambda: kill_rows(scrape(), root) == 1, 5, "the new hazard in node_exporter's /metrics")
            finally:
                watch.send_signal(signal.SIGTERM)
                watch.communicate(timeout=20)
    finally:
        exporter.terminate()
        exporter.wait(10)


def test_a_textfile_dir_that_goes_away_is_said_and_written_again(tmp_path):
    out = tmp_path / "collector"
    out.mkdir()
    with TaskBuilder(tmp_path / "c") as b:
        b.start_task(NS, "t")
        textfile = out / "recover.prom"
        watch = start_watch(b, textfile, "--interval", "0.3")
        try:
            wait_for(textfile.exists, 20, "a textfile")
            textfile.unlink()
            out.rmdir()
            time.sleep(1)
            assert watch.poll() is None
            out.mkdir()
            wait_for(textfile.exists, 5, "the textfile written again")
        finally:
            watch.send_signal(signal.SIGTERM)
            _, err = watch.communicate(timeout=20)
        assert watch.returncode == 0 and b"cannot write" in err
        assert os.listdir(out) == ["recover.prom"]
