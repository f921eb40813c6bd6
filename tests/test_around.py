"""Around the root: a mounted disk image, Docker's files beside the root, runc's state, orphan shims."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import orjson
import pytest
from reference import CACHE, CRON, WEB, WORKER, copy_reference
from typer.testing import CliRunner

from recover.around import in_image
from recover.builders import become_subreaper
from recover.cli import app
from recover.generations.containerd_0_2.builder import RootBuilder

runner = CliRunner()
DOCKER_ROOT = "var/run/docker/libcontainerd/containerd"


@pytest.fixture(scope="module", autouse=True)
def subreaper():
    become_subreaper()


def scan(*args):
    result = runner.invoke(app, ["scan", "-f", "json", *args])
    assert result.exit_code == 0, result.output
    return orjson.loads(result.stdout)


def codes(doc, cid=None):
    if cid is None:
        return {f["code"] for f in doc["findings"]}
    c = next(c for c in doc["containers"] if c["id"] == cid)
    return {f["code"] for f in c["findings"]} | {f["code"] for p in c["processes"] for f in p["findings"]}


def test_paths_resolve_inside_the_image(tmp_path):
    image = tmp_path / "image"
    (image / "run" / "containerd").mkdir(parents=True)
    (image / "var").mkdir()
    os.symlink("/run", image / "var" / "run")  # absolute, as on a real host
    os.symlink("../../../../../etc", image / "run" / "escape")
    os.symlink("loop", image / "run" / "loop")
    assert in_image(str(image), "/var/run/containerd") == str(image / "run" / "containerd")
    assert in_image(str(image), "/var/run/escape/passwd") == str(image / "etc" / "passwd")
    assert in_image(str(image), "/../../etc") == str(image / "etc")
    assert in_image(str(image), "/run/loop/x").startswith(str(image))


@pytest.fixture
def image(tmp_path):
    """A host tree as a disk image holds it: Docker's layout, /var/run a link to /run."""
    image = tmp_path / "image"
    capture = copy_reference(tmp_path / "capture")
    (image / "run" / "docker" / "libcontainerd").mkdir(parents=True)
    (image / "var").mkdir()
    os.symlink("/run", image / "var" / "run")
    shutil.copytree(capture / "root", image / "run/docker/libcontainerd/containerd", symlinks=True,
                    ignore=shutil.ignore_patterns("exit", "control"))
    for cid in (WEB, WORKER, CRON):  # CACHE's bundle is gone
        bundle = image / "run/docker/libcontainerd" / cid
        bundle.mkdir()
        (bundle / "config.json").write_text("{}")
        for stream in ("stdin", "stdout", "stderr"):
            os.mkfifo(bundle / f"init-{stream}")
    return image, capture


def test_image_root_finds_the_default_root_and_reads_no_proc(image):
    tree, _ = image
    doc = scan("--image-root", str(tree))
    assert doc["root"] == str(tree / "run/docker/libcontainerd/containerd")
    assert doc["host"]["proc_root"] is None
    verdicts = {(c["id"], p["id"]): p["verdict"] for c in doc["containers"] for p in c["processes"]}
    assert verdicts[(WORKER, "init")] == "exited"
    assert verdicts[(WEB, "init")] == "unknown"
    # the bundle is looked up inside the image: the one that is gone means containerd kills
    cache = next(c for c in doc["containers"] if c["id"] == CACHE)
    assert cache["containerd_would"] == "drop-container" and "R003" in codes(doc, CACHE)


def test_image_root_with_a_captured_proc(image):
    tree, capture = image
    doc = scan("--image-root", str(tree), "--proc-root", str(capture / "proc"))
    verdicts = {(c["id"], p["id"]): p["verdict"] for c in doc["containers"] for p in c["processes"]}
    assert verdicts[(WEB, "init")] == "running" and verdicts[(CRON, "init")] == "orphaned"


@pytest.mark.parametrize("flag", ["--runc-root", "--containerd-root"])
def test_with_an_image_root_a_runc_or_containerd_root_missing_in_the_image_is_a_usage_error(image, flag):
    """Such a path is the image's: one the image lacks would make every task's state "missing" at a
    path that looks like the host's; it is said once, naming where it was looked for."""
    tree, _ = image
    (tree / "run" / "present").mkdir()
    result = runner.invoke(app, ["scan", "--image-root", str(tree), flag, "/run/absent"])
    assert result.exit_code == 2 and result.stdout == ""
    assert f"{flag} /run/absent" in result.stderr and str(tree / "run" / "absent") in result.stderr
    assert runner.invoke(app, ["scan", "--image-root", str(tree), flag, "/var/run/present"]).exit_code == 0


