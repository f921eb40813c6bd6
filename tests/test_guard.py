"""`recover guard` (issue 14) driven as systemd drives it: the drop-in that `--install` writes is
read back, its ExecStartPre= command line split as systemd splits it and run as a separate process
(systemd's PATH, cwd /) against real roots: containerd 0.2 roots with real processes under the
stand-in shim, and the real containerd 1.6 captures.  Exit codes per policy, reports written and
rotated, the one-shot override, injected crashes and hangs, a daemon running on the root, a root
left by a previous boot.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from conftest import record_emitted
from procs import dead_pid, fake_containerd
from reference_v2 import extract, state_dir

from recover.builders import become_subreaper
from recover.fsread import filesystem_type
from recover.generations.containerd_0_2.builder import RootBuilder

RUNNING, LIVE_EXIT, ZOMBIE, ORPHAN, BROKEN = ("%02d" % n + "a" * 62 for n in range(1, 6))
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SLOW = 60  # s: a bound no run comes near, never a timing assertion


@pytest.fixture(scope="module", autouse=True)
def subreaper():
    become_subreaper()


def recover_command() -> list[str]:
    """This venv's console script, as an operator would run it; else the interpreter with -m."""
    script = Path(sys.executable).parent / "recover"
    return [str(script)] if script.exists() else [sys.executable, "-m", "recover"]


