"""The containerd 1.6 captures (fixtures/containerd-1.6/*.tar.gz) as real trees on disk.

tar keeps FIFOs, links and mtimes but cannot hold sockets: each capture lists them in
sockets.txt, and they are made again here as socket files (mknod S_IFSOCK), so that recover sees
the same file types the daemon saw.  The four earlier captures (a, b, d, cri-d) stored containerd's
/run/containerd as run/ctrd16.run-containerd: a link puts it back where containerd saw it.
"""

from __future__ import annotations

import json
import os
import stat
import tarfile
from pathlib import Path

from reference import FIXTURES

CAPTURES = FIXTURES / "containerd-1.6"


def extract(name: str, dest: Path) -> Path:
    """Extract ctrd16-<name>.tar.gz into dest; return its scenario dir."""
    with tarfile.open(CAPTURES / f"ctrd16-{name}.tar.gz") as tar:
        # our own fixture: FIFOs and absolute links kept (Python before 3.11.4 has no filters)
        tar.extractall(dest, **({"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}))
    for d, dirs, _ in os.walk(dest):  # a dir captured 0600 (shim sockets) must let its owner in, root or not
        for name in dirs:
            path = os.path.join(d, name)
            if not os.path.islink(path):
                os.chmod(path, os.lstat(path).st_mode | 0o700)
    (top,) = [p for p in dest.iterdir() if p.is_dir()]
    for snapshot in ("before", "after"):
        root = top / snapshot / "root"
        remapped = root / "run" / "ctrd16.run-containerd"
        if remapped.is_dir() and not (root / "run" / "containerd").exists():
            os.symlink("ctrd16.run-containerd", root / "run" / "containerd")
        sockets = top / snapshot / "sockets.txt"
        for line in sockets.read_text().splitlines() if sockets.exists() else []:
            path = root / line.strip().lstrip("/")
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                os.mknod(path, 0o600 | stat.S_IFSOCK)
    return top


def state_dir(top: Path, snapshot: str = "before") -> Path:
    """The capture's state dir (the one holding io.containerd.runtime.v2.task)."""
    run = top / snapshot / "root" / "run"
    (found,) = [p for p in run.iterdir() if (p / "io.containerd.runtime.v2.task").is_dir()]
    return found


def scan_args(top: Path, snapshot: str = "before") -> list[str]:
    """`recover scan` on a capture as on the host it was made on: its paths resolved inside it."""
    return [str(state_dir(top, snapshot)), "--image-root", str(top / snapshot / "root"),
            "--proc-root", str(top / snapshot / "proc")]


def truth(top: Path) -> dict:
    return json.loads((top / "truth.json").read_text())
