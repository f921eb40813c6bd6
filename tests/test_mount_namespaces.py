"""One host, many mount namespaces: a process belongs to a root only when the dir it works in IS
that root's dir (device and inode), never because a path string says so.

A state dir S on the host holds one crash leftover (`hostns/t1`: its shim and socket gone, its
init alive and orphaned).  In a private mount namespace a tmpfs is mounted over the same path S and
holds `other/ns2box`, whose shim (the real argv, its cwd the bundle) and a daemon `containerd
--state S` run there: the same paths, another root.  The same namespace also binds the host's S at
another path and runs there the live shim of `hostns/t3`, a task of S: another path in another
namespace, the same root.
Needs root (mount namespaces); skipped otherwise.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from procs import named_process
from typer.testing import CliRunner

from recover.builders import become_subreaper
from recover.cli import app
from recover.generations.runtime_v2.builder import TaskBuilder
from recover.generations.runtime_v2.reader import TASKS_DIR

runner = CliRunner()
POSE = Path(__file__).with_name("pose.py")

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                                reason="needs root and unshare(1): private mount namespaces")


@pytest.fixture(scope="module", autouse=True)
def subreaper():
    become_subreaper()  # the orphaned init of t1 comes back here, as to systemd


class Namespace:
    """A private mount namespace held by a shell: a tmpfs over `over`, and `bind` mounted at
    `bound_at`; `pose()` starts a process with a given argv and cwd in it."""

    def __init__(self, over: Path, bind: Path, bound_at: Path):
        script = (f"set -e; mkdir -p {bound_at}; mount --bind {bind} {bound_at}; "
                  f"mount -t tmpfs tmpfs {over}; echo ready; exec sleep 3600")
        self.holder = subprocess.Popen(["unshare", "-m", "--propagation", "private", "--", "/bin/sh", "-c", script],
                                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, start_new_session=True)
        assert self.holder.stdout.readline() == b"ready\n", "the mount namespace could not be set up"
        self.posers: list[subprocess.Popen] = []

    def run(self, *argv: str) -> None:
        subprocess.run(["nsenter", "-t", str(self.holder.pid), "-m", "--", *argv], check=True)

    def pose(self, argv: list[str], cwd: str) -> int:
        """A process showing `argv`, working in `cwd` (a path inside the namespace)."""
        p = subprocess.Popen(["nsenter", "-t", str(self.holder.pid), "-m", "--", "/bin/sh", "-c",
                              'cd "$0" && exec "$@"', cwd, sys.executable, str(POSE), *argv],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, start_new_session=True)
        self.posers.append(p)
        assert p.stdout.readline() == b"posing\n"
        return p.pid

    def close(self) -> None:
        for p in [*self.posers, self.holder]:
            p.kill()
            p.wait()


@pytest.fixture
def hosts(tmp_path):
    """(builder of S with hostns/t1 crashed and hostns/t3's bundle, the namespace, ns2box's shim pid,
    the namespace's daemon pid, t3's shim pid)."""
    with TaskBuilder(tmp_path / "top", grpc_address=str(tmp_path / "top" / "state" / "containerd.sock")) as b:
        t1 = b.start_task("hostns", "t1", options={"root": str(b.runc_root)})  # as guard finds runc's state
        t1.shim.kill()
        t1.shim.remove_socket()
        b.write_bundle("hostns", "t3")  # its shim runs in the namespace; no pid file names a process
        elsewhere = tmp_path / "elsewhere"
        ns = Namespace(over=b.state, bind=b.state, bound_at=elsewhere)
        try:
            # inside: S is a fresh tmpfs (another root at the same path), and the host's S is at `elsewhere`
            other = b.state / TASKS_DIR / "other" / "ns2box"
            ns.run("mkdir", "-p", str(other))
            grpc = str(b.state / "containerd.sock")
            ns2box = ns.pose(["containerd-shim-runc-v2", "-namespace", "other", "-id", "ns2box", "-address", grpc],
                             cwd=str(other))
            daemon = ns.pose(["containerd", "--state", str(b.state)], cwd="/")
            # t3's shim, working in the host's S through the bind mount
            t3_shim = ns.pose(["containerd-shim-runc-v2", "-namespace", "hostns", "-id", "t3", "-address", grpc],
                              cwd=str(elsewhere / TASKS_DIR / "hostns" / "t3"))
            yield b, ns, ns2box, daemon, t3_shim
        finally:
            ns.close()


def scan(root: Path, *args: str) -> dict:
    result = runner.invoke(app, ["scan", str(root), "-f", "json", *args])
    assert result.exit_code == 0, result.output
    return orjson.loads(result.stdout)


def pids_named(value) -> set[int]:
    """Every value of a "pid" key anywhere in a JSON document."""
    if isinstance(value, dict):
        return {v for k, v in value.items() if k == "pid" and isinstance(v, int)} | {
            p for v in value.values() for p in pids_named(v)}
    if isinstance(value, list):
        return {p for v in value for p in pids_named(v)}
    return set()


def pids_said(doc: dict) -> set[int]:
    """Every pid a finding's message names ("pid N", "(pid N)")."""
    messages = [f["message"] for f in doc["findings"]] + [
        f["message"] for c in doc["containers"] for f in (*c["findings"], *(x for p in c["processes"]
                                                                             for x in p["findings"]))]
    return {int(m) for message in messages for m in re.findall(r"\bpid (\d+)", message)}