def recover(*args, cwd=None, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([*recover_command(), *map(str, args)], capture_output=True, text=True, timeout=SLOW,
                          cwd=cwd, env=env)


class Dirs:
    """Where one test's guard writes: a systemd dir, the report dir, the run dir (override)."""

    def __init__(self, tmp_path: Path):
        self.systemd = tmp_path / "systemd"
        self.reports = tmp_path / "reports"
        self.run = tmp_path / "run-recover"

    def install(self, *args, unit="containerd.service") -> tuple[Path, str]:
        result = recover("guard", "--install", "--unit", unit, "--systemd-dir", self.systemd,
                         "--report-dir", self.reports, "--run-dir", self.run, *args)
        assert result.returncode == 0, result.stderr
        path = self.systemd / f"{unit}.d" / "50-recover.conf"
        assert f"wrote {path}" in result.stdout and "systemctl daemon-reload" in result.stdout
        return path, path.read_text()

    def reports_now(self) -> list[Path]:
        return sorted(self.reports.glob("guard-*.json")) if self.reports.exists() else []

    @property
    def override(self) -> Path:
        return self.run / "guard-override"


@pytest.fixture
def dirs(tmp_path) -> Dirs:
    return Dirs(tmp_path)


def exec_start_pre(text: str) -> list[str]:
    """The ExecStartPre= command as systemd splits it: words, double quotes with backslash escapes,
    then `%%` and `$$` unescaped (no other specifier or variable is written)."""
    (line,) = [l for l in text.splitlines() if l.startswith("ExecStartPre=")]
    return [w.replace("%%", "%").replace("$$", "$") for w in shlex.split(line.split("=", 1)[1])]


def run_unit(text: str, *extra, fault: str | None = None) -> subprocess.CompletedProcess:
    """Run the drop-in's command as systemd would: its own environment (PATH), cwd /."""
    env = {"PATH": SYSTEMD_PATH, "LANG": "C.UTF-8"}
    if fault is not None:
        env["RECOVER_GUARD_FAULT"] = fault
    return subprocess.run([*exec_start_pre(text), *map(str, extra)], capture_output=True, text=True,
                          timeout=SLOW, cwd="/", env=env)


def report_doc(path: Path) -> dict:
    doc = orjson.loads(path.read_bytes())
    record_emitted(doc)
    return doc


def hazard_codes(doc: dict) -> set[tuple[str | None, str]]:
    return {(h["container"], h["code"]) for h in doc["guard"]["hazards"]}


def slug(root: Path) -> str:
    return str(root).strip("/").replace("/", "_")  # test paths hold no other character to replace


# --- install, uninstall, systemd-analyze -----------------------------------------------------

def test_install_writes_one_exec_start_pre_line_and_uninstall_removes_exactly_it(dirs, tmp_path):
    root = tmp_path / "root"
    path, text = dirs.install("--policy", "block", "--timeout", "5", root, unit="docker.service")
    assert path == dirs.systemd / "docker.service.d" / "50-recover.conf"
    keys = [l for l in text.splitlines() if l and not l.startswith("#")]
    assert keys[0] == "[Service]" and len(keys) == 2 and keys[1].startswith("ExecStartPre=/")  # no "-": failures count
    argv = exec_start_pre(text)
    assert argv[:len(recover_command())] == recover_command() and os.access(argv[0], os.X_OK)
    assert argv[len(recover_command()):] == ["guard", "--policy", "block", "--unit", "docker.service", "--timeout",
                                            "5", "--report-dir", str(dirs.reports), "--run-dir", str(dirs.run),
                                            str(root)]
    beside = path.parent / "10-other.conf"
    beside.write_text("[Service]\nEnvironment=A=1\n")
    again = recover("guard", "--install", "--unit", "docker.service", "--systemd-dir", dirs.systemd)
    assert again.returncode == 0 and "--policy report" in path.read_text()  # its own file is replaced

    gone = recover("guard", "--uninstall", "--unit", "docker.service", "--systemd-dir", dirs.systemd)
    assert gone.returncode == 0 and f"removed {path}" in gone.stdout and "daemon-reload" in gone.stdout
    assert not path.exists() and beside.read_text() == "[Service]\nEnvironment=A=1\n"
    twice = recover("guard", "--uninstall", "--unit", "docker.service", "--systemd-dir", dirs.systemd)
    assert twice.returncode == 0 and "nothing to remove" in twice.stdout

    path.write_text("[Service]\nExecStartPre=/bin/true\n")  # the operator's own file in that place
    for action in ("--install", "--uninstall"):
        refused = recover("guard", action, "--unit", "docker.service", "--systemd-dir", dirs.systemd)
        assert refused.returncode == 4 and "not written by recover" in refused.stderr, refused.stderr
        assert path.read_text() == "[Service]\nExecStartPre=/bin/true\n"


def test_install_refuses_a_containerd_version_every_start_would_refuse(dirs, tmp_path):
    refused = recover("guard", "--install", "--containerd-version", "3.0", "--systemd-dir", dirs.systemd, tmp_path)
    assert refused.returncode == 2 and "--containerd-version 3.0: not a containerd" in refused.stderr
    assert not (dirs.systemd / "containerd.service.d").exists()


def test_install_warns_when_the_unit_does_not_start_the_daemon_of_the_root(dirs, tmp_path, reference):
    """Docker 20+ uses the system containerd: its state dir is containerd.service's to guard; a
    containerd 0.2 root is dockerd 1.11-1.13's (docker.service)."""
    state = tmp_path / "state"
    (state / "io.containerd.runtime.v2.task" / "moby").mkdir(parents=True)
    root_02 = reference / "root"
    for unit, root, warned in (("docker.service", state, "--unit containerd.service"),
                               ("containerd.service", state, None),
                               ("containerd.service", root_02, "--unit docker.service"),
                               ("docker.service", root_02, None)):
        result = recover("guard", "--install", "--unit", unit, "--systemd-dir", dirs.systemd, root)
        assert result.returncode == 0, result.stderr
        assert (dirs.systemd / f"{unit}.d" / "50-recover.conf").exists()  # installed all the same
        if warned is None:
            assert "warning" not in result.stderr
        else:
            assert "recover: warning:" in result.stderr and warned in result.stderr, result.stderr


@pytest.mark.parametrize("args, message", [
    (("--policy", "always"), "--policy must be one of"),
    (("--kill-orphans",), "--kill-orphans goes with --policy repair"),
    (("--timeout", "0"), "--timeout"),
    (("--install", "--unit", "docker"), "not a service unit"),
    (("--install", "--proc-root", "/proc"), "cannot be given with it"),
])
def test_usage_errors(dirs, args, message):
    result = recover("guard", "--systemd-dir", dirs.systemd, *args)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert not dirs.systemd.exists()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed "
                    "(Debian package systemd)")
