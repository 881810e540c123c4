"""The caller's side of the test app's ``/sse-gated`` stream over a raw TLS socket: its first
event is sent at once, the second only after the app's ``/release``. Tests that cut a stream
(an expired SVID, a dropped CA) read what else arrives, and whether the sidecar closed it."""

from __future__ import annotations

import socket
import ssl


def open_gated_stream(sock: socket.socket) -> bytes:
    """GET the stream and read up to its first event."""
    sock.sendall(b"GET /sse-gated HTTP/1.1\r\nhost: server\r\n\r\n")
    data = b""
    while b"data: first" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    return data


def rest_of_gated_stream(sock: socket.socket, timeout: float) -> tuple[bytes, bool]:
    """What else arrives on the stream: (bytes, True) once the sidecar closed it."""
    sock.settimeout(timeout)
    data = b""
    try:
        while b"data: second" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return data, True
            data += chunk
    except (ConnectionError, ssl.SSLError):
        return data, True
    return data, False
