"""The filesystem steps repair takes, whatever the generation: small files read without following
a link or opening a FIFO, temp files fsynced before they are published, dirs fsynced after, and a
dir moved whole (renamed, or copied, verified and removed across filesystems)."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import stat
import uuid

from ..fsread import OPEN_DIR, RECOVER_TEMP_PREFIX

FAULT_ENV = "RECOVER_FAULT"  # test hook: "<step>" makes apply SIGKILL itself at that step


def fault(step: str) -> None:
    if os.environ.get(FAULT_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


def write_temp(dir_fd: int, data: bytes, mode: int = 0o644) -> str:
    """A new temp file in dir_fd holding `data`, fsynced; its name (RECOVER_TEMP_PREFIX: never state)."""
    name = f"{RECOVER_TEMP_PREFIX}{uuid.uuid4().hex[:12]}"
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
    try:
        os.fchmod(fd, mode)  # the umask does not decide what the daemon reads
        fault("temp-partial")  # dies with an empty temp file: must never be read as state
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return name


def read_small(dir_fd: int | None, name: str, limit: int = 1 << 16) -> bytes | None:
    """A small regular file's bytes; None when it is not one (missing, a link, a FIFO, a dir)."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode):
            return None
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        return os.read(fd, limit)
    finally:
        os.close(fd)


def free_name(directory: str, name: str) -> str:
    dest = os.path.join(directory, name)
    n = 1
    while os.path.lexists(dest):
        dest = os.path.join(directory, f"{name}.{n}")
        n += 1
    return dest


def fsync_dir(path: str) -> None:
    fd = os.open(path, OPEN_DIR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rename_noreplace(src: str, dest: str) -> None:
    """rename(2) that never replaces what is at dest (renameat2 RENAME_NOREPLACE: a plain rename
    silently replaces an empty dir); FileExistsError when something is there."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    at_fdcwd, noreplace = -100, 1
    if libc.renameat2(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dest), noreplace) == 0:
        return
    err = ctypes.get_errno()
    if err not in (errno.EINVAL, errno.ENOSYS):  # not a filesystem or kernel without the flag
        raise OSError(err, os.strerror(err), src, None, dest)
    if os.path.lexists(dest):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dest)
    os.rename(src, dest)


def move_tree(src: str, dest: str) -> None:
    """rename on one filesystem, never over what is at dest; otherwise copy (FIFOs recreated,
    links kept, nothing opened but regular files), fsync, verify, then remove the source."""
    if os.path.lexists(dest):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dest)
    try:
        rename_noreplace(src, dest)
        fsync_dir(os.path.dirname(dest))
        return
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
    shutil.copytree(src, dest, symlinks=True, copy_function=_copy_entry)
    for d, _, files in os.walk(dest):
        for n in files:
            p = os.path.join(d, n)
            if os.path.isfile(p) and not os.path.islink(p):
                with open(p, "rb") as f:
                    os.fsync(f.fileno())
        fsync_dir(d)
    if _tree(src) != _tree(dest):
        raise OSError(errno.EIO, f"the copy of {src} differs from the original; original kept")
    shutil.rmtree(src)


def _copy_entry(src: str, dst: str) -> None:
    mode = os.lstat(src).st_mode
    if stat.S_ISFIFO(mode):
        os.mkfifo(dst, stat.S_IMODE(mode))
    elif stat.S_ISREG(mode):
        shutil.copy2(src, dst)
    # sockets and devices are not copied: they are not evidence, and opening them is unsafe


def _tree(top: str) -> dict[str, tuple[int, bytes | None]]:
    out = {}
    for d, dirs, files in os.walk(top):
        for n in dirs + files:
            p = os.path.join(d, n)
            mode = os.lstat(p).st_mode
            if stat.S_ISSOCK(mode) or stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                continue
            data = None
            if stat.S_ISREG(mode):
                with open(p, "rb") as f:
                    data = f.read()
            elif stat.S_ISLNK(mode):
                data = os.readlink(p).encode()
            out[os.path.relpath(p, top)] = (stat.S_IFMT(mode), data)
    return out
