"""The trio server in-process: started with ``nursery.start`` on port 0, no subprocess."""

from __future__ import annotations

import datetime as dt
import ssl

import pytest
import trio
import trio.testing

from ca import CAClientError, CARefused, CAUnreachable
from ca.client import fetch_bundle, request_svid
from ca.home import CALayout
from ca.server import CAServer, listener_url
from ca.service import SigningService
from ca.tokens import TokenStore
from identity import AppIdentity, ssl_peer_identity
from tests._support.ca_proc import open_tls
from tests._support.pki import utcnow

CA_ID = AppIdentity("public", "trustmesh-system", "trustmesh-ca")


class _Exploding(SigningService):
    def handle(self, request):
        if request.path == "/v1/svid":
            raise RuntimeError("bug")
        return super().handle(request)


async def test_a_handler_bug_costs_one_request_not_the_service(tmp_path, mesh_ca) -> None:
    service = _Exploding(mesh_ca, TokenStore(CALayout(tmp_path)))
    token = service.tokens.issue(
        AppIdentity("public", "default", "web"), now=utcnow(), ttl=dt.timedelta(minutes=5)
    )
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(CAServer(service, io_timeout=2).serve, "127.0.0.1", 0)
        url = listener_url(listeners[0])
        with pytest.raises(CARefused, match="500 CA_ERROR"):
            await request_svid(url, token, mesh_ca.bundle)
        assert await fetch_bundle(url, mesh_ca.bundle) == mesh_ca.bundle
        nursery.cancel_scope.cancel()


async def test_server_presents_exactly_the_ca_identity(tmp_path, mesh_ca) -> None:
    server = CAServer(SigningService(mesh_ca, TokenStore(CALayout(tmp_path))))
    assert server.server_svid.identity == CA_ID
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cadata=mesh_ca.bundle.to_pem().decode())
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(server.serve, "127.0.0.1", 0)
        url = listener_url(listeners[0])
        stream = await open_tls(url, ctx)
        assert ssl_peer_identity(stream) == CA_ID
        await trio.aclose_forcefully(stream)
        with pytest.raises(CAClientError, match="must be https://host:port"):
            await fetch_bundle(url.replace("https", "http"), mesh_ca.bundle)
        nursery.cancel_scope.cancel()


async def test_connections_over_the_cap_are_closed_at_once(tmp_path, mesh_ca) -> None:
    server = CAServer(
        SigningService(mesh_ca, TokenStore(CALayout(tmp_path))), max_connections=1, io_timeout=30
    )
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(server.serve, "127.0.0.1", 0)
        url = listener_url(listeners[0])
        squatter = await trio.open_tcp_stream("127.0.0.1", int(url.rsplit(":", 1)[1]))
        await trio.testing.wait_all_tasks_blocked()  # the squatter now holds the only slot
        with pytest.raises(CAUnreachable):
            await fetch_bundle(url, mesh_ca.bundle)
        await squatter.aclose()
        await trio.testing.wait_all_tasks_blocked()  # its handler saw EOF and gave the slot back
        assert await fetch_bundle(url, mesh_ca.bundle) == mesh_ca.bundle
        nursery.cancel_scope.cancel()