def test_the_drop_in_passes_systemd_analyze_verify(dirs, tmp_path):
    units = dirs.systemd
    units.mkdir()
    (units / "containerd.service").write_text(f"[Unit]\nDescription=containerd\n[Service]\n"
                                              f"ExecStart={shutil.which('true')}\n")

    def verify() -> subprocess.CompletedProcess:
        return subprocess.run(["systemd-analyze", "verify", str(units / "containerd.service")], capture_output=True,
                              text=True, timeout=SLOW, env={**os.environ, "SYSTEMD_UNIT_PATH": f"{units}:"})

    command = recover_command()
    if len(command) == 1:  # recover installed under a path with a space and a %: quoted and escaped
        odd = tmp_path / "my tools %d"
        odd.mkdir()
        (odd / "recover").symlink_to(command[0])
        command = [str(odd / "recover")]
    result = subprocess.run([*command, "guard", "--install", "--policy", "block", "--systemd-dir", str(units),
                             "--report-dir", str(tmp_path / "a dir")], capture_output=True, text=True, timeout=SLOW)
    assert result.returncode == 0, result.stderr
    checked = verify()
    assert checked.returncode == 0 and "50-recover.conf" not in checked.stderr, checked.stderr
    # the control: verify does read the drop-in, and a command it cannot find fails it
    dropin = units / "containerd.service.d" / "50-recover.conf"
    text = dropin.read_text()
    wrong = [str(tmp_path / "no-such-recover")] + ([command[0]] if command != recover_command() else [])
    for executable in wrong:  # the second, when there is one: the odd path neither quoted nor escaped
        dropin.write_text("\n".join(f"ExecStartPre={executable} guard" if l.startswith("ExecStartPre=") else l
                                     for l in text.splitlines()) + "\n")
        assert verify().returncode != 0, executable


# --- 0.2 roots with real processes -----------------------------------------------------------

@pytest.fixture
def hazardous(tmp_path):
    """A healthy container, one whose exitStatus says a live process exited (R010: containerd would
    take it and leak the process), a zombie its stopped shim never reaps (R009), and an orphan."""
    with RootBuilder(tmp_path / "root") as b:
        b.start_process(RUNNING, "init")
        live = b.start_process(LIVE_EXIT, "init")
        (live.dir / "exitStatus").write_bytes(b"0")
        zombie = b.start_process(ZOMBIE, "init")
        zombie.stop_shim()
        zombie.kill_child(signal.SIGKILL)
        zombie.wait_state("Z")
        orphan = b.start_process(ORPHAN, "init")
        orphan.kill_shim()  # its child comes back to this subreaper: ppid is not 1
        yield b, orphan


def test_policies_on_a_root_with_hazards(hazardous, dirs):
    b, orphan = hazardous
    _, report_line = dirs.install("--policy", "report", b.root)
    _, block_line = dirs.install("--policy", "block", b.root)

    reported = run_unit(report_line)
    assert reported.returncode == 0, reported.stderr
    (first,) = dirs.reports_now()
    doc = report_doc(first)
    assert doc["schema"] == "recover.scan/1" and doc["root"] == str(b.root)
    assert doc["guard"]["decision"] == "pass" and doc["guard"]["reason"] == "hazards-reported"
    assert {(LIVE_EXIT, "R010"), (ZOMBIE, "R009")} <= hazard_codes(doc)
    assert not {c for c, _ in hazard_codes(doc)} & {RUNNING}
    assert f"hazard R010 {LIVE_EXIT}/init" in reported.stderr and "the start goes on" in reported.stderr

    blocked = run_unit(block_line)
    assert blocked.returncode == 1, blocked.stderr
    assert f"hazard R010 {LIVE_EXIT}/init" in blocked.stderr and "what to do: exitStatus holds" in blocked.stderr
    assert "BLOCKED" in blocked.stderr and f"touch {dirs.override}" in blocked.stderr
    assert report_doc(dirs.reports_now()[-1])["guard"]["decision"] == "block"

    dirs.run.mkdir()
    dirs.override.touch()  # what the message says to do: one start goes on
    overridden = run_unit(block_line)
    assert overridden.returncode == 0, overridden.stderr
    assert "overridden once" in overridden.stderr and not dirs.override.exists()
    assert report_doc(dirs.reports_now()[-1])["guard"]["reason"] == "overridden"
    assert run_unit(block_line).returncode == 1  # once only
    assert len(dirs.reports_now()) == 4


def test_repair_policy_repairs_then_reports_what_remains(hazardous, dirs):
    b, orphan = hazardous
    _, line = dirs.install("--policy", "repair", b.root)
    result = run_unit(line)
    assert result.returncode == 0, result.stderr
    assert (b.root / ZOMBIE / "init" / "exitStatus").read_bytes() == b"137"  # the zombie's status, from stat
    assert (b.root / LIVE_EXIT / "init" / "exitStatus").read_bytes() == b"0"  # a valid status is never overwritten
    assert not (b.root / ORPHAN / "init" / "exitStatus").exists() and orphan.state() not in (None, "Z")
    assert (b.root.parent / "root.recover-journal.jsonl").exists()
    doc = report_doc(dirs.reports_now()[-1])
    assert ("write-exit-status", "applied") in {(a["action"], a["result"]) for a in doc["guard"]["repairs"]}
    assert (LIVE_EXIT, "R010") in hazard_codes(doc) and (ZOMBIE, "R009") not in hazard_codes(doc)
    assert doc["guard"]["decision"] == "pass" and "repair: applied write-exit-status" in result.stderr


