"""Text output on a terminal: tables fit its width, verdicts and severities in colour; piped output
and machine formats never change with the terminal."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios

import orjson
import pytest

from recover.render import fit_columns

ANSI = re.compile(r"\x1b\[[0-9;]*m")
COLOURS = {"red": 31, "green": 32, "yellow": 33}


def coloured(text: str, word: str, colour: str) -> bool:
    """Whether `word` is shown in `colour` (other attributes, bold or not, may follow the colour)."""
    return re.search(rf"\x1b\[{COLOURS[colour]}m(\x1b\[[0-9;]*m)*{re.escape(word)}\s*\x1b\[0m", text) is not None


def on_a_terminal(args: list[str], columns: int, **env: str) -> str:
    """Run recover with stdout on a pseudo-terminal `columns` wide; what it wrote there."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    clean = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "COLUMNS", "TERM", "FORCE_COLOR")}
    try:
        p = subprocess.Popen([sys.executable, "-m", "recover", *args], stdin=subprocess.DEVNULL, stdout=slave,
                             stderr=subprocess.PIPE, env={**clean, "TERM": "xterm", **env})
    finally:
        os.close(slave)
    chunks = []
    try:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
    p.wait(timeout=60)
    assert p.stderr.read() == b""
    return b"".join(chunks).decode().replace("\r\n", "\n")


def piped(args: list[str], **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "COLUMNS", "TERM")}
    return subprocess.run([sys.executable, "-m", "recover", *args], capture_output=True, check=False,
                          env={**clean, "TERM": "xterm", **env}, timeout=60).stdout.decode()


def table_lines(text: str) -> list[str]:
    return ANSI.sub("", text).split("\n\n", 1)[0].splitlines()


def scan_args(reference, *more: str) -> list[str]:
    return ["scan", str(reference / "root"), "--proc-root", str(reference / "proc"), *more]


def test_the_table_fits_the_terminal_and_verdicts_are_coloured(reference):
    wide = table_lines(piped(scan_args(reference)))
    assert max(map(len, wide)) > 80  # the reference table does not fit 80 columns unwrapped
    out = on_a_terminal(scan_args(reference), 80)
    assert max(map(len, table_lines(out))) <= 80
    assert coloured(out, "running", "green") and coloured(out, "orphaned", "red")
    assert coloured(out, "error", "red") and coloured(out, "warning", "yellow")  # severities in the findings
    # wrapped, the same cells: every word of the unwrapped table is still there
    assert sorted(" ".join(wide).replace("-", " ").split()) == sorted(" ".join(table_lines(out)).replace("-", " ").split())


def test_no_colour_when_piped_with_no_color_or_on_a_dumb_terminal(reference):
    assert "\x1b" not in on_a_terminal(scan_args(reference), 200, NO_COLOR="1")
    assert "\x1b" not in on_a_terminal(scan_args(reference), 200, TERM="dumb")
    out = piped(scan_args(reference))
    assert "\x1b" not in out
    assert len(table_lines(out)) == 2 + 5  # header, rule, one line per process: never wrapped


def test_columns_sets_the_width_anywhere(reference):
    assert max(map(len, table_lines(piped(scan_args(reference), COLUMNS="80")))) <= 80


@pytest.mark.parametrize("fmt", ["json", "jsonl", "prometheus"])
def test_machine_formats_ignore_the_terminal(reference, fmt):
    out = on_a_terminal(scan_args(reference, "-f", fmt), 40)
    assert "\x1b" not in out
    lines = out.splitlines()
    assert len(lines) == len(piped(scan_args(reference, "-f", fmt)).splitlines())  # nothing wrapped
    if fmt != "prometheus":
        assert all(orjson.loads(line) for line in lines)


def test_check_text_in_colour_on_a_terminal(reference):
    args = ["check", str(reference / "root"), "--proc-root", str(reference / "proc")]
    out = on_a_terminal(args, 120)
    assert coloured(out, "error", "red") and coloured(out, "FAILED", "red")
    assert ANSI.sub("", out) == piped(args, COLUMNS="120")  # the same text, coloured


@pytest.mark.parametrize("command", ["check", "scan"])
def test_finding_lines_fit_the_width_and_keep_every_word(reference, command):
    args = [command, str(reference / "root"), "--proc-root", str(reference / "proc")]
    unwrapped = piped(args)
    assert max(map(len, unwrapped.splitlines())) > 100
    fitted = piped(args, COLUMNS="100")
    assert max(map(len, fitted.splitlines())) <= 100  # no word here is longer than 100
    assert fitted.split() == unwrapped.split()  # the same words, in the same order


def test_fit_columns():
    headers = ("ID", "NAME", "NOTE")
    rows = [("a1", "short", "a note with several words in it"), ("b2", "a-longer-name", "x")]
    assert fit_columns(rows, headers, None, [1, 2]) == [None, None, None]  # no width: never wrap
    assert fit_columns(rows, headers, 80, [1, 2]) == [None, None, None]  # fits as it is
    # 30 - 2 gaps of 2 - ID's 2 leave 24: NAME (13) and NOTE (31) both want more than half
    assert fit_columns(rows, headers, 30, [1, 2]) == [None, 12, 12]
    # 36 leaves 30: NAME takes its 13, NOTE the 17 left
    assert fit_columns(rows, headers, 36, [1, 2]) == [None, 13, 17]
    # never narrower than the longest word (after a hyphen, textwrap may break)
    assert fit_columns(rows, headers, 10, [1, 2]) == [None, len("longer-"), len("several")]
    # a cap wraps a column whatever the width
    assert fit_columns(rows, headers, None, [2], caps=[None, None, 10]) == [None, None, 10]


def test_containers_are_written_as_orjson_writes_the_same_objects(reference, tmp_path):
    """A scan's containers go through msgspec (findings as they are); orjson, given the same
    container with each finding as finding_json's object, writes the same bytes: a 0.2 root of
    every problem, a runtime-v2 capture, and names that are not UTF-8."""
    import msgspec
    from reference_v2 import extract, scan_args

    from recover.render import (
        _container_bytes,
        _container_line,
        container_json,
        finding_json,
    )
    from recover.rules import Finding
    from recover.scan import Scan

    def as_orjson_sees_it(value):
        if isinstance(value, Finding):
            return finding_json(value)
        if isinstance(value, dict):
            return {k: as_orjson_sees_it(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [as_orjson_sees_it(v) for v in value]
        return value

    (reference / "root" / "c-\udcff\n").mkdir()  # a name that is not UTF-8, with a control character
    v2 = extract("a", tmp_path / "v2")
    args = scan_args(v2)
    roots = [(str(reference / "root"), {}), (args[0], {"around": _surroundings(args)})]
    seen = 0
    for path, kwargs in roots:
        with Scan(path, **kwargs) as scan:
            for c in scan.containers():
                expected = orjson.dumps(as_orjson_sees_it(container_json(c)))
                assert _container_bytes(c) == expected and _container_line(c) == expected + b"\n"
                assert isinstance(msgspec.json.decode(expected), dict)
                seen += 1
    assert seen > 5
    pathless = Finding("H004", "info", "offline")  # scan-level findings have no path: none is written
    assert msgspec.json.encode(pathless) == orjson.dumps(finding_json(pathless)) == (
        b'{"code":"H004","severity":"info","message":"offline"}')


def _surroundings(args):
    from recover.around import Surroundings

    return Surroundings(image_root=args[args.index("--image-root") + 1])