def test_bundle_without_config_or_with_a_file_for_a_fifo(image):
    tree, _ = image
    bundle = tree / "run/docker/libcontainerd" / WEB
    (bundle / "config.json").unlink()
    (bundle / "init-stdout").unlink()
    (bundle / "init-stdout").write_text("")
    doc = scan("--image-root", str(tree))
    messages = [f["message"] for c in doc["containers"] if c["id"] == WEB for f in c["findings"]]
    assert any("config.json" in m for m in messages) and any("init-stdout" in m for m in messages)
    assert "H010" in codes(doc, WEB) and "H010" not in codes(doc, WORKER)


def test_bundle_exists_as_os_stat_says_from_one_listing(image):
    """containerd 0.2.9 drops a container whose bundle os.Stat cannot find; a bundle that is a
    file still stats (kept, nothing to list), a dangling link does not (dropped)."""
    tree, _ = image
    bundles = tree / "run/docker/libcontainerd"
    shutil.rmtree(bundles / WEB)
    (bundles / WEB).write_text("not a dir")
    shutil.rmtree(bundles / WORKER)
    os.symlink("nowhere", bundles / WORKER)
    doc = scan("--image-root", str(tree))
    would = {c["id"]: c["containerd_would"] for c in doc["containers"]}
    assert "R003" not in codes(doc, WEB) and "H010" not in codes(doc, WEB)
    assert would[WORKER] == "drop-container" and "R003" in codes(doc, WORKER)
    assert "R003" not in codes(doc, CRON) and would[CRON] != "drop-container"


def _runc_state(runc_root, cid, pid, start):
    (runc_root / cid).mkdir(parents=True)
    (runc_root / cid / "state.json").write_text(json.dumps({"id": cid, "init_process_pid": pid,
                                                            "init_process_start": start}))


@pytest.mark.parametrize("pid, start, finding", [
    (30857, 194198, False), (30857, "194198", False),  # a number in new runc, a string in old
    (30858, 194198, True), (30857, "194199", True), (30857, None, True)])
def test_runc_state_cross_check(reference, tmp_path, pid, start, finding):
    runc = tmp_path / "runc"
    _runc_state(runc, WEB, pid, start)
    doc = scan(str(reference / "root"), "--proc-root", str(reference / "proc"), "--runc-root", str(runc))
    assert ("H011" in codes(doc, WEB)) is finding
    assert "H011" not in codes(doc, WORKER)  # runc has no state for it: nothing to compare
    assert "H014" not in codes(doc, WORKER)  # its init has exited: a missing runc state says nothing


def _fake(tmp_path, name, *args):
    link = tmp_path / name
    os.symlink(shutil.which("sleep"), link)
    return subprocess.Popen([str(link), *args])


def test_docker_containerd_pid(reference, tmp_path):
    pid_file = reference / "docker-containerd.pid"  # beside the root, <reference>/root
    root = str(reference / "root")
    dead = subprocess.Popen(["true"])
    dead.wait()
    pid_file.write_text(str(dead.pid))
    assert "H007" in codes(scan(root))
    stranger = _fake(tmp_path, "not-a-daemon", "1000")
    daemon = _fake(tmp_path, "docker-containerd", "1000")
    try:
        pid_file.write_text(str(stranger.pid))
        assert "H008" in codes(scan(root))
        pid_file.write_text(str(daemon.pid))
        assert "H009" in codes(scan(root))
        pid_file.write_text("garbage")
        assert "H007" in codes(scan(root))
    finally:
        for p in (stranger, daemon):
            p.kill()
            p.wait()


