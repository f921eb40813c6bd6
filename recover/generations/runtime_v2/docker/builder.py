"""Docker's record of a container as dockerd 20.10 writes it, for tests: `<data-root>/containers/<id>/`
config.v2.json and hostconfig.json with the fields recover reads, laid out as in a real pair
(tests/fixtures-free: the field names are moby's container.Container and container.State)."""

from __future__ import annotations

import json
from pathlib import Path

ZERO_TIME = "0001-01-01T00:00:00Z"


def write_docker_record(data_root: Path, cid: str, name: str, *, running: bool = True, pid: int = 0,
                        exit_code: int = 0, restart_policy: str = "no", max_retries: int = 0,
                        auto_remove: bool = False, started_before: bool = True, manually_stopped: bool = False,
                        stop_signal: str | None = None, stop_timeout: int | None = None,
                        finished_at: str = ZERO_TIME) -> Path:
    d = data_root / "containers" / cid
    d.mkdir(parents=True, exist_ok=True)
    config = {"StreamConfig": {}, "State": {
        "Running": running, "Paused": False, "Restarting": False, "OOMKilled": False, "RemovalInProgress": False,
        "Dead": False, "Pid": pid if running else 0, "ExitCode": exit_code, "Error": "",
        "StartedAt": "2026-12-07T10:00:00.000000000Z", "FinishedAt": finished_at, "Health": None},
        "ID": cid, "Created": "2026-12-07T09:59:59.000000000Z", "Managed": False, "Path": "sh",
        "Args": ["-c", "sleep 1000000"],
        "Config": {"Hostname": cid[:12], "Cmd": ["sh", "-c", "sleep 1000000"], "Image": "lab",
                   **({"StopSignal": stop_signal} if stop_signal else {}),
                   **({"StopTimeout": stop_timeout} if stop_timeout is not None else {})},
        "Image": "sha256:" + "0" * 64, "Name": "/" + name, "Driver": "vfs", "OS": "linux", "RestartCount": 0,
        "HasBeenStartedBefore": started_before, "HasBeenManuallyStopped": manually_stopped}
    host = {"RestartPolicy": {"Name": restart_policy, "MaximumRetryCount": max_retries},
            "AutoRemove": auto_remove, "NetworkMode": "none", "PidMode": ""}
    (d / "config.v2.json").write_text(json.dumps(config))
    (d / "hostconfig.json").write_text(json.dumps(host))
    return d
