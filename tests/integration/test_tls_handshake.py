"""mTLS between two issued identities over trio memory streams, and the handshakes that must fail.

Both ends run their handshake concurrently; a side that fails closes its transport so the other
sees end-of-stream instead of waiting forever.
"""

from __future__ import annotations

import datetime as dt
import ssl

import pytest
import trio
import trio.testing

from identity import (
    AppIdentity,
    PeerIdentityMismatch,
    client_context,
    expect_peer_identity,
    server_context,
)
from tests._support.pki import issue, make_ca, utcnow

WEB = AppIdentity("public", "default", "web")
API = AppIdentity("public", "default", "api")


async def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext):
    """Returns (server_stream, client_stream, {side: exception or None})."""
    client_raw, server_raw = trio.testing.memory_stream_pair()
    server = trio.SSLStream(server_raw, server_ctx, server_side=True)
    client = trio.SSLStream(client_raw, client_ctx, server_hostname=None)
    errors: dict[str, BaseException | None] = {}

    async def run(name: str, stream: trio.SSLStream) -> None:
        try:
            await stream.do_handshake()
            errors[name] = None
        except trio.BrokenResourceError as exc:
            errors[name] = exc
            await trio.aclose_forcefully(stream.transport_stream)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, "server", server)
            nursery.start_soon(run, "client", client)
    return server, client, errors


async def test_two_issued_identities_complete_mtls_and_see_each_other(mesh_ca) -> None:
    server_svid, client_svid = issue(mesh_ca, "api"), issue(mesh_ca, "web")
    server, client, errors = await _handshake(
        server_context(server_svid, mesh_ca.bundle), client_context(client_svid, mesh_ca.bundle)
    )
    assert errors == {"server": None, "client": None}
    assert expect_peer_identity(server, WEB) == WEB
    assert expect_peer_identity(client, API) == API
    with pytest.raises(PeerIdentityMismatch, match="peer presented spiffe://public/ns/default/api"):
        expect_peer_identity(client, WEB)
    # and application data flows
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.send_all, b"ping")
        assert await server.receive_some(4) == b"ping"


async def test_client_trusting_a_foreign_bundle_refuses_the_server(mesh_ca) -> None:
    foreign = make_ca("public")
    _, _, errors = await _handshake(
        server_context(issue(mesh_ca, "api"), mesh_ca.bundle),
        client_context(issue(foreign, "web"), foreign.bundle),
    )
    assert isinstance(errors["client"], trio.BrokenResourceError)
    assert "CERTIFICATE_VERIFY_FAILED" in repr(errors["client"].__cause__)


async def test_server_refuses_a_client_from_a_foreign_ca(mesh_ca) -> None:
    foreign = make_ca("public")
    # The foreign client trusts our root, so only the server's check can stop it.
    _, _, errors = await _handshake(
        server_context(issue(mesh_ca, "api"), mesh_ca.bundle),
        client_context(issue(foreign, "web"), mesh_ca.bundle),
    )
    assert isinstance(errors["server"], trio.BrokenResourceError)


async def test_server_refuses_an_expired_client_leaf(mesh_ca) -> None:
    expired = issue(mesh_ca, "web", ttl=dt.timedelta(hours=1), now=utcnow() - dt.timedelta(days=1))
    _, _, errors = await _handshake(
        server_context(issue(mesh_ca, "api"), mesh_ca.bundle),
        client_context(expired, mesh_ca.bundle),
    )
    assert isinstance(errors["server"], trio.BrokenResourceError)
    assert "certificate has expired" in repr(errors["server"].__cause__)


async def test_server_refuses_a_client_without_a_certificate(mesh_ca) -> None:
    anonymous = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    anonymous.check_hostname = False
    anonymous.load_verify_locations(cadata=mesh_ca.bundle.to_pem().decode())
    _, _, errors = await _handshake(
        server_context(issue(mesh_ca, "api"), mesh_ca.bundle), anonymous
    )
    assert isinstance(errors["server"], trio.BrokenResourceError)
    assert "PEER_DID_NOT_RETURN_A_CERTIFICATE" in repr(errors["server"].__cause__)
