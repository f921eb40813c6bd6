"""What the stand-in shims share (stdlib only): each shim script (recover/generations/*/shim/) imports
it from here.

How a shim makes itself look like the real binary (comm, child subreaper), how it starts a
container process the way runc leaves it (own session, default signal dispositions, pid file
only once the exec is done), and how it publishes small files (never half-written).
"""

import ctypes
import os
import shutil
import signal
import time

PR_SET_NAME = 15
PR_SET_CHILD_SUBREAPER = 36

# Python ignores SIGPIPE and handles SIGINT; a container process gets default dispositions,
# an empty mask and its own session.
_DEFAULT_SIGNALS = {signal.SIGPIPE, signal.SIGINT, signal.SIGTERM, signal.SIGHUP,
                    signal.SIGCHLD, signal.SIGQUIT, signal.SIGXFSZ}


def prctl(option, arg):
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, arg, 0, 0, 0)
    except (OSError, AttributeError):
        return -1


def set_comm(path):
    """The comm of the real binary (its basename, cut to 15 by the kernel), not the interpreter's."""
    prctl(PR_SET_NAME, ctypes.c_char_p(os.path.basename(path).encode()[:15]))


def show_argv(argv):
    """Make /proc/self/cmdline read `argv`: written over the original argv memory (the
    interpreter's path, the script's, then ours), the rest NUL-padded, as setproctitle does."""
    with open("/proc/self/stat", "rb") as f:
        data = f.read()
    fields = data[data.rindex(b")") + 2:].split()
    start, end = int(fields[45]), int(fields[46])  # fields 48, 49: arg_start, arg_end
    new = b"\0".join(a.encode() for a in argv) + b"\0"
    if not start or len(new) > end - start:
        raise OSError("cannot rewrite the argv memory (%d bytes for %d)" % (len(new), end - start))
    ctypes.memmove(start, new + b"\0" * (end - start - len(new)), end - start)
    with open("/proc/self/cmdline", "rb") as f:
        if f.read().rstrip(b"\0") != new.rstrip(b"\0"):
            raise OSError("/proc/self/cmdline does not show the new argv")


def become_subreaper():
    """Orphaned descendants come back to this process (the real shims are child subreapers)."""
    return prctl(PR_SET_CHILD_SUBREAPER, 1) == 0


def publish(path, text):
    """Temp file + rename in the same dir: a reader never sees a half-written file."""
    directory, name = os.path.split(path)
    _replace(os.path.join(directory, ".%s.%d.tmp" % (name, os.getpid())), path, text)


def write_pid_file(path, pid):
    """As `runc --pid-file` writes it: decimal, no newline, to `.<name>`, then renamed."""
    directory, name = os.path.split(path)
    _replace(os.path.join(directory, "." + name), path, str(pid))


def _replace(tmp, path, text):
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


def starttime(pid):
    """Field 22 of /proc/<pid>/stat (start ticks since boot); the process must be unreaped."""
    with open("/proc/%d/stat" % pid, "rb") as f:
        data = f.read()
    # comm may contain spaces and ")": fields start after the LAST ")".
    return int(data[data.rindex(b")") + 2:].split()[19])  # field 22; [0] is field 3


def _wait_exec(pid, comm, timeout=2.0):
    # posix_spawn returns once the child has left our memory, but the kernel sets the new comm a
    # little later in execve; until then the child's comm is still ours.  runc's pid file only
    # appears after the exec: do the same.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open("/proc/%d/comm" % pid, "rb") as f:
                if f.read().rstrip(b"\n") == comm:
                    return
        except OSError:
            return
        time.sleep(0.001)


def spawn(args, env_list, drop_env=()):
    """Start a container process as runc leaves it: own session, default signals, empty mask, the
    spec's env over ours (minus drop_env); return its pid once its exec is done.  OSError with
    runc's words when it cannot start."""
    env = {k: v for k, v in os.environ.items() if k not in drop_env}
    for item in env_list or ():
        k, sep, v = str(item).partition("=")
        if sep:
            env[k] = v
    path = args[0] if "/" in args[0] else shutil.which(args[0])
    if path is None:
        raise FileNotFoundError(2, "executable file not found in $PATH")
    pid = os.posix_spawn(path, args, env, setsid=True, setsigdef=_DEFAULT_SIGNALS, setsigmask=set())
    _wait_exec(pid, os.path.basename(path).encode()[:15])
    return pid


def exit_code(status):
    """A wait status as the shims record it: the code, or 128 + the signal."""
    return 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
