"""How the workers of `hybridgw serve --workers N` share one port. On Linux each worker listens on
its own SO_REUSEPORT socket and the kernel spreads new connections evenly over them (one socket
shared by all let whichever worker woke first accept a whole burst: 4.2 vs 1.3 CPU s in
bench/workers_throughput.py); the supervisor holds the port bound but not listening, so a port in
use fails the start at once. Elsewhere the supervisor opens one listening socket the workers inherit."""
from __future__ import annotations

import socket
import sys

BACKLOG = 2048
REUSE_PORT = sys.platform == "linux" and hasattr(socket, "SO_REUSEPORT")  # where the kernel balances


def _socket(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if REUSE_PORT:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    return sock


def claim_port(host: str, port: int) -> tuple[socket.socket, int | None]:
    """The supervisor's socket on host:port, and the listening fd workers inherit (None: each worker
    listens on its own SO_REUSEPORT socket, see worker_socket). OSError when the port is in use."""
    if REUSE_PORT:  # a port another SO_REUSEPORT group of this user holds would be shared silently
        probe = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT of a last run is fine
        try:
            probe.bind((host, port))
            port = probe.getsockname()[1]  # port 0: the one the kernel picked
        finally:
            probe.close()
    sock = _socket(host)
    sock.bind((host, port))
    if REUSE_PORT:
        return sock, None
    sock.listen(BACKLOG)
    sock.set_inheritable(True)
    return sock, sock.fileno()


def worker_socket(host: str, port: int, fd: int | None) -> socket.socket:
    """The socket one worker accepts on: the inherited one, or its own in the SO_REUSEPORT group."""
    if fd is not None:
        return socket.socket(fileno=fd)
    sock = _socket(host)
    sock.bind((host, port))
    sock.listen(BACKLOG)
    return sock