def test_repair_policy_kills_orphans_only_when_the_line_says_so(hazardous, dirs):
    b, orphan = hazardous
    _, line = dirs.install("--policy", "repair", "--kill-orphans", b.root)
    assert "--kill-orphans" in exec_start_pre(line)
    result = run_unit(line)
    assert result.returncode == 0, result.stderr
    assert (b.root / ORPHAN / "init" / "exitStatus").read_bytes() == b"137"
    assert orphan.state() in (None, "Z")  # killed (a zombie until this subreaper reaps it)


def test_a_healthy_root_passes_block(tmp_path, dirs):
    with RootBuilder(tmp_path / "root") as b:
        b.start_process(RUNNING, "init")
        _, line = dirs.install("--policy", "block", b.root)
        result = run_unit(line)
        assert result.returncode == 0, result.stderr
        assert "no hazard" in result.stderr
        assert report_doc(dirs.reports_now()[-1])["guard"]["reason"] == "no-hazard"


def test_drop_container_blocks_unless_the_root_is_from_a_previous_boot(tmp_path, dirs):
    if filesystem_type(str(tmp_path)) in (None, "tmpfs"):
        pytest.skip("the test root is on a tmpfs: previous boot is never concluded there")
    with RootBuilder(tmp_path / "root") as b:
        b.container(BROKEN, state=b'{"bundle": "/x", "runt')  # cut by a power loss: containerd drops the dir
        b.write_process(BROKEN, "init", pid=dead_pid(), starttime=4242)
        live = b.start_process(RUNNING, "init")
        _, line = dirs.install("--policy", "block", b.root)
        blocked = run_unit(line)
        assert blocked.returncode == 1 and f"hazard R001 {BROKEN}" in blocked.stderr, blocked.stderr
        btime = int(next(l for l in open("/proc/stat") if l.startswith("btime")).split()[1])
        for pid_file in (b.root / BROKEN / "init" / "pid", live.dir / "pid"):
            os.utime(pid_file, (btime - 3600, btime - 3600))  # written an hour before this boot
        passed = run_unit(line)
        assert passed.returncode == 0, passed.stderr
        assert "from a previous boot" in passed.stderr
        doc = report_doc(dirs.reports_now()[-1])
        assert doc["guard"]["reason"] == "previous-boot" and (BROKEN, "R001") in hazard_codes(doc)


def test_no_root_and_not_a_root(tmp_path, dirs):
    _, line = dirs.install("--policy", "block", tmp_path / "absent")
    result = run_unit(line)
    assert result.returncode == 0 and "nothing to judge" in result.stderr, result.stderr
    other = tmp_path / "other"
    (other / "a" / "b").mkdir(parents=True)
    for policy, code in (("report", 0), ("block", 2)):
        _, line = dirs.install("--policy", policy, other)
        result = run_unit(line)
        assert result.returncode == code and "not a containerd state root" in result.stderr, result.stderr
        assert "not judged" in result.stderr
    assert dirs.reports_now() == []


def test_reports_are_rotated_per_root(tmp_path, dirs):
    root = tmp_path / "root"
    root.mkdir()
    dirs.reports.mkdir()
    old = [dirs.reports / f"guard-2000010{n}T000000.000000Z-{slug(root)}.json" for n in range(1, 5)]
    others = [dirs.reports / "guard-20000101T000000.000000Z-run_containerd.json", dirs.reports / "notes.txt"]
    stale, fresh, theirs = (dirs.reports / f".guard-{n}-guard-20000101T000000.000000Z-{s}.json.tmp"
                            for n, s in ((1, slug(root)), (2, slug(root)), (3, "x-" + slug(root))))
    others.append(theirs)
    for p in (*old, *others, stale, fresh):
        p.write_text("{}")
    for p in (stale, theirs):
        os.utime(p, (1, 1))  # left by a run that died long ago; `fresh` may be another run's, writing
    _, line = dirs.install("--keep", "3", root)
    for _ in range(2):
        assert run_unit(line).returncode == 0
    mine = sorted(p.name for p in dirs.reports.glob(f"guard-*-{slug(root)}.json"))
    assert len(mine) == 3 and mine[0] == old[-1].name
    for name in mine[1:]:
        assert name > "guard-2001" and report_doc(dirs.reports / name)["guard"]["policy"] == "report"
    assert all(p.exists() for p in others) and fresh.exists() and not stale.exists()
    assert (dirs.reports / mine[-1]).stat().st_mode & 0o077 == 0  # the root's state: root's to read


