"""Debian's promtool, for the tests of the deploy files and of `recover watch`'s textfile.

Facts measured on Debian 12 (bookworm), installed by .ci/run as the packages `prometheus`
(promtool 2.42.0) and `prometheus-node-exporter` (node_exporter 1.5.0):

- promtool is /usr/bin/promtool.  `promtool check metrics` reads the exposition text on stdin and
  exits 0 when it is clean, 3 when it only has lint problems (a line each on stderr, such as
  `foo no help text`, `foo_count counter metrics should have "_total" suffix`), 1 when the text
  does not parse (`error while linting: text format parsing error in line N: ...` on stderr).
- node_exporter is /usr/bin/prometheus-node-exporter (the Debian name; no `node_exporter` on
  PATH).  Its package's service would start it with $ARGS from /etc/default/prometheus-node-exporter
  and read textfiles from /var/lib/prometheus/node-exporter by default; .ci/run installs it
  without starting it.
- The textfile collector is on by default; its dir is `--collector.textfile.directory=DIR`
  (it reads DIR/*.prom on each scrape).  `--collector.disable-defaults --collector.textfile`
  serves the textfile collector alone.
- `--web.listen-address=127.0.0.1:PORT` listens on loopback only; metrics are at /metrics.
  So a live scrape test can run:
      /usr/bin/prometheus-node-exporter --collector.disable-defaults --collector.textfile
          --collector.textfile.directory=DIR --web.listen-address=127.0.0.1:PORT
- What it then serves about the files (node_exporter 1.5.0): `node_textfile_mtime_seconds{file=
  "DIR/recover.prom"}` per file read (the full path: older releases named the file alone, hence
  the rules' `file=~"(.*/)?recover\\.prom"`), and one `node_textfile_scrape_error` (no label)
  that is 1 when any file of DIR could not be read or parsed.  A file that does not parse is
  dropped whole: none of its samples is served, nor its mtime (node_exporter logs the parse error).
"""

from __future__ import annotations

import os
import shutil
import subprocess

PROMTOOL = "promtool"


def promtool_missing() -> str | None:
    """Why promtool cannot be run here (a reason for pytest.skip), or None."""
    if shutil.which(PROMTOOL) is None:
        return ("promtool is not installed (Debian's `prometheus` package; .ci/run installs it "
                "without starting the service)")
    return None


def run_promtool(*args: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """`promtool ARGS...`, its output captured as text."""
    return subprocess.run([PROMTOOL, *args], input=stdin, capture_output=True, text=True, timeout=timeout,
                          check=False)


def check_metrics(text: str) -> list[str]:
    """The problems `promtool check metrics` finds in an exposition text (a textfile's content):
    [] when it is clean, else each line promtool printed (a lint problem, or the parse error)."""
    done = run_promtool("check", "metrics", stdin=text)
    problems = [line.strip() for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    if done.returncode != 0 and not problems:
        problems = [f"promtool check metrics exited {done.returncode} and said nothing"]
    return problems if done.returncode != 0 else []


NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"


def node_exporter_missing() -> str | None:
    """Why Debian's node_exporter cannot be run here (a reason for pytest.skip), or None."""
    if not os.access(NODE_EXPORTER, os.X_OK):
        return (f"{NODE_EXPORTER} is not installed (Debian's `prometheus-node-exporter` package; .ci/run installs "
                "it without starting the service)")
    return None
