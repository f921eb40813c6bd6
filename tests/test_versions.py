"""Which containerd will start (recover/generations/runtime_v2/version.py): the version read from a real
binary (never run), from the unit that starts it, from the bundles, and when it cannot be told.

The binaries are real: Debian's containerd 1.6.20 (`/usr/bin/containerd`, the package .ci/run
installs) and the 1.7.34 and 2.3.4 releases the lab extracts (recover/generations/runtime_v2/lab/versions.py); a test
whose binary is not here is skipped with its reason.
"""

from __future__ import annotations

import os
import socket
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from recover.cli import app
from recover.generations.runtime_v2.version import (
    behaviour_of,
    binary_version,
    parse_version,
    unit_exec_start,
)

runner = CliRunner()
DEBIAN = Path("/usr/bin/containerd")


def lab_binary(version: str) -> Path:
    from recover.generations.runtime_v2.lab.versions import VERSIONS

    path = VERSIONS[version].bin_dir / "containerd"
    if not path.is_file():
        pytest.skip(f"no containerd {version} binary at {path} (.ci/run extracts it, as root)")
    return path


def debian_binary() -> Path:
    if not DEBIAN.is_file():
        pytest.skip(f"no {DEBIAN} (Debian's containerd package, which .ci/run installs as root)")
    return DEBIAN


@pytest.mark.parametrize("version", ["1.7.34", "2.3.4"])
def test_a_release_binary_tells_its_version(version):
    assert binary_version(str(lab_binary(version))) == (version, "")


def test_a_distribution_binary_tells_the_upstream_version_its_own_string_leaves_in_place():
    """Debian sets its own version string ("1.6.20~ds1") and records no -ldflags: the default of
    containerd's version package ("1.6.20+unknown") is still in the binary."""
    assert binary_version(str(debian_binary())) == ("1.6.20", "")


def test_dockerd_is_not_containerd_though_it_vendors_its_version_package():
    dockerd = Path("/usr/sbin/dockerd")
    if not dockerd.is_file():
        pytest.skip(f"no {dockerd} (Debian's docker.io, which .ci/run installs as root)")
    version, why = binary_version(str(dockerd))
    assert version is None and "github.com/docker/docker/cmd/dockerd" in why


def test_what_is_not_a_containerd_binary_says_why(tmp_path):
    (tmp_path / "script").write_text("#!/bin/sh\n")
    assert binary_version(str(tmp_path / "script")) == (None, "not an ELF file")
    assert binary_version(str(tmp_path / "absent"))[0] is None
    elf = tmp_path / "elf"
    elf.write_bytes(open("/bin/true", "rb").read())
    assert binary_version(str(elf)) == (None, "no .go.buildinfo section: not a Go binary")


@pytest.mark.parametrize("text, parsed", [("v2.3.4", (2, 3, 4)), ("1.6.20~ds1", (1, 6, 20)), ("1.7", (1, 7, 0)),
                                          ("2.3.4+unknown", (2, 3, 4)), ("latest", None), ("", None)])
def test_versions_are_parsed_as_containerd_writes_them(text, parsed):
    assert parse_version(text) == parsed


@pytest.mark.parametrize("version, behaviour, noted", [
    ("1.6.20", "1.6", False), ("1.6.38", "1.6", False), ("1.5.9", "1.6", True), ("1.7.34", "1.7", False),
    ("1.7.0", "1.7", False), ("2.3.4", "2.x", False), ("2.0.0", "2.x", True), ("2.4.1", "2.x", True)])
def test_a_version_is_judged_by_the_nearest_behaviour_seen_and_says_so(version, behaviour, noted):
    judged, note = behaviour_of(version)
    assert judged == behaviour and bool(note) is noted
    if noted:
        assert f"containerd {version} was not seen restoring" in note


@pytest.mark.parametrize("version", ["0.2.9", "3.0.0", "latest"])
def test_a_version_recover_cannot_judge_is_a_usage_error(tmp_path, version):
    (tmp_path / "io.containerd.runtime.v2.task").mkdir()
    result = runner.invoke(app, ["scan", str(tmp_path), "--containerd-version", version])
    assert result.exit_code == 2 and result.stdout == ""
    assert f"--containerd-version {version}: not a containerd 1.x or 2.x version" in result.stderr


# --- where the binary that will start is found -----------------------------------------------

def put_binary(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)  # 40 MB: a link where the filesystem allows it
    except OSError:
        shutil.copyfile(source, target)


def image_with_state(tmp_path: Path, bootstrap: bool = False) -> Path:
    image = tmp_path / "image"
    bundle = image / "run" / "containerd" / "io.containerd.runtime.v2.task" / "default" / "t1"
    bundle.mkdir(parents=True)
    (bundle / "init.pid").write_text("1")
    if bootstrap:
        (bundle / "bootstrap.json").write_text('{"version":3,"address":"unix:///run/containerd/s/x","protocol":"ttrpc"}')
    else:
        (bundle / "address").write_text("unix:///run/containerd/s/x")
    return image


