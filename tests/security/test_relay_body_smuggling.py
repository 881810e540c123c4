"""Review of #15.1's class: a request smuggled to the app inside a GET or HEAD body.

The relay forwards a ``GET``/``HEAD`` that carries a ``Content-Length`` body to the app on the
pooled keep-alive connection. An app built on ``BaseHTTPRequestHandler`` (the same common
pattern as #15.1: ``do_GET`` never reads a body, ``do_HEAD = do_GET``) leaves the body unread, so
it parses the body as the *next request on that connection*. The caller puts a whole request
there — a path the ACL denies, with a forged ``dapr-caller-app-id`` — and the app executes it:
the sidecar never judged it, never audited it, and its identity headers were never set.

The ACL here lets ``client`` GET ``/echo`` and nothing else. Twin: the plain ``GET /echo``
arrives; ``GET /smuggled`` sent honestly is refused (403) and never arrives. Attack: the same
forbidden request, as the body of an allowed ``GET``/``HEAD``, must not arrive either (the app's
own log is the proof).
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import uuid

import pytest

from tests._support.mcp_mesh import TRUSTMESH
from tests._support.procs import REPO
from tests._support.relay_mesh import send_raw, start_relay_mesh
from tests.integration.conftest import Mesh

pytestmark = pytest.mark.e2e

ONLY_ECHO = """apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: only-echo
spec:
  accessControl:
    defaultAction: deny
    trustDomain: public
    policies:
      - appId: client
        defaultAction: deny
        trustDomain: public
        namespace: default
        operations:
          - name: /echo
            httpVerb: [GET, HEAD]
            action: allow
"""


@pytest.fixture(scope="module")
def relay(tmp_path_factory, mesh_ca):
    mesh = Mesh(tmp_path_factory.mktemp("smuggle"), mesh_ca)
    try:
        relay = start_relay_mesh(mesh)
        client = mesh.sidecar("client")
        manifest = mesh.root / "only-echo.yaml"
        manifest.write_text(ONLY_ECHO)
        for args in (
            ("apply", "-f", str(manifest)),
            ("appid", "update", "server", "--app-config", "only-echo", "--wait"),
        ):
            done = subprocess.run(
                [*TRUSTMESH, *args, "--home", str(mesh.home)],
                capture_output=True, text=True, timeout=60, cwd=REPO,
            )  # fmt: skip
            assert done.returncode == 0, (args, done.stdout, done.stderr)
        yield relay, client
    finally:
        killed = mesh.procs.stop_all()
        assert not killed, f"processes outlived SIGTERM: {killed}"


def _door(relay, client, door: str):
    if door == "outbound":
        return client.address("http"), None, "/v1.0/invoke/server/method"
    return relay.server.address("inbound"), relay.client_tls("client"), ""


def send_and_linger(address, raw: bytes, tls: ssl.SSLContext | None) -> bytes:
    """Send ``raw`` and read what comes back until the peer goes quiet for a second."""
    with socket.create_connection(address, timeout=10) as plain:
        sock = plain if tls is None else tls.wrap_socket(plain, server_side=False)
        sock.sendall(raw)
        sock.settimeout(1.0)
        out = b""
        try:
            while chunk := sock.recv(65536):
                out += chunk
        except (TimeoutError, ConnectionResetError, ssl.SSLError):
            pass
        return out


def smuggled(marker: str) -> bytes:
    return (
        f"GET /smuggled?msg={marker} HTTP/1.1\r\nhost: app\r\n"
        "dapr-caller-app-id: admin\r\ncontent-length: 0\r\n\r\n"
    ).encode()


@pytest.mark.parametrize("door", ["inbound", "outbound"])
def test_twin_echo_arrives_and_the_forbidden_path_sent_plainly_is_refused(relay, door):
    relay_mesh, client = relay
    address, tls, prefix = _door(relay_mesh, client, door)
    marker = f"twin-{uuid.uuid4().hex[:8]}"
    request = (
        f"GET {prefix}/echo?msg={marker} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n"
    )
    assert send_raw(address, request.encode(), tls)[0] == 200
    assert relay_mesh.log.saw(marker)
    forbidden = f"plain-{uuid.uuid4().hex[:8]}"
    request = (
        f"GET {prefix}/smuggled?msg={forbidden} HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        "connection: close\r\n\r\n"
    )
    assert send_raw(address, request.encode(), tls)[0] == 403
    assert not relay_mesh.log.saw(forbidden)


@pytest.mark.parametrize("verb", ["GET", "HEAD"])
@pytest.mark.parametrize("door", ["inbound", "outbound"])
def test_a_request_inside_a_get_or_head_body_never_reaches_the_app(relay, door, verb):
    relay_mesh, client = relay
    address, tls, prefix = _door(relay_mesh, client, door)
    marker = f"smuggled-{verb}-{door}-{uuid.uuid4().hex[:8]}"
    body = smuggled(marker)
    carrier = (
        f"{verb} {prefix}/echo?msg=carrier HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode()
    send_and_linger(address, carrier + body, tls)
    # The app's own log: the request the ACL forbids (sent with a forged caller header) ran.
    assert not relay_mesh.log.saw(marker), relay_mesh.log.paths()[-3:]
