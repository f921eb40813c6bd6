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


def fake_containerd(bindir, *args: str, cwd=None):
    """A process whose argv is `<bindir>/containerd ARGS...` (python through a link of that name,
    running a script that sleeps): what recover takes for a containerd daemon."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    bindir = Path(bindir)
    bindir.mkdir(exist_ok=True)
    link, script = bindir / "containerd", bindir / "daemon.py"
    if not link.exists():
        link.symlink_to(sys.executable)
        script.write_text("import time\ntime.sleep(60)\n")
    proc = subprocess.Popen([str(link), str(script), *args], cwd=cwd, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while str(script).encode() not in open(f"/proc/{proc.pid}/cmdline", "rb").read():  # not exec'd yet
        if time.monotonic() > deadline:
            proc.kill()
            raise TimeoutError("the fake daemon did not start")
        time.sleep(0.01)
    return proc
