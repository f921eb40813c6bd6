"""A crash capture of a lab daemon, as ../shared/reference/containerd-2.x/live/harness/capture.py made
the reference ones: the daemon's dirs copied under DEST/root at the paths containerd sees (its state
dir, /run/containerd, its root dir without images and snapshots), sockets made again as socket
files, and a mini proc under DEST/proc (stat, status, cmdline, the cwd link's text) of the processes
that matter: those of the daemon's mount namespace, their descendants (the containers' processes
live in mount namespaces of their own), the pids the state files name, and the parents of all.

Run inside the daemon's mount namespace (`python -m recover.generations.runtime_v2.lab.capture DEST
DIR...`, through Containerd.capture), where the paths and the cwd links read as containerd's do.
`recover scan STATE --image-root DEST/root --proc-root DEST/proc` then judges the host as it stood."""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys

SKIPPED = ("io.containerd.content.v1.content", "io.containerd.snapshotter.", "tmpmounts", "opt")


def copy_tree(src: str, dst: str) -> None:
    st = os.lstat(src)
    if stat.S_ISDIR(st.st_mode):
        os.makedirs(dst, exist_ok=True)
        for name in sorted(os.listdir(src)):
            path = os.path.join(src, name)
            if name.startswith(SKIPPED) or (name == "rootfs" and os.path.ismount(path)):
                continue
            copy_tree(path, os.path.join(dst, name))
        os.chmod(dst, stat.S_IMODE(st.st_mode))
    elif stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(src), dst)
    elif stat.S_ISFIFO(st.st_mode):
        os.mkfifo(dst, stat.S_IMODE(st.st_mode))  # never opened: a FIFO's reader could block
    elif stat.S_ISSOCK(st.st_mode):
        os.mknod(dst, stat.S_IMODE(st.st_mode) | stat.S_IFSOCK)
    elif stat.S_ISREG(st.st_mode):
        shutil.copy2(src, dst)


def named_pids(top: str) -> set[int]:
    """The pids the state files name: `*.pid` and runc's state.json."""
    found = set()
    for d, dirs, files in os.walk(top):
        dirs[:] = [n for n in dirs if n != "rootfs"]
        for name in files:
            path = os.path.join(d, name)
            try:
                if name.endswith(".pid"):
                    found.add(int(open(path).read().strip()))
                elif name == "state.json":
                    found.add(int(json.load(open(path)).get("init_process_pid", 0)))
            except (OSError, ValueError):
                pass
    return found - {0}


def ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def chosen_pids(dirs: list[str]) -> set[int]:
    own_ns = os.readlink("/proc/self/ns/mnt")
    everyone = {int(n): ppid(int(n)) for n in os.listdir("/proc") if n.isdigit()}
    chosen = set()
    for pid in everyone:
        try:
            if os.readlink(f"/proc/{pid}/ns/mnt") == own_ns:
                chosen.add(pid)
        except OSError:
            pass
    chosen.discard(os.getpid())
    for d in dirs:
        chosen |= named_pids(d)
    grew = True
    while grew:  # descendants
        more = {pid for pid, parent in everyone.items() if parent in chosen} - chosen
        chosen |= more
        grew = bool(more)
    chosen |= {everyone.get(pid) for pid in list(chosen)} - {None, 0}
    return chosen


def capture(dest: str, dirs: list[str]) -> None:
    for d in dirs:
        if os.path.exists(d):
            copy_tree(d, os.path.join(dest, "root", d.lstrip("/")))
    proc = os.path.join(dest, "proc")
    os.makedirs(os.path.join(proc, "sys", "kernel", "random"), exist_ok=True)
    for name in ("stat", "sys/kernel/random/boot_id"):
        shutil.copy(f"/proc/{name}", os.path.join(proc, name))
    for pid in sorted(chosen_pids(dirs)):
        files = {}
        for name in ("stat", "status", "cmdline"):
            try:
                with open(f"/proc/{pid}/{name}", "rb") as f:
                    files[name] = f.read()
            except OSError:
                pass
        if "stat" not in files:  # gone meanwhile: absent from the capture, as from /proc
            continue
        target = os.path.join(proc, str(pid))
        os.makedirs(target)
        for name, data in files.items():
            with open(os.path.join(target, name), "wb") as f:
                f.write(data)
        try:
            os.symlink(os.readlink(f"/proc/{pid}/cwd"), os.path.join(target, "cwd"))
        except OSError:
            pass


if __name__ == "__main__":
    capture(sys.argv[1], sys.argv[2:])