def codes(doc: dict) -> list[str]:
    return [f["code"] for f in doc["findings"]]


def test_the_same_path_in_another_mount_namespace_is_another_root(hosts):
    b, _, ns2box, daemon, _ = hosts
    doc = scan(b.state, "--runc-root", str(b.runc_root))
    assert "ns2box" not in orjson.dumps(doc).decode()
    assert ns2box not in pids_named(doc) and ns2box not in pids_said(doc)
    assert "H009" not in codes(doc) and "H003" not in codes(doc)
    assert doc["orphan_shims"] == []
    keys = {(c["namespace"], c["id"]): c for c in doc["containers"]}
    assert set(keys) == {("hostns", "t1"), ("hostns", "t3")}
    assert keys["hostns", "t1"]["containerd_would"] == "kill-live-processes"
    assert [p["verdict"] for p in keys["hostns", "t1"]["processes"]] == ["orphaned"]


def test_another_path_to_this_root_in_another_mount_namespace_is_this_root(hosts):
    """t3's shim works in S through a bind mount at another path, in another namespace: it is t3's
    shim, alive, and no orphan; when its bundle is gone, it is an orphan shim of S (H003)."""
    b, _, _, _, t3_shim = hosts
    doc = scan(b.state, "--runc-root", str(b.runc_root))
    (t3,) = [c for c in doc["containers"] if c["id"] == "t3"]
    assert (t3["shim"]["pid"], t3["shim"]["state"]) == (t3_shim, "alive")
    assert doc["orphan_shims"] == [] and "H003" not in codes(doc)

    shutil.rmtree(b.bundle("hostns", "t3"))  # the shim's cwd is now a removed dir: still in S
    doc = scan(b.state, "--runc-root", str(b.runc_root))
    assert [(o["pid"], o["container"]) for o in doc["orphan_shims"]] == [(t3_shim, "hostns/t3")]
    assert [f["code"] for f in doc["findings"] if f"pid {t3_shim}" in f["message"]] == ["H003"]


