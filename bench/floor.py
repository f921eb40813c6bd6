"""The floor of a scan: the fastest plain Python that reads the bytes a scan must read, and
decides nothing, checks nothing, prints nothing.  `recover scan` is measured against it.

    python bench/floor.py ROOT

What it does (a containerd 0.2 root): list the root, each container dir and each process dir
(a scan must know what is there), read state.json and each process's process.json, pid,
starttime and exitStatus (when listed), each by an open relative to its dir's fd, one fstat and
one read of exactly the size fstat gives, decode the two JSON files with orjson, and read each
recorded pid's /proc/<pid>/stat once (opened relative to /proc's fd).  No try/except beyond
what a vanished pid needs, no objects beyond the bytes, single-threaded.
"""

import os
import sys

import orjson

PROCESS_FILES = ("process.json", "pid", "starttime", "exitStatus")
OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def floor_0_2(root: str) -> int:
    """Read a containerd 0.2 root; the number of bytes read."""
    open_, fstat, read, close, listdir, loads = os.open, os.fstat, os.read, os.close, os.listdir, orjson.loads
    total = 0
    pids: set[bytes] = set()
    root_fd = open_(root, OPEN_DIR)
    for c in os.scandir(root_fd):
        if not c.is_dir(follow_symlinks=False):
            continue
        cfd = open_(c.name, OPEN_DIR, dir_fd=root_fd)
        for p in os.scandir(cfd):
            if p.is_dir(follow_symlinks=False):
                pfd = open_(p.name, OPEN_DIR, dir_fd=cfd)
                names = listdir(pfd)
                for name in PROCESS_FILES:
                    if name in names:
                        fd = open_(name, OPEN_FILE, dir_fd=pfd)
                        data = read(fd, fstat(fd).st_size)
                        close(fd)
                        total += len(data)
                        if name == "pid":
                            pids.add(data)
                        elif name == "process.json":
                            loads(data)
                close(pfd)
            elif p.name == "state.json":
                fd = open_("state.json", OPEN_FILE, dir_fd=cfd)
                data = read(fd, fstat(fd).st_size)
                close(fd)
                total += len(data)
                loads(data)
        close(cfd)
    close(root_fd)
    return total + read_stats(pids)


def read_stats(pids: set[bytes]) -> int:
    """Each pid's /proc/<pid>/stat, once."""
    total = 0
    proc_fd = os.open("/proc", OPEN_DIR)
    for pid in pids:
        try:
            fd = os.open(pid + b"/stat", os.O_RDONLY | os.O_CLOEXEC, dir_fd=proc_fd)
        except OSError:  # a dead pid
            continue
        total += len(os.read(fd, 4096))  # procfs gives no size: one page holds any stat line
        os.close(fd)
    os.close(proc_fd)
    return total


if __name__ == "__main__":
    floor_0_2(sys.argv[1])
