"""Listening sockets for bulletin's servers (sink, preview, serve), with user-facing errors.

Each server binds its socket here before handing it to aiosmtpd or uvicorn: "address in use"
becomes an immediate, clear error instead of a traceback or a late timeout, and port 0 can
report the port the kernel chose.
"""

from __future__ import annotations

import errno
import socket

from bulletin.errors import BulletinError


class PortInUse(BulletinError):
    """Another program already listens on the requested port."""


def listen_socket(host: str, port: int, *, in_use_hint: str, backlog: int = 128) -> socket.socket:
    """A listening TCP socket on ``host:port`` (IPv4 or IPv6; port 0: any free port).

    ``in_use_hint`` says what to do when the port is taken (which command, which option).
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise BulletinError(
            f"Cannot listen on {host}: {exc.strerror}.",
            hint="Give an address of this machine with --host, e.g. 127.0.0.1.",
        ) from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        # Lets a server restarted at once rebind while old connections sit in TIME_WAIT;
        # on Linux it does not allow two listeners on one port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        where = f"{host}:{port}"
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(f"Port {port} on {host} is already in use.", hint=in_use_hint) from None
        if exc.errno == errno.EACCES:
            raise BulletinError(
                f"Not allowed to listen on {where}.",
                hint="Ports below 1024 need privileges; use a higher port with --port.",
            ) from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise BulletinError(
                f"Cannot listen on {where}: {host} is not an address of this machine.",
                hint="Give an address of this machine with --host, e.g. 127.0.0.1.",
            ) from None
        raise BulletinError(f"Cannot listen on {where}: {exc.strerror or exc}.") from None
    return sock
