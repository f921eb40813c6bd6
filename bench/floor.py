"""The floor of a scan: the fastest plain Python that reads the bytes a scan must read, and
decides nothing, checks nothing, prints nothing.  `recover scan` is measured against it.

    python bench/floor.py ROOT                                   (a containerd 0.2 root)
    python bench/floor.py STATE RUNC_ROOT CONTAINERD_ROOT        (a runtime-v2 state dir)

What it does: list every dir a scan lists (a scan must know what is there: for containerd 0.2
that includes each container's bundle dir, named by its state.json, and the type of each entry
there that is neither a file, a dir nor a link: its stdio FIFOs, which a listing alone does not
tell from a socket or a device); open each file a
scan reads relative to its dir's fd, one fstat and one read of exactly the size fstat gives (none
for an empty file); decode its JSON files with orjson; read each recorded pid's /proc/<pid>/stat
once (opened relative to /proc's fd).  No checks, no try/except beyond what a vanished pid needs,
no objects beyond the bytes, single-threaded.

The files: containerd 0.2: state.json, and each process's process.json, pid, starttime and
exitStatus.  runtime-v2: each task's pid files, address, config.json, options.json, runtime,
shim-binary-path and log.json, its `work` link (readlink), runc's state.json, and CRI's
checkpoint of each CRI container.
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
                        size = fstat(fd).st_size
                        data = read(fd, size) if size else b""
                        close(fd)
                        total += size
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
                bundle = loads(data).get("bundle")
                if bundle:  # the scan looks at what the container's bundle holds (H010)
                    try:
                        with os.scandir(bundle) as entries:
                            for e in entries:
                                total += 1
                                if not (e.is_file(follow_symlinks=False) or e.is_dir(follow_symlinks=False)
                                        or e.is_symlink()):
                                    e.stat(follow_symlinks=False)  # a FIFO, or a socket or device?
                    except OSError:
                        pass
        close(cfd)
    close(root_fd)
    return total + read_stats(pids)


TASKS = "io.containerd.runtime.v2.task"
TASK_FILES = frozenset(("address", "bootstrap.json", "config.json", "options.json", "runtime",
                        "shim-binary-path", "log.json"))
JSON_FILES = frozenset(("config.json", "options.json", "bootstrap.json"))


def floor_v2(state: str, runc_root: str, containerd_root: str) -> int:
    """Read a runtime-v2 state dir, runc's state of each task and CRI's checkpoints; bytes read."""
    open_, fstat, read, close, listdir, loads = os.open, os.fstat, os.read, os.close, os.listdir, orjson.loads
    total = 0
    pids: set[bytes] = set()
    tasks_fd = open_(os.path.join(state, TASKS), OPEN_DIR)
    for ns in listdir(tasks_fd):
        ns_fd = open_(ns, OPEN_DIR, dir_fd=tasks_fd)
        for tid in listdir(ns_fd):
            task_fd = open_(tid, OPEN_DIR, dir_fd=ns_fd)
            config = None
            for name in listdir(task_fd):
                if name.endswith(".pid") or name in TASK_FILES:
                    fd = open_(name, OPEN_FILE, dir_fd=task_fd)
                    size = fstat(fd).st_size
                    data = read(fd, size) if size else b""
                    close(fd)
                    total += size
                    if name.endswith(".pid"):
                        pids.add(data)
                    elif name in JSON_FILES:
                        doc = loads(data)
                        if name == "config.json":
                            config = doc
                elif name == "work":
                    total += len(os.readlink(name, dir_fd=task_fd))
            close(task_fd)
            total += read_json(os.path.join(runc_root, ns, tid, "state.json"))
            annotations = (config or {}).get("annotations") or {}
            if annotations.get("io.kubernetes.cri.container-type") == "container":
                total += read_json(os.path.join(containerd_root, "io.containerd.grpc.v1.cri", "containers", tid,
                                                "status"))
        close(ns_fd)
    close(tasks_fd)
    return total + read_stats(pids)


def read_json(path: str) -> int:
    fd = os.open(path, OPEN_FILE)
    data = os.read(fd, os.fstat(fd).st_size)
    os.close(fd)
    orjson.loads(data)
    return len(data)


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
    if len(sys.argv) == 4:
        floor_v2(*sys.argv[1:])
    else:
        floor_0_2(sys.argv[1])
