"""A fault injector for copies of the reference root, shared by tests/test_fuzz.py (a few seconds
in CI) and bench/fuzz.py (as long as you like)."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

ODD_NUMBERS = [b"-1", b"0x10", b"12\n", b"4294967296", b"+7", b"0", b" 1", b"1e3", b"\xd9\xa3", b"99999999999999999999"]
HOSTILE_NAMES = ["evil\x1b[31mred", "new\nline", "tab\there", os.fsdecode(b"bad-\xff\xfe"), "-rf", "..." , " ",
                 "\x9b6n", "a" * 255]


def _entries(root: Path) -> tuple[list[Path], list[Path]]:
    files, dirs = [], []
    for d, ds, fs in os.walk(root):
        dirs.extend(Path(d) / x for x in ds if not (Path(d) / x).is_symlink())
        files.extend(Path(d) / x for x in fs)
    return sorted(files), sorted(dirs)


def _replace(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def mutate(root: Path, rng: random.Random, canary: Path, faults: int = 3) -> list[str]:
    """Apply `faults` seeded faults to the tree at `root`; returns what was done."""
    done = []
    for _ in range(faults):
        files, dirs = _entries(root)
        regular = [f for f in files if f.is_file() and not f.is_symlink()]
        if not regular:
            break
        target = rng.choice(regular)
        kind = rng.choice(["truncate", "nul", "random", "delete", "symlink-out", "fifo", "dir", "huge",
                           "odd-number", "hostile-name", "symlink-loop", "symlink-proc", "delete-dir",
                           "symlink-dir-out"])
        rel = target.relative_to(root)
        if kind == "truncate":
            data = target.read_bytes()
            target.write_bytes(data[: rng.randrange(len(data) + 1)])
        elif kind == "nul":
            target.write_bytes(b"\0" * rng.randrange(1, 4096))
        elif kind == "random":
            target.write_bytes(rng.randbytes(rng.randrange(1, 256)))
        elif kind == "delete":
            target.unlink()
        elif kind == "symlink-out":
            _replace(target)
            os.symlink(canary, target)
        elif kind == "fifo":
            _replace(target)
            os.mkfifo(target)
        elif kind == "dir":
            _replace(target)
            target.mkdir()
        elif kind == "huge":
            with open(target, "wb") as f:
                f.truncate(8 << 20)
        elif kind == "odd-number":
            target = target.parent / rng.choice(["pid", "starttime", "exitStatus"])
            _replace(target)
            target.write_bytes(rng.choice(ODD_NUMBERS))
            rel = target.relative_to(root)
        elif kind == "hostile-name" and dirs:
            d = rng.choice(dirs)
            new = d.parent / rng.choice(HOSTILE_NAMES)
            if not new.exists():
                d.rename(new)
            rel = d.relative_to(root)
        elif kind == "symlink-loop":
            _replace(target)
            os.symlink(target.name, target)
        elif kind == "symlink-proc":
            _replace(target)
            os.symlink("/proc/self/fd/0", target)
        elif kind == "delete-dir" and dirs:
            d = rng.choice(dirs)
            _replace(d)
            rel = d.relative_to(root)
        elif kind == "symlink-dir-out" and dirs:
            d = rng.choice(dirs)
            _replace(d)
            os.symlink(canary.parent, d)
            rel = d.relative_to(root)
        done.append(f"{kind} {os.fsencode(str(rel))!r}")
    return done


def snapshot(top: Path) -> dict:
    """Every entry's type, mode, mtime and (for regular files) bytes, without following links."""
    out = {}
    for d, ds, fs in os.walk(top):
        for n in ds + fs:
            p = os.path.join(d, n)
            st = os.lstat(p)
            data = None
            if os.path.isfile(p) and not os.path.islink(p):
                with open(p, "rb") as f:
                    data = f.read()
            elif os.path.islink(p):
                data = os.readlink(p).encode("utf-8", "surrogateescape")
            out[os.path.relpath(p, top)] = (st.st_mode, st.st_mtime_ns, data)
    return out
