"""The Docker lab (recover/generations/runtime_v2/lab/docker.py): a real dockerd 20.10 over a lab
containerd 1.6.20 runs a container; both daemons are SIGKILLed and restarted, and with
live-restore on dockerd finds the container again, running with the same init.  One daemon pair,
a few seconds."""

from __future__ import annotations

import pytest
from lab_fixtures import skip_unless_usable

from recover.generations.runtime_v2.lab import Containerd, alive
from recover.generations.runtime_v2.lab.docker import DOCKER_NAMESPACE, Dockerd, missing


@pytest.fixture(scope="module")
def cycle():
    skip_unless_usable()
    if reason := missing():
        pytest.skip(f"real dockerd: {reason}")
    with Containerd.create(namespace=DOCKER_NAMESPACE) as c:
        c.start()
        with Dockerd.create(c, live_restore=True) as d:
            d.start()
            d.import_image()
            box = d.run("c1", restart_policy="always")
            before = d.on_disk(box.id)
            d.crash()
            c.crash()
            c.start()
            d.start()
            yield {"box": box, "before": before, "after": d.inspect("c1"), "init_alive": alive(box.pid, box.pid_start),
                   "tasks": c.task_list(), "log": d.log()}


def test_the_container_is_found_again_with_its_init(cycle):
    box, after = cycle["box"], cycle["after"]
    assert after is not None
    assert after["State"]["Running"] is True
    assert after["State"]["Pid"] == box.pid
    assert cycle["init_alive"]
    assert cycle["tasks"][box.id] == (box.pid, "RUNNING")
    assert "restoring container" in cycle["log"]


def test_dockerd_wrote_its_state_on_disk(cycle):
    config, host = cycle["before"]
    assert config["ID"] == cycle["box"].id and config["Name"] == "/c1"
    assert config["State"]["Running"] is True and config["State"]["Pid"] == cycle["box"].pid
    assert config["HasBeenStartedBefore"] is True
    assert host["RestartPolicy"] == {"Name": "always", "MaximumRetryCount": 0}