# --- recover failing -------------------------------------------------------------------------

@pytest.mark.parametrize("fault", ["crash", "hang"])
def test_a_bug_or_a_hang_never_blocks_a_start_under_report(tmp_path, dirs, fault):
    with RootBuilder(tmp_path / "root") as b:
        b.start_process(RUNNING, "init")
        _, report_line = dirs.install("--policy", "report", "--timeout", "1", b.root)
        _, block_line = dirs.install("--policy", "block", "--timeout", "1", b.root)
        said = {"crash": "internal error", "hang": "timed out after 1 s"}[fault]
        reported = run_unit(report_line, fault=fault)
        assert reported.returncode == 0 and said in reported.stderr and "the start goes on" in reported.stderr
        blocked = run_unit(block_line, fault=fault)
        assert blocked.returncode == 3 and said in blocked.stderr, blocked.stderr
        assert f"touch {dirs.override}" in blocked.stderr  # how to start anyway
        if fault == "crash":
            assert "Traceback" in reported.stderr and "injected crash" in reported.stderr
        assert not dirs.reports.exists()  # no report, and nothing half-written


# --- a daemon on the root --------------------------------------------------------------------

@pytest.mark.parametrize("flags", ["--state-dir {root}", "-c config.toml"])  # 0.2; 1.x (tests/test_around.py)
def test_guard_does_not_judge_while_a_daemon_runs_on_the_root(hazardous, dirs, tmp_path, flags):
    b, _ = hazardous
    config = tmp_path / "config.toml"
    config.write_text(f'version = 2\nroot = "/var/lib/containerd"\nstate = "{b.root}"\n')
    daemon = fake_containerd(tmp_path / "bin", *flags.format(root=b.root, config=config).split(), cwd=tmp_path)
    try:
        _, line = dirs.install("--policy", "block", b.root)
        result = run_unit(line)
        assert result.returncode == 0, result.stderr
        assert f"pid {daemon.pid}" in result.stderr and "not judged" in result.stderr
        assert dirs.reports_now() == []
    finally:
        daemon.kill()
        daemon.wait()


def test_a_daemon_on_another_state_dir_is_not_on_the_root(hazardous, dirs, tmp_path):
    b, _ = hazardous
    config = tmp_path / "config.toml"
    config.write_text(f'version = 2\nstate = "{tmp_path / "elsewhere"}"\n')
    daemon = fake_containerd(tmp_path / "bin", "--config", str(config))
    try:
        _, line = dirs.install("--policy", "block", b.root)
        assert run_unit(line).returncode == 1
    finally:
        daemon.kill()
        daemon.wait()


# --- containerd 1.6 captures (runtime-v2) ----------------------------------------------------

def capture_args(top: Path) -> list[str]:
    return ["--image-root", str(top / "before" / "root"), "--proc-root", str(top / "before" / "proc")]


@pytest.mark.parametrize("name, blocked", [("a", False), ("b", True)])
def test_runtime_v2_captures(tmp_path, dirs, name, blocked):
    top = extract(name, tmp_path / "capture")
    root = state_dir(top)
    _, line = dirs.install("--policy", "block", root)
    result = run_unit(line, *capture_args(top))
    assert result.returncode == (1 if blocked else 0), result.stderr
    doc = report_doc(dirs.reports_now()[-1])
    assert doc["layout"] == "containerd-runtime-v2"
    if blocked:
        assert {code for _, code in hazard_codes(doc)} == {"R101"} and "hazard R101 default/" in result.stderr
    else:
        assert hazard_codes(doc) == set()

    _, repair_line = dirs.install("--policy", "repair", root)
    before = sorted(p.name for p in root.parent.iterdir())
    repaired = run_unit(repair_line, *capture_args(top))
    assert repaired.returncode == 0, repaired.stderr
    assert f"no repair: {root} is read inside" in repaired.stderr  # a capture: never written in
    assert sorted(p.name for p in root.parent.iterdir()) == before  # no journal, no lock: nothing written
