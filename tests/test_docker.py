"""Docker's record beside a runtime-v2 state dir (recover/generations/runtime_v2/docker): what
dockerd decides on its own restart, after containerd's restore, per container; its names; its
containers with no task.  Real processes under stand-in shims, Docker's files as dockerd 20.10
writes them.  What a real dockerd then does is tests/test_docker_restart.py's."""

from __future__ import annotations

import hashlib
import json
import signal

import pytest
from typer.testing import CliRunner

from recover.builders import become_subreaper
from recover.cli import app
from recover.generations.runtime_v2.builder import TaskBuilder
from recover.generations.runtime_v2.docker.builder import write_docker_record

runner = CliRunner()
NS = "moby"


def cid(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


@pytest.fixture(scope="module", autouse=True)
def subreaper():
    become_subreaper()


@pytest.fixture
def host(tmp_path):
    """A Docker host: tasks in namespace moby, Docker's record of each, daemon.json (live-restore off)."""
    with TaskBuilder(tmp_path / "containerd") as b:
        data_root = tmp_path / "docker"
        config = tmp_path / "daemon.json"
        config.write_text("{}")
        web = b.start_task(NS, cid("web"))
        write_docker_record(data_root, cid("web"), "web", pid=web.init, restart_policy="always")
        db = b.start_task(NS, cid("db"))
        write_docker_record(data_root, cid("db"), "db", pid=db.init, restart_policy="no", stop_timeout=3)
        gone = b.start_task(NS, cid("gone"))
        write_docker_record(data_root, cid("gone"), "gone", pid=gone.init, restart_policy="unless-stopped")
        gone.shim.kill()
        done = b.start_task(NS, cid("done"))
        write_docker_record(data_root, cid("done"), "done", pid=done.init, restart_policy="no")
        done.kill(sig=signal.SIGTERM)  # under its live shim: 1.6 re-adopts it stopped, with the status
        write_docker_record(data_root, cid("ghost"), "ghost", pid=4194000, restart_policy="no")  # no task
        write_docker_record(data_root, cid("old"), "old", running=False, exit_code=3, restart_policy="always")
        bad = b.start_task(NS, cid("bad"))
        (write_docker_record(data_root, cid("bad"), "bad", pid=bad.init) / "config.v2.json").write_text("{not json")
        yield b, data_root, config


def scan(b, data_root, config, *args) -> dict:
    result = runner.invoke(app, ["scan", *b.scan_args(), "-f", "json", "--containerd-version", "1.6.20",
                                 "--docker-root", str(data_root), "--docker-config", str(config), *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def by_name(doc: dict) -> dict[str, dict]:
    return {c["docker"]["name"]: c for c in doc["containers"] if c.get("docker")}


def codes(c: dict) -> set[str]:
    return {f["code"] for f in c["findings"]}


@pytest.mark.emits("R201", "R202", "R203", "F202")
def test_dockerd_after_containerd_without_live_restore(host):
    doc = scan(*host)
    got = by_name(doc)
    docker = {n: (c["containerd_would"], c["docker"]["dockerd_would"], c["docker"]["exit_code"]) for n, c in got.items()}
    assert docker["web"] == ("reconnect", "stop-then-restart", None)
    # `sleep` under a stand-in shim is no pid namespace's init and has no handler: SIGTERM ends it
    assert docker["db"] == ("reconnect", "stop", 143)
    assert docker["gone"] == ("kill-live-processes", "record-exit-then-restart", None)
    assert docker["done"] == ("reconnect", "record-exit", 143)  # the status its live shim holds
    assert {"R201"} <= codes(got["web"]) and "R202" in codes(got["gone"])
    assert "3 s" in got["db"]["docker"]["why"] or got["db"]["docker"]["stop_timeout_s"] == 3
    (bad,) = [c for c in doc["containers"] if c["id"] == cid("bad")]
    assert bad["docker"]["name"] is None and bad["docker"]["dockerd_would"] is None and "F202" in codes(bad)
    top = doc["docker"]
    assert (top["live_restore"], top["namespace"], top["data_root"]) == (False, "moby", str(host[1]))
    without = {d["name"]: d for d in top["without_task"]}
    assert set(without) == {"ghost", "old"}
    assert (without["ghost"]["dockerd_would"], without["ghost"]["exit_code"], without["ghost"]["stale"]) == \
        ("record-exit", 255, True)
    assert (without["old"]["dockerd_would"], without["old"]["recorded_exit_code"]) == ("start", 3)
    assert any(f["code"] == "R203" and "ghost" in f["message"] for f in doc["findings"])


def test_live_restore_keeps_what_containerd_keeps(host):
    b, data_root, config = host
    config.write_text(json.dumps({"live-restore": True}))
    got = by_name(scan(b, data_root, config))
    assert got["web"]["docker"]["dockerd_would"] == "keep-running" and got["web"]["docker"]["live_restore"]
    assert "R201" not in codes(got["web"])
    assert got["gone"]["docker"]["dockerd_would"] == "record-exit-then-restart"  # the task is gone either way


@pytest.mark.emits("F201")
def test_an_unreadable_daemon_json_is_said_and_judged_off(host):
    b, data_root, config = host
    config.write_text("{")
    doc = scan(b, data_root, config)
    assert any(f["code"] == "F201" for f in doc["findings"]) and doc["docker"]["live_restore"] is False


def test_docker_names_select_and_explain(host):
    b, data_root, config = host
    doc = scan(b, data_root, config, "--container", "web", "--container", "/db")
    assert sorted(c["docker"]["name"] for c in doc["containers"]) == ["db", "web"]
    result = runner.invoke(app, ["explain", "web", "--root", str(b.state), "--runc-root", str(b.runc_root),
                                 "--containerd-version", "1.6.20", "--docker-root", str(data_root),
                                 "--docker-config", str(config), "-f", "json"])
    assert result.exit_code == 0, result.output
    assert cid("web") in result.stdout and "stop-then-restart" in result.stdout


def test_the_table_names_docker_containers_and_says_what_dockerd_would_do(host):
    b, data_root, config = host
    result = runner.invoke(app, ["scan", *b.scan_args(), "--containerd-version", "1.6.20", "--docker-root",
                                 str(data_root), "--docker-config", str(config)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "DOCKERD WOULD" in lines[0]
    assert any(line.startswith("web ") and "stop-then-restart" in line for line in lines)
    assert any(line.startswith("db ") and "stop (143)" in line for line in lines)
    assert any("docker container ghost" in line and "no task" in line for line in lines)


def test_no_docker_record_no_docker_output(tmp_path):
    with TaskBuilder(tmp_path / "containerd") as b:
        b.start_task(NS, cid("web"))
        result = runner.invoke(app, ["scan", *b.scan_args(), "-f", "json", "--docker-root", str(tmp_path / "none")])
        assert result.exit_code == 2 and "--docker-root" in result.stderr
        (tmp_path / "empty").mkdir()
        result = runner.invoke(app, ["scan", *b.scan_args(), "-f", "json", "--docker-root", str(tmp_path / "empty")])
        doc = json.loads(result.stdout)
        assert "docker" not in doc and not any("docker" in c for c in doc["containers"])


def test_guarding_docker_service_judges_dockerds_restore(tmp_path):
    """Before docker.service starts, containerd has restored already: a containerd hazard (a shim
    killed) does not block dockerd's start; a stopped shim dockerd would hang on does."""
    with TaskBuilder(tmp_path / "containerd") as b:
        data_root, config = tmp_path / "docker", tmp_path / "daemon.json"
        config.write_text("{}")
        gone = b.start_task(NS, cid("gone"))
        write_docker_record(data_root, cid("gone"), "gone", pid=gone.init)
        gone.shim.kill()

        def guard(unit: str):
            return runner.invoke(app, ["guard", str(b.state), "--policy", "block", "--unit", unit, "--containerd-version",
                                       "1.6.20", "--docker-root", str(data_root), "--docker-config", str(config),
                                       "--report-dir", str(tmp_path / "reports"), "--run-dir", str(tmp_path / "run")])

        assert guard("containerd.service").exit_code == 1  # R101: containerd would SIGKILL its init
        assert guard("docker.service").exit_code == 0  # dockerd records 255: said, not a hazard of its start
        hung = b.start_task(NS, cid("hung"))
        write_docker_record(data_root, cid("hung"), "hung", pid=hung.init, restart_policy="always")
        hung.shim.stop()
        result = guard("docker.service")
        assert result.exit_code == 1 and "R204" in result.stderr
        hung.shim.resume()


def test_bad_docker_files_are_findings_never_a_crash(tmp_path):
    """Empty, NUL-filled and FIFO records are F202 (the FIFO never opened); a container dir that is
    a link (out of the data root) is not read."""
    import os

    with TaskBuilder(tmp_path / "c") as b:
        data_root, config = tmp_path / "docker", tmp_path / "daemon.json"
        config.write_text("{}")
        for name, content in (("empty", b""), ("nul", b"\0" * 4096), ("fifo", None)):
            t = b.start_task(NS, cid(name))
            path = write_docker_record(data_root, cid(name), name, pid=t.init) / "config.v2.json"
            path.unlink()
            if content is None:
                os.mkfifo(path)
            else:
                path.write_bytes(content)
        outside = tmp_path / "outside"
        write_docker_record(outside, cid("linked"), "linked", pid=1)
        (data_root / "containers" / cid("linked")).symlink_to(outside / "containers" / cid("linked"))
        doc = scan(b, data_root, config)
        bad = {c["id"]: c for c in doc["containers"]}
        for name in ("empty", "nul", "fifo"):
            c = bad[cid(name)]
            assert c["docker"]["dockerd_would"] is None and "F202" in codes(c), name
        assert cid("linked") not in {d["id"] for d in doc["docker"]["without_task"]}


def test_docker_is_read_only_for_a_root_that_holds_its_namespace(tmp_path):
    """The default data root (here inside an image) belongs to a root only when that root holds
    tasks of Docker's namespace: another containerd's root never takes this host's Docker."""
    image = tmp_path / "image"
    write_docker_record(image / "var/lib/docker", cid("web"), "web", pid=1)
    with TaskBuilder(image / "c") as b:
        b.write_bundle("k8s.io", cid("pod"))

        def docker_of() -> dict | None:
            result = runner.invoke(app, ["scan", str(b.state), "--image-root", str(image), "-f", "json"])
            assert result.exit_code == 0, result.output
            return json.loads(result.stdout).get("docker")

        assert docker_of() is None
        b.write_bundle(NS, cid("web"))
        found = docker_of()
        assert found is not None and found["data_root"] == "/var/lib/docker"


@pytest.mark.emits("R204")
def test_what_the_review_found(tmp_path):
    """An exited --rm container is removed by restore; a NUL in daemon.json's data-root is F201,
    never a crash; an unknown stop signal is SIGTERM (as moby takes it); a stop with no timeout
    that the init does not act on hangs dockerd; a Docker name picks the visible twin of a hidden
    task dir."""
    with TaskBuilder(tmp_path / "c") as b:
        data_root, config = tmp_path / "docker", tmp_path / "daemon.json"
        config.write_text(json.dumps({"data-root": "/var/lib/do\u0000cker"}))
        write_docker_record(data_root, cid("gone-rm"), "gone-rm", running=False, exit_code=1, auto_remove=True)
        forever = b.start_task(NS, cid("forever"))
        write_docker_record(data_root, cid("forever"), "forever", pid=forever.init, stop_timeout=-1,
                            stop_signal="FOO")
        twin = b.start_task(NS, cid("twin"))
        write_docker_record(data_root, cid("twin"), "twin", pid=twin.init)
        hidden = twin.bundle.with_name("." + twin.bundle.name)
        hidden.mkdir()
        (hidden / "config.json").write_text((twin.bundle / "config.json").read_text())
        doc = scan(b, data_root, config)
        assert any(f["code"] == "F201" and "data-root" in f["message"] for f in doc["findings"])
        assert {d["name"]: d["dockerd_would"] for d in doc["docker"]["without_task"]} == {"gone-rm": "remove"}
        got = by_name(doc)
        assert (got["forever"]["docker"]["stop_signal"], got["forever"]["docker"]["dockerd_would"]) == \
            ("SIGTERM", "hang")
        assert "R204" in codes(got["forever"])
        picked = scan(b, data_root, config, "--container", "twin")
        assert [c["id"] for c in picked["containers"]] == [cid("twin")]


def test_dockerd_started_over_a_running_containerd_is_judged_on_the_task_as_it_is():
    """docker.service starts after containerd.service: a stopped shim hangs dockerd whatever the
    policy, and a task whose files are broken but whose shim lives is alive to dockerd."""
    from recover.generations.runtime_v2.docker import DockerRecord, DockerView
    from recover.generations.runtime_v2.docker.beside import _Init
    from recover.generations.runtime_v2.docker.predict import predict_dockerd

    view = DockerView("/var/lib/docker", "default", NS, True, "daemon.json", None, {})
    rec = DockerRecord(cid("x"), name="x", running=True, pid=10, started_before=True)
    running = _Init("running", 10, None)
    assert predict_dockerd(rec, view, "block-then-kill", running, None, "r", "containerd 1.6.20", 9,
                           containerd_runs=True).would == "hang"
    assert predict_dockerd(rec, view, "block-then-kill", running, None, "r", "containerd 1.6.20", 9).would == \
        "record-exit"  # containerd restarts first: it removes the task, and `no` starts nothing
    assert predict_dockerd(rec, view, "kill-live-processes", running, None, "r", "containerd 1.6.20",
                           containerd_runs=True).would == "keep-running"


def test_a_root_reached_through_proc_pid_root_finds_dockers_record_there(host):
    """The DaemonSet's way: the node's paths through /proc/<pid>/root; Docker's data root is read
    in that mount namespace too, and the prediction is the same."""
    import os

    b, data_root, config = host
    through = f"/proc/{os.getpid()}/root"
    result = runner.invoke(app, ["scan", f"{through}{b.state}", "--runc-root", str(b.runc_root), "-f", "json",
                                 "--containerd-version", "1.6.20", "--docker-root", str(data_root),
                                 "--docker-config", str(config)])
    assert result.exit_code == 0, result.output
    got = by_name(json.loads(result.stdout))
    assert got["web"]["docker"]["dockerd_would"] == "stop-then-restart"
    assert got["db"]["docker"]["exit_code"] == 143
