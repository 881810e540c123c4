"""A TLS connection the sidecar serves waits for its next request (4d46b15) and never hangs.

Between requests the inbound listener waits for the socket to be readable instead of trying a
read (unless OpenSSL holds decrypted bytes). Neighbouring spellings of "the next request" that
such a wait could miss, each through a real sidecar over mutual TLS: a pipelined request whose
head is split across records with a pause between them, requests sent one byte per record, two
requests followed by a half-close (both are answered), and a close_notify after an answer (the
sidecar closes too, rather than waiting for the keep-alive deadline).
"""

from __future__ import annotations

import os
import socket
import ssl
import time

import pytest

from identity import client_context
from tests._support.pki import issue

pytestmark = pytest.mark.e2e

REQUEST = b"POST /echo HTTP/1.1\r\nhost: server\r\ncontent-length: 1\r\n\r\nx"


@pytest.fixture
def connect(mesh):
    app = mesh.procs.app()
    address = mesh.sidecar("server", app_port=app.ready["port"]).address("inbound")
    context = client_context(issue(mesh.ca, "caller"), mesh.ca.bundle)
    opened: list[ssl.SSLSocket] = []

    def open_one() -> ssl.SSLSocket:
        opened.append(context.wrap_socket(socket.create_connection(address, timeout=10)))
        return opened[-1]

    yield open_one
    for sock in opened:
        sock.close()


def _answers(sock: ssl.SSLSocket, count: int) -> bytes:
    """Read until ``count`` whole answers (the echo's JSON bodies end with ``}``) or EOF."""
    data = b""
    while data.count(b"HTTP/1.1 200 ") < count or not data.endswith(b"}"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_a_pipelined_head_split_across_records_with_a_pause_is_served(connect):
    sock = connect()
    sock.sendall(REQUEST + REQUEST[:20])  # the second head begins in the first's record
    time.sleep(0.3)  # the sidecar answers the first and waits for the rest of the second
    sock.sendall(REQUEST[20:])
    assert _answers(sock, 2).count(b"HTTP/1.1 200 ") == 2


def test_requests_sent_one_byte_per_record_are_served(connect):
    sock = connect()
    for byte in REQUEST * 2:
        sock.sendall(bytes([byte]))
    assert _answers(sock, 2).count(b"HTTP/1.1 200 ") == 2


def test_two_pipelined_requests_then_a_half_close_are_both_answered(connect):
    sock = connect()
    sock.sendall(REQUEST + REQUEST)
    # Half-close the TCP connection under the TLS one (SSLSocket.shutdown would drop TLS).
    with socket.socket(fileno=os.dup(sock.fileno())) as same:
        same.shutdown(socket.SHUT_WR)
    data = _answers(sock, 2)  # (both are read before the sidecar closes its side)
    assert data.count(b"HTTP/1.1 200 ") == 2, data


def test_a_close_notify_after_an_answer_is_answered_by_a_close(connect):
    sock = connect()
    sock.sendall(REQUEST)
    assert _answers(sock, 1).count(b"HTTP/1.1 200 ") == 1
    raw = sock.unwrap()  # our close_notify, and theirs back
    raw.settimeout(5)  # far below the 60 s keep-alive deadline
    assert raw.recv(100) == b""