def judged(image: Path, *args: str) -> dict:
    """The daemon_version a scan of the image's /run/containerd reports, found as it would be there
    (the test unsets RECOVER_CONTAINERD_VERSION: no_version_in_the_environment)."""
    result = runner.invoke(app, ["scan", "--image-root", str(image), "-f", "json", *args])
    assert result.exit_code == 0, result.output
    return orjson.loads(result.stdout)


@pytest.fixture
def no_version_in_the_environment(monkeypatch):
    monkeypatch.delenv("RECOVER_CONTAINERD_VERSION")


def test_the_units_exec_start_names_the_binary_that_will_start(tmp_path, no_version_in_the_environment):
    image = image_with_state(tmp_path)
    put_binary(lab_binary("2.3.4"), image / "opt" / "ctrd" / "bin" / "containerd")
    put_binary(debian_binary(), image / "usr" / "bin" / "containerd")
    units = image / "lib" / "systemd" / "system"
    units.mkdir(parents=True)
    (units / "containerd.service").write_text("[Service]\nExecStartPre=-/sbin/modprobe overlay\n"
                                              "ExecStart=/usr/bin/containerd\n")
    doc = judged(image)  # the unit's own ExecStart: Debian's
    assert (doc["daemon"], doc["daemon_version"]["source"]) == ("containerd 1.6.20", "binary")
    assert doc["daemon_version"]["binary"] == str(image / "usr" / "bin" / "containerd")
    # a drop-in resets ExecStart and names another binary (an upgrade installed beside the package)
    dropins = image / "etc" / "systemd" / "system" / "containerd.service.d"
    dropins.mkdir(parents=True)
    (dropins / "10-upgrade.conf").write_text("[Service]\nExecStart=\nExecStart=/opt/ctrd/bin/containerd --config "
                                             "/etc/containerd/config.toml\n")
    doc = judged(image)
    assert (doc["daemon"], doc["daemon_version"]["judged_as"]) == ("containerd 2.3.4", ["2.x"])
    assert unit_exec_start("containerd.service", lambda p: str(image) + p) == str(image / "opt/ctrd/bin/containerd")
    # the flag wins, then the variable, each said as what it is
    assert judged(image, "--containerd-version", "1.7.34")["daemon_version"]["source"] == "flag"
    os.environ["RECOVER_CONTAINERD_VERSION"] = "1.7.34"  # the fixture puts the variable back after
    by_env = judged(image)["daemon_version"]
    assert (by_env["version"], by_env["source"]) == ("1.7.34", "environment")
    assert "RECOVER_CONTAINERD_VERSION" in by_env["note"]
    os.environ["RECOVER_CONTAINERD_VERSION"] = "9.9"
    bad = runner.invoke(app, ["scan", "--image-root", str(image)])
    assert bad.exit_code == 2 and bad.stderr.startswith("recover: $RECOVER_CONTAINERD_VERSION 9.9: not a")


def test_without_a_unit_containerd_on_systemds_path_is_read(tmp_path, no_version_in_the_environment):
    image = image_with_state(tmp_path)
    put_binary(lab_binary("1.7.34"), image / "usr" / "local" / "bin" / "containerd")
    put_binary(debian_binary(), image / "usr" / "bin" / "containerd")
    doc = judged(image)  # /usr/local/bin comes first on systemd's PATH
    assert (doc["daemon"], doc["daemon_version"]["binary"]) == ("containerd 1.7.34",
                                                                str(image / "usr/local/bin/containerd"))


def test_a_binary_whose_version_is_no_1x_or_2x_version_tells_nothing(tmp_path, no_version_in_the_environment):
    image = image_with_state(tmp_path)
    data = lab_binary("1.7.34").read_bytes()
    assert data.count(b"version.Version=v1.7.34") >= 1  # the -X its build info records
    target = image / "usr" / "bin" / "containerd"
    target.parent.mkdir(parents=True)
    target.write_bytes(data.replace(b"version.Version=v1.7.34", b"version.Version=v9.7.34"))
    version = judged(image)["daemon_version"]
    assert (version["source"], version["judged_as"]) == ("unknown", ["1.6", "1.7", "2.x"])
    assert "its version '9.7.34' is no containerd 1.x or 2.x version" in version["note"]


