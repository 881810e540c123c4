"""Leaves the mesh CA itself signed, in shapes that must not become a caller, against a real
sidecar that reads peers without ``cryptography`` (OpenSSL's ``getpeercert()`` and our DER
reader). Each is refused and the app's own request counter proves nothing arrived; the twin, a
well-formed leaf built and presented the same way, gets through and is counted.
"""

from __future__ import annotations

import json
import socket
import ssl

import httpx
import pytest
from cryptography.hazmat.primitives import serialization

from identity import private_key_to_pem
from identity._pemfiles import load_cert_chain_pem
from tests._support.certs import build_cert
from tests.integration.conftest import Mesh

APP = "spiffe://public/ns/default/caller"


@pytest.fixture(scope="module")
def world(tmp_path_factory, mesh_ca):
    mesh = Mesh(tmp_path_factory.mktemp("leaf-shapes"), mesh_ca)
    app = mesh.procs.app()
    sidecar = mesh.sidecar("server", app_port=app.ready["port"])
    yield mesh, app, sidecar
    assert not mesh.procs.stop_all()


def _context(mesh, **shape) -> ssl.SSLContext:
    """A client context presenting a leaf of ``shape`` signed by the mesh's issuing CA."""
    ca = mesh.ca
    leaf, key = build_cert(issuer_cert=ca.issuer_cert, issuer_key=ca.issuer_key, **shape)
    chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (leaf, ca.issuer_cert))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(cadata=ca.bundle.to_pem().decode())
    load_cert_chain_pem(context, chain, private_key_to_pem(key))
    return context


def _call(sidecar, context) -> bytes:
    """One request over mTLS to the sidecar's inbound port; the raw answer (b"" if closed)."""
    with (
        socket.create_connection(sidecar.address("inbound"), timeout=5) as raw,
        context.wrap_socket(raw) as tls,
    ):
        tls.sendall(b"GET /echo HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
        return data


def _count(app) -> int:
    return httpx.get(f"http://127.0.0.1:{app.ready['port']}/count").json()["count"]


# shape -> the reason the sidecar gives (403 ERR_PEER_IDENTITY), None: refused in the handshake
SHAPES = {
    "non-app-spiffe-path": ({"uris": ("spiffe://public/workload",)}, "is not an App ID"),
    "two-uri-sans": (
        {"uris": (APP, "spiffe://public/ns/default/admin")},
        "exactly one URI SAN, found 2",
    ),
    "ca-certificate-as-leaf": ({"uris": (APP,), "ca": True}, "is a CA certificate"),
    "no-subject-alt-name": ({"san": False}, "has no subjectAltName"),
    "dns-san-only": ({"dns": ("caller.local",)}, "exactly one URI SAN, found 0"),
    "non-spiffe-uri": ({"uris": ("https://public/ns/default/caller",)}, "is not a SPIFFE ID"),
    "query-smuggled-in-the-id": ({"uris": (APP + "?admin=1",)}, "cannot contain a query"),
    # The root is name-constrained to its trust domain: OpenSSL refuses the chain itself.
    "foreign-trust-domain": ({"uris": ("spiffe://evil/ns/default/caller",)}, None),
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_a_mesh_signed_leaf_of_a_refused_shape_never_reaches_the_app(world, shape):
    mesh, app, sidecar = world
    fields, reason = SHAPES[shape]
    before = _count(app)
    try:
        answer = _call(sidecar, _context(mesh, **fields))
    except (ssl.SSLError, OSError):
        answer = b""
    if reason is None:
        assert answer == b""
    else:
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 403"), answer[:200]
        refusal = json.loads(body)
        assert refusal["errorCode"] == "ERR_PEER_IDENTITY"
        assert reason in refusal["message"]
    assert _count(app) == before


def test_a_well_formed_leaf_presented_the_same_way_gets_through(world):
    mesh, app, sidecar = world
    before = _count(app)
    answer = _call(sidecar, _context(mesh, uris=(APP,)))
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert _count(app) == before + 1
