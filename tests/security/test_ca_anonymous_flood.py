"""Review of #10.7 at the CA service: idle *finished* TLS handshakes lock renewals out.

The CA asks for a client certificate but does not require one (enrolment comes with a join
token), so any local peer finishes the TLS handshake without credentials. The handshake budget
then no longer applies: the connection takes one of the 256 slots for established connections
and may hold it, silent, for the whole I/O timeout (10 s by default), reopening it as often as it
likes. 260 such connections, opened one after another from one source, and the CA refuses every
newcomer — a sidecar renewing its SVID over mTLS (authenticated) and an enrolment alike — with
nothing in its log but "too many open connections".

Twin: the same renewal with no flood is served (and still is once the flood is gone).
"""

from __future__ import annotations

import datetime as dt
import ssl

import pytest
import trio

from ca.client import renew_svid, request_svid
from ca.home import ca_layout
from ca.store import save_ca
from ca.tokens import TokenStore
from identity import AppIdentity
from tests._support.ca_proc import open_tls, running_ca
from tests._support.pki import utcnow

pytestmark = pytest.mark.e2e

WEB = AppIdentity("public", "default", "web")
FLOOD = 260  # past the CA's 256 slots for connections past their handshake


@pytest.fixture(scope="module")
def ca_proc(tmp_path_factory, mesh_ca):
    home = tmp_path_factory.mktemp("ca-flood-home")
    save_ca(ca_layout(home, create=True), mesh_ca)
    with running_ca(home, home / "serve.log", "--io-timeout", "10") as proc:
        yield proc


def _anon_ctx(bundle) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cadata=bundle.to_pem().decode())
    return ctx


async def _svid(ca_proc, mesh_ca):
    ttl = dt.timedelta(minutes=10)
    token = TokenStore(ca_layout(ca_proc.home)).issue(WEB, now=utcnow(), ttl=ttl)
    svid, bundle = await request_svid(ca_proc.url, token, mesh_ca.bundle)
    return svid, bundle


async def test_twin_renewal_is_served_without_a_flood(ca_proc, mesh_ca):
    svid, bundle = await _svid(ca_proc, mesh_ca)
    with trio.fail_after(10):
        renewed, _ = await renew_svid(ca_proc.url, svid, bundle)
    assert renewed.identity == WEB


async def test_silent_anonymous_tls_connections_do_not_lock_renewals_out(ca_proc, mesh_ca):
    svid, bundle = await _svid(ca_proc, mesh_ca)
    anon = _anon_ctx(mesh_ca.bundle)
    held = []
    try:
        for _ in range(FLOOD):  # one after another: each handshake finishes, then idles
            held.append(await open_tls(ca_proc.url, anon))
        with trio.fail_after(8):  # well inside the flood's 10 s hold
            renewed, _ = await renew_svid(ca_proc.url, svid, bundle)
        assert renewed.identity == WEB
    finally:
        refused = [e for e in ca_proc.log_events() if "too many open connections" in e["event"]]
        print(f"the CA refused {len(refused)} connection(s) as 'too many open connections'")
        for stream in held:
            await trio.aclose_forcefully(stream)
