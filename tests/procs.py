"""Small facts about real processes, shared by the tests."""

import os
from pathlib import Path


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


def named_process(bindir, name: str, *args: str, cwd=None):
    """A live process whose argv is `<bindir>/<name> <bindir>/sleep.py ARGS...` (python through a
    link of that name): what recover takes for a daemon or a shim of that name, with that argv."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    bindir = Path(bindir)
    bindir.mkdir(parents=True, exist_ok=True)
    link, script = bindir / name, bindir / "sleep.py"
    if not link.exists():
        link.symlink_to(sys.executable)
    if not script.exists():
        script.write_text("import time\ntime.sleep(60)\n")
    proc = subprocess.Popen([str(link), str(script), *args], cwd=cwd,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while str(script).encode() not in open(f"/proc/{proc.pid}/cmdline", "rb").read():  # not exec'd yet
        if time.monotonic() > deadline:
            proc.kill()
            raise TimeoutError(f"{name} did not start")
        time.sleep(0.005)
    return proc


def fake_containerd(bindir, *args: str, cwd=None):
    """A process recover takes for a containerd daemon: `<bindir>/containerd ARGS...`."""
    return named_process(bindir, "containerd", *args, cwd=cwd)


def fields(pid: int) -> list[str]:
    """/proc/<pid>/stat fields, index 0 = field 3 (state)."""
    data = Path(f"/proc/{pid}/stat").read_bytes()
    return data[data.rindex(b")") + 2:].decode().split()


def field(pid: int, n: int) -> str:
    return fields(pid)[n - 3]


def same_process_alive(pid: int, starttime: int) -> bool:
    """Is this exact process (pid + start ticks) still in /proc, zombie included?"""
    try:
        return int(field(pid, 22)) == starttime
    except (FileNotFoundError, ProcessLookupError):
        return False


def session_members(sid: int) -> list[int]:
    out = []
    for ent in os.scandir("/proc"):
        if ent.name.isdigit():
            try:
                if int(field(int(ent.name), 6)) == sid:
                    out.append(int(ent.name))
            except (FileNotFoundError, ProcessLookupError):
                pass
    return out


def our_children() -> set[int]:
    me = os.getpid()
    out = set()
    for ent in os.scandir("/proc"):
        if ent.name.isdigit():
            try:
                if int(field(int(ent.name), 4)) == me:
                    out.add(int(ent.name))
            except (FileNotFoundError, ProcessLookupError):
                pass
    return out
