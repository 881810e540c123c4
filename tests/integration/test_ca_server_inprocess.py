"""The trio server in-process: started with ``nursery.start`` on port 0, no subprocess."""

from __future__ import annotations

import datetime as dt
import ssl

import pytest
import trio
import trio.testing

from ca import CAClientError, CARefused
from ca.client import fetch_bundle, renew_svid, request_svid
from ca.home import CALayout
from ca.server import CAServer, listener_url
from ca.service import SigningService
from ca.tokens import TokenStore
from identity import AppIdentity, client_context, ssl_peer_identity
from sidecar.http.admission import HandshakeAdmission
from tests._support.ca_proc import open_tls
from tests._support.pki import utcnow

CA_ID = AppIdentity("public", "trustmesh-system", "trustmesh-ca")
WEB = AppIdentity("public", "default", "web")


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


async def test_silent_mtls_connections_of_one_identity_are_cut_for_another_renewal(
    tmp_path, mesh_ca
):
    """#10.7's neighbour: a valid certificate does not buy the right to hold every slot."""
    server = CAServer(
        SigningService(mesh_ca, TokenStore(CALayout(tmp_path))), max_connections=2, io_timeout=30
    )
    now, ttl = utcnow(), dt.timedelta(minutes=10)
    squatter = mesh_ca.issue(AppIdentity("public", "default", "squatter"), now=now, ttl=ttl)
    svid = mesh_ca.issue(WEB, now=now, ttl=ttl)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(server.serve, "127.0.0.1", 0)
        url = listener_url(listeners[0])
        # Finished mTLS handshakes, then silence: each one holds a slot until cut.
        held = [await open_tls(url, client_context(squatter, mesh_ca.bundle)) for _ in range(5)]
        await trio.testing.wait_all_tasks_blocked()
        assert server.established.established <= 2
        renewed, _ = await renew_svid(url, svid, mesh_ca.bundle)
        assert renewed.identity == WEB
        assert server.established.evicted >= 4
        # Anonymous clients (enrolment, the bundle) never use those slots.
        assert await fetch_bundle(url, mesh_ca.bundle) == mesh_ca.bundle
        for stream in held:
            await trio.aclose_forcefully(stream)
        nursery.cancel_scope.cancel()


async def test_an_identity_past_its_share_cuts_its_own_silent_connection(tmp_path, mesh_ca):
    server = CAServer(
        SigningService(mesh_ca, TokenStore(CALayout(tmp_path))),
        max_connections=10,
        max_connections_per_identity=1,
        io_timeout=30,
    )
    svid = mesh_ca.issue(WEB, now=utcnow(), ttl=dt.timedelta(minutes=10))
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(server.serve, "127.0.0.1", 0)
        url = listener_url(listeners[0])
        silent = await open_tls(url, client_context(svid, mesh_ca.bundle))
        await trio.testing.wait_all_tasks_blocked()
        renewed, _ = await renew_svid(url, svid, mesh_ca.bundle)  # the same identity, again
        assert renewed.identity == WEB
        assert server.established.evicted == 1
        with trio.fail_after(10):
            with pytest.raises(trio.BrokenResourceError):
                while await silent.receive_some(1024):
                    pass
                raise trio.BrokenResourceError  # a clean EOF: cut as well
        nursery.cancel_scope.cancel()


async def test_silent_anonymous_tls_connections_evict_each_other_not_renewals(tmp_path, mesh_ca):
    """#10.7: a finished handshake without a certificate is unauthenticated: it has a budget
    of its own (a full one cuts the oldest of its source) and never takes an mTLS slot."""
    budget = HandshakeAdmission(max_pending=4, max_pending_per_source=2, timeout=30)
    server = CAServer(
        SigningService(mesh_ca, TokenStore(CALayout(tmp_path))),
        max_connections=1,
        io_timeout=30,
        anonymous=budget,
    )
    svid = mesh_ca.issue(WEB, now=utcnow(), ttl=dt.timedelta(minutes=10))
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(server.serve, "127.0.0.1", 0)
        url = listener_url(listeners[0])
        squatters = [await open_tls(url, _anonymous(mesh_ca)) for _ in range(20)]
        await trio.testing.wait_all_tasks_blocked()
        assert budget.pending <= 2
        assert budget.evicted >= 18
        renewed, _ = await renew_svid(url, svid, mesh_ca.bundle)
        assert renewed.identity == WEB
        assert await fetch_bundle(url, mesh_ca.bundle) == mesh_ca.bundle  # enrolment side too
        for squatter in squatters:
            await trio.aclose_forcefully(squatter)
        nursery.cancel_scope.cancel()


async def test_a_silent_anonymous_connection_is_cut_at_its_request_deadline(tmp_path, mesh_ca):
    budget = HandshakeAdmission(max_pending=4, max_pending_per_source=2, timeout=0.2)
    server = CAServer(
        SigningService(mesh_ca, TokenStore(CALayout(tmp_path))), io_timeout=60, anonymous=budget
    )
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(server.serve, "127.0.0.1", 0)
        silent = await open_tls(listener_url(listeners[0]), _anonymous(mesh_ca))
        with trio.fail_after(30):  # the budget's deadline closes it, long before io_timeout
            try:
                while await silent.receive_some(1024):
                    pass
            except trio.BrokenResourceError:
                pass  # cut: a reset, or a clean EOF, both mean the server let go
        assert budget.pending == 0
        await trio.aclose_forcefully(silent)
        nursery.cancel_scope.cancel()


async def test_idle_sockets_that_never_handshake_do_not_lock_callers_out(tmp_path, mesh_ca):
    """#10.7: unauthenticated sockets have their own budget; a full one cuts its oldest."""
    budget = HandshakeAdmission(max_pending=4, max_pending_per_source=2, timeout=30)
    server = CAServer(
        SigningService(mesh_ca, TokenStore(CALayout(tmp_path))),
        max_connections=1,
        io_timeout=30,
        handshakes=budget,
    )
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(server.serve, "127.0.0.1", 0)
        url = listener_url(listeners[0])
        host, port = url.removeprefix("https://").rsplit(":", 1)
        squatters = [await trio.open_tcp_stream(host, int(port)) for _ in range(20)]
        await trio.testing.wait_all_tasks_blocked()
        assert budget.pending <= 2
        assert await fetch_bundle(url, mesh_ca.bundle) == mesh_ca.bundle
        assert budget.evicted >= 18
        for squatter in squatters:
            await squatter.aclose()
        nursery.cancel_scope.cancel()


def _anonymous(mesh_ca) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cadata=mesh_ca.bundle.to_pem().decode())
    return ctx
