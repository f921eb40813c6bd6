"""The reference capture as a real root on disk: FIFOs recreated, mtimes restored."""

import json
import os
import pathlib
import shutil

FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "fixtures"
REFERENCE = FIXTURES / "reference"

WEB = "4b5e57f6eb2f42b9039b3d1e13929295f231749c510cbe341cd68036d9af97e2"
WORKER = "87eba76e7f3164534045ba922e7770fb58bbd14ad732bbf5ba6f11cc56989e6e"
CRON = "c374eea599bb3c50ed4432ef57aee1263cdc3c83d1c1a3c4d7e19eef1af8439b"
CACHE = "5e1ecee06a7fc06f305ae5c12acfe7a7f67b8ece7af76932ed3afab00c3c6921"


def copy_reference(dest: pathlib.Path) -> pathlib.Path:
    shutil.copytree(REFERENCE, dest, symlinks=True)
    files = json.loads((REFERENCE / "files.json").read_text())
    for rel, info in sorted(files.items()):
        if info["fifo"]:
            os.mkfifo(dest / rel)
    # deepest first, so that setting a file's mtime does not disturb its dir's afterwards
    for rel, info in sorted(files.items(), key=lambda kv: -kv[0].count("/")):
        os.utime(dest / rel, ns=(info["mtime_ns"], info["mtime_ns"]), follow_symlinks=False)
    return dest
