"""A request head sent as one TLS record trickled a byte at a time is cut at the head deadline.

The sidecar reads TLS straight from the SSL object (no ``trio.SSLStream``): a record that has
not fully arrived makes each read attempt end in "want read", and the read waits again on the
socket, under the deadline the run's sweeper keeps. A caller trickling one record byte by byte
never completes a read, so no per-read progress can be claimed: the head deadline must still
end the wait. The app's sidecar runs with a 1 s head deadline and a generous per-read timeout;
the attack trickles the record slowly enough to need ~10 s and finds the connection closed
within a few seconds, with the app never reached. The twin trickles the same record fast enough
to finish within the deadline and is served.
"""

from __future__ import annotations

import socket
import ssl
import time
import uuid

import pytest

from tests._support.relay_mesh import start_relay_mesh
from tests.integration.conftest import Mesh

pytestmark = pytest.mark.e2e

LIMITS = ["--limit", "head_timeout=1", "--limit", "read_timeout=20"]


@pytest.fixture(scope="module")
def relay(tmp_path_factory, mesh_ca):
    mesh = Mesh(tmp_path_factory.mktemp("tls-trickle"), mesh_ca)
    relay = start_relay_mesh(mesh, extra=LIMITS)
    yield relay
    killed = mesh.procs.stop_all()
    assert not killed, f"processes outlived SIGTERM: {killed}"


class _Tls:
    """Client TLS over a raw socket through memory BIOs, so the record bytes can be paced."""

    def __init__(self, relay) -> None:
        self.sock = socket.create_connection(relay.server.address("inbound"), timeout=10)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        context = relay.client_tls("client")
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_side=False)
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.sock.sendall(self.outgoing.read())
                self._pull()
        self.sock.sendall(self.outgoing.read())

    def _pull(self) -> bool:
        data = self.sock.recv(65536)
        if data:
            self.incoming.write(data)
        else:
            self.incoming.write_eof()
        return bool(data)

    def record(self, plaintext: bytes) -> bytes:
        self.tls.write(plaintext)
        return self.outgoing.read()

    def answer(self) -> bytes:
        """Plaintext until the sidecar closes (b"" if it closed without a word)."""
        data = b""
        while True:
            try:
                chunk = self.tls.read(65536)
            except ssl.SSLWantReadError:
                try:
                    if not self._pull():
                        continue
                except ConnectionResetError:
                    return data
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return data
            if not chunk:
                return data
            data += chunk


def _trickled_request(relay, every: float, give_up_after: float):
    marker = f"trickle-{uuid.uuid4().hex[:8]}"
    conn = _Tls(relay)
    head = (
        f"GET /echo?msg={marker} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n"
    ).encode()
    record = conn.record(head)
    started = time.monotonic()
    with conn.sock:
        try:
            for byte in record:
                if time.monotonic() - started > give_up_after:
                    break  # the attack has made its point; now see what the sidecar did
                time.sleep(every)
                conn.sock.sendall(bytes([byte]))
        except OSError:
            pass  # cut off mid-record
        return marker, conn.answer()


def test_a_tls_record_trickled_byte_by_byte_is_cut_at_the_head_deadline(relay):
    marker, answer = _trickled_request(relay, every=0.1, give_up_after=4)
    assert answer == b"", answer[:200]
    assert not relay.log.saw(marker)


def test_twin_a_tls_record_sent_a_little_slowly_within_the_deadline_is_served(relay):
    marker, answer = _trickled_request(relay, every=0.002, give_up_after=30)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert marker.encode() in answer
    assert relay.log.saw(marker)
