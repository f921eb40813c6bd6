"""Small facts about real processes, shared by the tests."""

import os


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped: nothing holds it (for now)."""
    child = os.fork()
    if child == 0:
        os._exit(0)
    os.waitpid(child, 0)
    return child


def ticks(pid: int) -> int:
    """Field 22 of /proc/<pid>/stat: start ticks since boot."""
    data = open(f"/proc/{pid}/stat", "rb").read()
    return int(data[data.rindex(b")") + 2:].split()[19])