def test_guard_judges_a_root_whose_path_another_namespaces_daemon_names(hosts, tmp_path):
    b, _, _, daemon, _ = hosts
    args = ["guard", str(b.state), "--policy", "block", "--report-dir", str(tmp_path / "reports"),
            "--run-dir", str(tmp_path / "run")]
    blocked = runner.invoke(app, args)
    assert blocked.exit_code == 1, blocked.output
    assert "not judged" not in blocked.stderr and f"pid {daemon}" not in blocked.stderr
    assert "hazard R101 hostns/t1" in blocked.stderr

    # the same daemon in the host's mount namespace, on S: guard does not judge, as a daemon runs on it
    host_daemon = named_process(tmp_path / "bin", "containerd", "--state", str(b.state))
    try:
        passed = runner.invoke(app, args)
        assert passed.exit_code == 0, passed.output
        assert f"pid {host_daemon.pid}" in passed.stderr and "not judged" in passed.stderr
        assert "H009" in codes(scan(b.state, "--runc-root", str(b.runc_root)))
    finally:
        host_daemon.kill()
        host_daemon.wait()


def test_a_root_reached_through_proc_pid_root_is_that_namespaces_root(hosts):
    """/proc/<pid>/root/S is the namespace's S (the tmpfs), not the host's S whose path it names:
    read as it is, its shim (in the namespace) found by identity; never the host's dir instead."""
    b, ns, ns2box, _, _ = hosts
    through = f"/proc/{ns.holder.pid}/root{b.state}"
    doc = scan(Path(through))
    assert doc["root"] == through
    (c,) = doc["containers"]
    assert (c["namespace"], c["id"], c["shim"]["pid"], c["shim"]["state"]) == ("other", "ns2box", ns2box, "alive")
    assert doc["orphan_shims"] == []

    # the paths its files name are read in that namespace too: a socket that is there only, and
    # runc's state under a --runc-root that is there only
    sock = b.state / "s" / "ns2box.sock"
    runc_root = b.state / "runc-inside"
    ns.run(sys.executable, "-c", "import os, socket, sys; os.makedirs(os.path.dirname(sys.argv[1])); "
           "socket.socket(socket.AF_UNIX).bind(sys.argv[1])", str(sock))
    ns.run("mkdir", "-p", str(runc_root / "other" / "ns2box"))
    ns.run("sh", "-c", """printf '{"init_process_pid": 1, "init_process_start": 1}' > "$0" """,
           str(runc_root / "other" / "ns2box" / "state.json"))
    ns.run("sh", "-c", f'printf %s "unix://{sock}" > "$0"', str(b.state / TASKS_DIR / "other" / "ns2box" / "address"))
    assert not sock.exists() and not runc_root.exists()  # on the host, S holds neither
    doc = scan(Path(through), "--runc-root", str(runc_root))
    (c,) = doc["containers"]
    assert (c["shim"]["socket"], c["shim"]["socket_state"]) == (f"{through}/s/ns2box.sock", "present")
    assert (c["runc_state"]["pid"], c["runc_state"]["problem"]) == (1, None), c["runc_state"]

    # every way of reaching it leads to the same namespace (trial 3: only the literal path did):
    # a link to the root, a thread's root, a link to the namespace's /
    holder = ns.holder.pid
    link, ns_link = b.top / "rootlink", b.top / "nslink"
    link.symlink_to(through)
    ns_link.symlink_to(f"/proc/{holder}/root")
    for form in (str(link), f"/proc/{holder}/task/{holder}/root{b.state}", f"{ns_link}{b.state}"):
        doc = scan(Path(form), "--runc-root", str(runc_root))
        (c,) = doc["containers"]
        assert (c["shim"]["socket_state"], c["runc_state"]["problem"]) == ("present", None), form


def test_a_relative_root_from_another_namespaces_dir_is_a_usage_error(hosts, monkeypatch):
    """From a working dir in another mount namespace, a relative path names a dir whose own path
    means another dir here: which namespace cannot be told from it; a usage error says how to name it."""
    b, ns, _, _, _ = hosts
    monkeypatch.chdir(f"/proc/{ns.holder.pid}/root{b.state.parent}")
    result = runner.invoke(app, ["scan", b.state.name])
    assert result.exit_code == 2 and "another mount namespace" in result.stderr and "/proc/PID/root" in result.stderr