@pytest.mark.parametrize("flags, on_root", [
    ("--state {root}", True),  # containerd 1.x/2.x's flag
    ("--state={root}/", True),
    ("--config {config}", True),  # the config's `state`
    ("-c config.toml", True),  # relative to the daemon's cwd
    ("--config {other_config}", False),  # its state is elsewhere
    ("--config {broken_config}", False),  # not TOML: the default, /run/containerd
    ("--state {other} --config {config}", False),  # the flag wins over the config
    ("--state {link}", True),  # another path to the same dir: the dir is what counts
    ("--state link", True),  # relative to the daemon's cwd, through a link
])
def test_a_containerd_1x_daemon_is_found_by_its_state_flag_or_config(reference, tmp_path, flags, on_root):
    from procs import fake_containerd

    root = reference / "root"
    config, other_config, broken_config = (tmp_path / n for n in ("config.toml", "other.toml", "broken.toml"))
    config.write_text(f'version = 2\nroot = "/var/lib/containerd"\nstate = "{root}"\n')
    other_config.write_text(f'version = 2\nstate = "{tmp_path}"\n')
    broken_config.write_text(f'state = "{root}\n')
    (tmp_path / "link").symlink_to(root)
    args = flags.format(root=root, config=config, other_config=other_config, broken_config=broken_config,
                        other=tmp_path, link=tmp_path / "link").split()
    daemon = fake_containerd(tmp_path / "bin", *args, cwd=tmp_path)
    try:
        doc = scan(str(root))
        said = [f["message"] for f in doc["findings"] if f["code"] == "H009"]
        assert bool(said) is on_root and all(f"pid {daemon.pid}" in m for m in said)
    finally:
        daemon.kill()
        daemon.wait()


@pytest.mark.emits("H016")
def test_a_daemon_whose_state_dir_cannot_be_read_is_neither_on_the_root_nor_off_it(tmp_path):
    """Run as nobody, a root-owned daemon's root and cwd cannot be read: whether it runs on the
    root cannot be told (H016), never assumed either way (no H009)."""
    import tempfile

    from procs import fake_containerd
    from unprivileged import scan_as_nobody

    if os.geteuid() != 0:
        pytest.skip("needs root to start a root-owned daemon and then become an unprivileged user")
    top = tempfile.mkdtemp(prefix="recover-unpriv-", dir="/tmp")
    try:
        os.chmod(top, 0o755)
        root = Path(top) / "empty"
        root.mkdir()
        daemon = fake_containerd(tmp_path / "bin", "--state", str(root))
        elsewhere = fake_containerd(tmp_path / "bin", "--state", str(tmp_path / "another-root"))
        try:
            doc = scan_as_nobody(str(root), "/proc")
        finally:
            for p in (daemon, elsewhere):
                p.kill()
                p.wait()
        said = {f["code"]: f["message"] for f in doc["findings"]}
        assert "H009" not in said and f"pid {daemon.pid}" in said["H016"]
        # a daemon whose state dir names another path here is another root's: not said at all
        assert not any(f"pid {elsewhere.pid}" in f["message"] for f in doc["findings"])
    finally:
        shutil.rmtree(top)


def test_orphan_shim_has_a_start_time_and_an_age(tmp_path):
    c = "ab" * 32
    with RootBuilder(tmp_path / "root") as b:
        live = b.start_process(c, "init")
        shutil.rmtree(live.dir)
        doc = scan(str(b.root))
        (o,) = doc["orphan_shims"]
        assert (o["pid"], o["container"], o["process"], o["state"]) == (live.shim.pid, c, "init", "alive")
        assert o["reason"] == "its process dir is missing"
        assert o["started"] > 1e9 and 0 <= o["age_s"] < 60
        table = runner.invoke(app, ["scan", str(b.root)]).stdout
        assert f"orphan shim: pid {live.shim.pid}" in table and "s old" in table
        narrow = runner.invoke(app, ["scan", str(b.root)], env={"COLUMNS": "40"}).stdout
        (start,) = [i for i, line in enumerate(narrow.splitlines()) if line.startswith("orphan shim: ")]
        said = narrow.splitlines()[start:start + 3]
        assert all(len(line) <= 40 for line in said) and said[1].startswith("    "), said


def test_orphan_shim_whose_process_already_has_an_exit_status(tmp_path):
    c = "ef" * 32
    with RootBuilder(tmp_path / "root") as b:
        live = b.start_process(c, "init")
        live.stop_shim()  # hung: it will never reap its child nor record its exit
        live.kill_child()
        live.wait_state("Z")
        (live.dir / "exitStatus").write_bytes(b"137")  # recorded by someone else, yet the shim lives on
        doc = scan(str(b.root))
        p = doc["containers"][0]["processes"][0]
        assert p["verdict"] == "exited"
        (o,) = doc["orphan_shims"]
        assert (o["pid"], o["state"]) == (live.shim.pid, "stopped")
        assert o["reason"] == "exitStatus records its process's exit, or its pid file names another process"
