"""#10.10: a request whose framing is ambiguous is refused by the sidecar, never forwarded.

Each attack is sent byte for byte to both listeners — the app's plain outbound port and, with a
real mesh certificate, the mTLS inbound port — and must get the named status with a JSON error,
while the app's own request log (``misframing_app``) proves it never arrived. Every attack
carries a unique marker in its path, so "never arrived" is checked per request. The legitimate
twin of each (the same request with one unambiguous framing) is forwarded and answered.
"""

from __future__ import annotations

import json
import uuid

import pytest

from tests._support.relay_mesh import send_raw, start_relay_mesh
from tests.integration.conftest import Mesh

pytestmark = pytest.mark.e2e

# (name, headers after the request line, body, expected status)
ATTACKS = [
    ("cl-then-te", "content-length: 5\r\ntransfer-encoding: chunked\r\n", "0\r\n\r\n", 400),
    ("te-then-cl", "transfer-encoding: chunked\r\ncontent-length: 5\r\n", "0\r\n\r\n", 400),
    ("cl-zero-and-te", "content-length: 0\r\ntransfer-encoding: chunked\r\n", "0\r\n\r\n", 400),
    ("te-upper-and-cl", "Transfer-Encoding: Chunked\r\nContent-Length: 5\r\n", "0\r\n\r\n", 400),
    ("folded-header", "x-note: a\r\n b\r\ncontent-length: 0\r\n", "", 400),
    ("folded-with-tab", "x-note: a\r\n\tb\r\ncontent-length: 0\r\n", "", 400),
    ("folded-te", "transfer-encoding:\r\n chunked\r\n", "0\r\n\r\n", 400),
    ("folded-cl", "content-length: 0\r\n 5\r\n", "", 400),
    ("te-on-http10", None, "0\r\n\r\n", 400),
    ("te-gzip", "transfer-encoding: gzip\r\n", "", 501),
    ("te-gzip-chunked", "transfer-encoding: gzip, chunked\r\n", "0\r\n\r\n", 501),
    ("te-chunked-twice", "transfer-encoding: chunked, chunked\r\n", "0\r\n\r\n", 501),
    ("te-two-fields", "transfer-encoding: chunked\r\n" * 2, "0\r\n\r\n", 501),
    ("te-identity", "transfer-encoding: identity\r\n", "", 501),
    ("te-space-before-colon", "transfer-encoding : chunked\r\n", "0\r\n\r\n", 400),
    ("two-different-lengths", "content-length: 0\r\ncontent-length: 5\r\n", "", 400),
]

ATTACK_IDS = [a[0] for a in ATTACKS]

TWINS = [
    ("content-length", "content-length: 2\r\n", "{}"),
    ("chunked", "transfer-encoding: chunked\r\n", "2\r\n{}\r\n0\r\n\r\n"),
    ("no-body", "", ""),
]


@pytest.fixture(scope="module")
def relay(tmp_path_factory, mesh_ca):
    mesh = Mesh(tmp_path_factory.mktemp("framing"), mesh_ca)
    relay = start_relay_mesh(mesh)
    client = mesh.sidecar("client")
    yield relay, client
    killed = mesh.procs.stop_all()
    assert not killed, f"processes outlived SIGTERM: {killed}"


def _door(relay, client, door: str):
    """(address, TLS context, path prefix) for one of the two listeners."""
    if door == "outbound":
        return client.address("http"), None, "/v1.0/invoke/server/method"
    return relay.server.address("inbound"), relay.client_tls("client"), ""


def _request(prefix: str, marker: str, headers: str | None, body: str) -> bytes:
    version = "HTTP/1.1"
    if headers is None:  # the HTTP/1.0 attack
        version, headers = "HTTP/1.0", "transfer-encoding: chunked\r\n"
    return (
        f"POST {prefix}/echo?msg={marker} {version}\r\nhost: 127.0.0.1\r\n{headers}"
        f"connection: close\r\n\r\n{body}"
    ).encode("latin-1")


@pytest.mark.parametrize("door", ["outbound", "inbound"])
@pytest.mark.parametrize(("name", "headers", "body", "status"), ATTACKS, ids=ATTACK_IDS)
def test_ambiguous_framing_is_refused_and_never_reaches_the_app(
    relay, door, name, headers, body, status
):
    relay_mesh, client = relay
    address, tls, prefix = _door(relay_mesh, client, door)
    marker = f"attack-{name}-{uuid.uuid4().hex[:8]}"
    got, response_headers, answer = send_raw(address, _request(prefix, marker, headers, body), tls)
    assert got == status, answer
    assert response_headers["content-type"] == "application/json"
    error = json.loads(answer)
    assert error["errorCode"] == "ERR_MALFORMED_REQUEST"
    assert error["message"].startswith("malformed request: ")
    # A well-formed request on a fresh connection proves the app is up and logging...
    twin = f"after-{marker}"
    ok, _, _ = send_raw(address, _request(prefix, twin, "content-length: 0\r\n", ""), tls)
    assert ok == 200
    assert relay_mesh.log.saw(twin)
    # ...and its log never saw the attack.
    assert not relay_mesh.log.saw(marker)


@pytest.mark.parametrize("door", ["outbound", "inbound"])
@pytest.mark.parametrize(("name", "headers", "body"), TWINS, ids=[t[0] for t in TWINS])
def test_unambiguous_framing_is_forwarded(relay, door, name, headers, body):
    relay_mesh, client = relay
    address, tls, prefix = _door(relay_mesh, client, door)
    marker = f"twin-{name}-{uuid.uuid4().hex[:8]}"
    status, _, answer = send_raw(address, _request(prefix, marker, headers, body), tls)
    assert status == 200, answer
    assert json.loads(answer) == {"echo": marker}
    assert relay_mesh.log.saw(marker)
