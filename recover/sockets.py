"""Unix sockets as the kernel tells them: which socket files a live socket listens on (sock_diag),
and which sockets a process holds (its fds).  Together they say which process a daemon reaches by
dialling a socket file, without dialling it."""

from __future__ import annotations

import os

_NETLINK_SOCK_DIAG, _SOCK_DIAG_BY_FAMILY = 4, 20
_NLM_F_REQUEST, _NLM_F_DUMP, _NLMSG_ERROR, _NLMSG_DONE = 0x1, 0x300, 2, 3
_UDIAG_SHOW_NAME, _UDIAG_SHOW_VFS, _UNIX_DIAG_NAME, _UNIX_DIAG_VFS, _TCP_LISTEN = 0x1, 0x2, 0, 1, 10


class Listeners:
    """The listening unix sockets of this network namespace: by the file each was bound at,
    (st_dev, st_ino), the socket's own inode (which a process holding it shows as `socket:[N]`);
    and by that inode, the path it was bound at (as its binder named it, in its mount namespace)."""

    def __init__(self) -> None:
        self.by_file: dict[tuple[int, int], int] = {}
        self.paths: dict[int, str] = {}

    def get(self, file: tuple[int, int], default=None):
        return self.by_file.get(file, default)

    def __contains__(self, file: tuple[int, int]) -> bool:
        return file in self.by_file


def unix_listeners() -> Listeners | None:
    """Every listening unix socket of this network namespace (sock_diag: UNIX_DIAG_VFS and
    UNIX_DIAG_NAME); None when the kernel cannot be asked."""
    import socket
    import struct

    try:
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG)
    except OSError:
        return None
    found = Listeners()
    with s:
        try:
            request = struct.pack("=BBHIIIII", socket.AF_UNIX, 0, 0, 1 << _TCP_LISTEN, 0,
                                  _UDIAG_SHOW_VFS | _UDIAG_SHOW_NAME, 0, 0)
            s.send(struct.pack("=IHHII", 16 + len(request), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0)
                   + request)
            while True:
                data = s.recv(1 << 16)
                at = 0
                while at + 16 <= len(data):
                    length, kind = struct.unpack_from("=IH", data, at)
                    if kind == _NLMSG_DONE:
                        return found
                    if kind == _NLMSG_ERROR or length < 16:
                        return None
                    sock_ino, = struct.unpack_from("=I", data, at + 16 + 4)  # unix_diag_msg.udiag_ino
                    attr, end = at + 16 + 16, at + length  # after nlmsghdr and unix_diag_msg
                    while attr + 4 <= end:
                        attr_len, attr_type = struct.unpack_from("=HH", data, attr)
                        if attr_len < 4:
                            break
                        if attr_type == _UNIX_DIAG_VFS and attr_len >= 12:
                            ino, kdev = struct.unpack_from("=II", data, attr + 4)
                            found.by_file[(os.makedev(kdev >> 20, kdev & 0xFFFFF), ino)] = sock_ino  # the kernel's dev_t
                        elif attr_type == _UNIX_DIAG_NAME and attr_len > 4:
                            name = data[attr + 4:attr + attr_len]
                            if not name.startswith(b"\0"):  # a path, not an abstract name
                                found.paths[sock_ino] = os.fsdecode(name.rstrip(b"\0"))
                        attr += (attr_len + 3) & ~3
                    at += (length + 3) & ~3
                if not data:
                    return None
        except OSError:
            return None


def held_sockets(process_dir: str) -> frozenset[int]:
    """The inodes of the sockets a process holds open: `socket:[N]` among <process_dir>/fd."""
    held = set()
    fd_dir = os.path.join(process_dir, "fd")
    try:
        for fd in os.listdir(fd_dir):
            try:
                target = os.readlink(os.path.join(fd_dir, fd))
            except OSError:
                continue
            if target.startswith("socket:[") and target.endswith("]"):
                held.add(int(target[8:-1]))
    except (OSError, ValueError):
        pass
    return frozenset(held)
