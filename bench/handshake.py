"""The cost of a fresh mTLS connection: full TLS 1.3 handshakes with a client certificate.

A Python ``ssl`` client holding bench-client's SVID (the very context a sidecar dials with)
opens N connections one after another, completes the handshake and closes. Sequential
handshakes against a single-threaded server mean each one waits for the server to finish the
previous one, so wall time per handshake is the full round (client and server crypto, both
ways); the server's own CPU per handshake comes from ``/proc`` around the loop. No session is
ever resumed: each connection uses a new ``SSLSocket`` without a session.
"""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass

from .procs import Managed


@dataclass
class HandshakeResult:
    target: str
    handshakes: int
    wall_us: float  # per handshake, as the client saw it
    server_cpu_us: float  # per handshake, the server process (tree)
    version: str

    def as_dict(self) -> dict:
        return {
            "target": self.target,
            "handshakes": self.handshakes,
            "wall_us_per_handshake": round(self.wall_us, 1),
            "server_cpu_us_per_handshake": round(self.server_cpu_us, 1),
            "tls_version": self.version,
        }


def _one(address: tuple[str, int], context: ssl.SSLContext) -> str:
    with socket.create_connection(address, timeout=5) as raw:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with context.wrap_socket(raw, server_hostname=None) as tls:
            return tls.version() or "?"


def time_handshakes(
    target: str,
    address: tuple[str, int],
    context: ssl.SSLContext,
    server: Managed,
    count: int,
) -> HandshakeResult:
    for _ in range(5):  # warm both ends
        _one(address, context)
    time.sleep(0.2)
    cpu_before = server.cpu_seconds()
    started = time.perf_counter()
    version = "?"
    for _ in range(count):
        version = _one(address, context)
    wall = time.perf_counter() - started
    time.sleep(0.3)  # let the server finish with the last connection before reading its CPU
    cpu = server.cpu_seconds() - cpu_before
    return HandshakeResult(target, count, wall / count * 1e6, cpu / count * 1e6, version)