def test_beside_a_captured_proc_dir_no_binary_of_this_host_is_read(tmp_path, no_version_in_the_environment):
    """The captured host's containerd is not this host's: without --image-root none is read."""
    image = image_with_state(tmp_path)
    proc = tmp_path / "proc"
    (proc / "1").mkdir(parents=True)
    (proc / "stat").write_text("cpu 0 0 0 0\nbtime 1700000000\n")
    result = runner.invoke(app, ["scan", str(image / "run" / "containerd"), "--proc-root", str(proc), "-f", "json"])
    assert result.exit_code == 0, result.output
    version = orjson.loads(result.stdout)["daemon_version"]
    assert (version["source"], version["binary"]) == ("unknown", None)
    assert "this host's are not the captured host's" in version["note"]


def test_without_a_binary_the_bundles_tell_2x_or_nothing(tmp_path, no_version_in_the_environment):
    doc = judged(image_with_state(tmp_path / "a", bootstrap=True))
    assert (doc["daemon_version"]["source"], doc["daemon_version"]["judged_as"]) == ("bundles", ["2.x"])
    assert "bootstrap.json, which only containerd 2.x writes" in doc["daemon_version"]["note"]
    doc = judged(image_with_state(tmp_path / "b"))
    assert (doc["daemon_version"]["source"], doc["daemon_version"]["judged_as"]) == ("unknown", ["1.6", "1.7", "2.x"])
    assert doc["daemon"] == "containerd 1.6-2.x" and "no containerd binary found" in doc["daemon_version"]["note"]


def test_a_fifo_or_a_damaged_file_where_a_binary_belongs_is_said_never_waited_on(tmp_path):
    """A FIFO named where a binary is expected (a unit's ExecStart, a bundle's shim-binary-path) is
    never opened to wait on; an ELF file whose headers point past its end is no binary."""
    os.mkfifo(tmp_path / "fifo")
    assert binary_version(str(tmp_path / "fifo")) == (None, "damaged (not a regular file)")
    real = Path("/bin/true").read_bytes()
    for offset, value in ((0x28, 1 << 62), (0x28, len(real) - 8), (0x3C, 0xFFFF)):  # e_shoff, e_shnum
        damaged = bytearray(real)
        damaged[offset:offset + 8 if offset == 0x28 else offset + 2] = value.to_bytes(
            8 if offset == 0x28 else 2, "little")
        (tmp_path / "damaged").write_bytes(bytes(damaged))
        version, why = binary_version(str(tmp_path / "damaged"))
        assert version is None and why, (offset, value)


def test_a_fifo_for_the_shim_binary_never_blocks_a_scan(tmp_path):
    """The bundle's own `log` FIFO named in shim-binary-path, and in a unit's ExecStart inside an
    image: the scan ends, offline and not."""
    image = image_with_state(tmp_path)
    bundle = image / "run" / "containerd" / "io.containerd.runtime.v2.task" / "default" / "t1"
    os.mkfifo(bundle / "log")
    (bundle / "shim-binary-path").write_text(str(bundle / "log"))
    units = image / "etc" / "systemd" / "system"
    units.mkdir(parents=True)
    os.mkfifo(image / "fifo")
    (units / "containerd.service").write_text("[Service]\nExecStart=/fifo\n")
    for args in ([], ["--offline"], ["--proc-root", "/proc"]):
        result = subprocess.run([sys.executable, "-m", "recover", "scan", "--image-root", str(image), "-f", "json",
                                 *args], capture_output=True, timeout=60,
                                env={k: v for k, v in os.environ.items() if k != "RECOVER_CONTAINERD_VERSION"})
        assert result.returncode == 0, result.stderr


def test_a_live_shim_whose_process_cannot_be_told_is_no_leaked_shim(tmp_path):
    """1.7 and 2.x clean up a live shim that runs nothing of its task: where whether the init runs
    cannot be told (verdict unknown, not-started), neither can the restore."""
    from recover.fsread import OpenRoot
    from recover.generations.runtime_v2.builder import TaskBuilder
    from recover.generations.runtime_v2.predict import As, TaskHost, predict_task
    from recover.generations.runtime_v2.reader import StateDir

    with TaskBuilder(tmp_path) as b:
        bundle = b.write_bundle("default", "t")
        listening = socket.socket(socket.AF_UNIX)
        listening.bind(str(tmp_path / "shim.sock"))  # a socket file where the address says
        (bundle / "address").write_text(f"unix://{tmp_path / 'shim.sock'}")
        with OpenRoot(str(b.state)) as root:
            files = StateDir(root).read("default/t").files
    for verdict, would in (("unknown", None), ("not-started", None), ("exited", "clean-up")):
        host = TaskHost(proc_read=True, shim_pid=4242, shim_state="alive", grpc_address=None,
                        verdicts={"init": verdict}, pids={"init": 4243}, runc_init=None)
        for b in ("1.7", "2.x"):
            assert predict_task(files, host, As(b, f"containerd {b}")).would == would, (verdict, b)
        listening.close()
