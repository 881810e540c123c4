"""A caller's side of a kept connection, over a raw socket (TLS to an inbound port, plain to an
outbound one): a one-byte ``POST /echo`` and its status, the test app's ``/sse-gated``
stream, whose first event is sent at once and the second only after the app's ``/release``,
and a chunked upload to its ``/sink`` trickled for a while.
Tests that cut a connection or a stream (an expired SVID, a dropped CA, a moved binding) read
what else arrives, and whether the sidecar closed it."""

from __future__ import annotations

import socket
import ssl
import time

POST_ECHO = b"POST /echo HTTP/1.1\r\nhost: server\r\ncontent-length: 1\r\n\r\nx"


def read_status(sock: socket.socket) -> int:
    """Read one answer (its head, and its body by Content-Length); its status, or 0 if the
    sidecar closed (or reset) the connection before the head."""
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return 0
            data += chunk
    except (ConnectionError, ssl.SSLError):
        return 0
    head, _, body = data.partition(b"\r\n\r\n")
    fields = [line.split(b":", 1) for line in head.lower().split(b"\r\n")[1:]]
    length = int(next((value for name, value in fields if name == b"content-length"), b"0"))
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split(b" ")[1])


def post_echo(sock: socket.socket) -> int:
    """A one-byte ``POST /echo`` on the connection: its status, or 0 if the connection was
    closed (what a sidecar that ended it shows: an EOF or, once it answered our bytes, a reset)."""
    try:
        sock.sendall(POST_ECHO)
    except (ConnectionError, ssl.SSLError):
        return 0
    return read_status(sock)


INVOKE_GATED = b"/v1.0/invoke/server/method/sse-gated"  # the stream via a caller's sidecar


def open_gated_stream(
    sock: socket.socket, target: bytes = b"/sse-gated", extra_headers: bytes = b""
) -> bytes:
    """GET the stream and read up to its first event. ``target`` is the app's path on an
    inbound port, or :data:`INVOKE_GATED` on a caller's outbound port (which wants a loopback
    Host); ``extra_headers`` are whole header lines (an ``authorization`` one, say)."""
    host = b"127.0.0.1" if target == INVOKE_GATED else b"server"
    sock.sendall(b"GET %s HTTP/1.1\r\nhost: %s\r\n%s\r\n" % (target, host, extra_headers))
    data = b""
    while b"data: first" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    return data


def rest_of_gated_stream(
    sock: socket.socket, timeout: float, until: bytes = b"data: second"
) -> tuple[bytes, bool]:
    """What else arrives on the stream, up to ``until``: (bytes, True) once the sidecar
    closed it."""
    sock.settimeout(timeout)
    data = b""
    try:
        while until not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return data, True
            data += chunk
    except (ConnectionError, ssl.SSLError):
        return data, True
    return data, False


def trickle_upload(
    sock: socket.socket,
    target: bytes = b"/sink",
    *,
    seconds: float,
    extra_headers: bytes = b"",
    chunk: bytes = b"x" * 1024,
    every: float = 0.2,
) -> tuple[int, int]:
    """POST a chunked body to ``target``: a chunk every ``every`` s for ``seconds``, then its
    end. Returns (the answer's status, or 0 if the sidecar cut the connection; bytes sent)."""
    host = b"127.0.0.1" if target.startswith(b"/v1.0/") else b"server"
    sock.sendall(
        b"POST %s HTTP/1.1\r\nhost: %s\r\ntransfer-encoding: chunked\r\n%s\r\n"
        % (target, host, extra_headers)
    )
    sent, until = 0, time.monotonic() + seconds
    try:
        while time.monotonic() < until:
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
            time.sleep(every)
        sock.sendall(b"0\r\n\r\n")
    except (ConnectionError, ssl.SSLError):
        pass  # cut: what the sidecar answered before it closed, if anything, is read below
    return read_status(sock), sent
