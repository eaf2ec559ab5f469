"""Free TCP ports on the loopback interface, and the ports a process listens on."""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port the OS just reported free on ``host``.

    Only for servers that cannot bind port 0 themselves (subprocesses):
    another process may grab the port before it is reused, so callers that
    spawn servers retry on "address in use".
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


# /proc/net/tcp's state column: LISTEN.
_TCP_LISTEN = "0A"


def listening_ports(pid: int) -> set[int]:
    """The TCP ports (IPv4 and IPv6) process `pid` listens on, from Linux's /proc: its sockets
    (the inodes its descriptors point at) that the network table lists as listening."""
    proc = Path(f"/proc/{pid}")
    inodes = set()
    for fd in (proc / "fd").iterdir():
        with contextlib.suppress(OSError):  # a descriptor closed while listed
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in (proc / "net" / table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == _TCP_LISTEN and inode in inodes:
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports
