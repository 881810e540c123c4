"""A real ``trustmesh ca serve`` on 127.0.0.1 (port 0): enrolment, renewal, and the attacks.

Legitimate paths go through :mod:`ca.client`; attacks are written by hand with trio and ssl.
Every attack test also shows the legitimate call succeeding against the same server, so a
refusal means "this was refused", not "the server was down".
"""

from __future__ import annotations

import datetime as dt
import ssl

import pytest
import trio
from cryptography import x509

from ca import CAIdentityRejected, CARefused, CAUnreachable, new_private_key
from ca.client import fetch_bundle, renew_svid, request_svid
from ca.csr import build_csr
from ca.home import ca_layout
from ca.store import save_ca
from ca.tokens import TokenStore
from identity import AppIdentity, client_context, leaf_app_identity
from tests._support.ca_proc import host_port, open_tls, raw_request, read_response, running_ca
from tests._support.csrs import csr_claiming, tampered_csr, weak_rsa_csr
from tests._support.pki import issue, make_ca, utcnow

WEB = AppIdentity("public", "default", "web")
IO_TIMEOUT = "1"


@pytest.fixture(scope="module")
def ca_proc(tmp_path_factory, mesh_ca):
    home = tmp_path_factory.mktemp("ca-home")
    save_ca(ca_layout(home, create=True), mesh_ca)
    log_path = home / "serve.log"
    with running_ca(home, log_path, "--io-timeout", IO_TIMEOUT) as proc:
        yield proc


def _token(proc, identity=WEB, *, ttl=dt.timedelta(minutes=10), now=None) -> str:
    return TokenStore(ca_layout(proc.home)).issue(identity, now=now or utcnow(), ttl=ttl)


def _anon_ctx(bundle) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cadata=bundle.to_pem().decode())
    return ctx


async def _post_csr(proc, bundle, csr: bytes, token: str | None, ctx=None):
    headers = [("authorization", f"Bearer {token}")] if token else []
    return await raw_request(
        proc.url, ctx or _anon_ctx(bundle), "POST", "/v1/svid", headers=headers, body=csr
    )


async def test_enrol_with_a_token_and_the_issuance_is_logged(ca_proc, mesh_ca) -> None:
    svid, bundle = await request_svid(ca_proc.url, _token(ca_proc), mesh_ca.bundle)
    assert svid.identity == WEB and bundle == mesh_ca.bundle
    assert svid.not_after - svid.not_before == dt.timedelta(hours=24, minutes=15)
    serial = f"{svid.leaf.serial_number:x}"
    issued = [e for e in ca_proc.log_events() if e["event"] == "svid issued"]
    assert any(
        e["serial"] == serial
        and e["spiffe_id"] == str(WEB)
        and e["not_after"] == svid.not_after.isoformat()
        for e in issued
    )


async def test_token_reuse_is_refused(ca_proc, mesh_ca) -> None:
    token = _token(ca_proc)
    await request_svid(ca_proc.url, token, mesh_ca.bundle)
    with pytest.raises(CARefused) as caught:
        await request_svid(ca_proc.url, token, mesh_ca.bundle)
    assert (caught.value.http_status, caught.value.server_code) == (401, "TOKEN_USED")


async def test_concurrent_use_of_one_token_issues_once(ca_proc, mesh_ca) -> None:
    token, outcomes = _token(ca_proc), []

    async def attempt() -> None:
        try:
            await request_svid(ca_proc.url, token, mesh_ca.bundle)
            outcomes.append("ok")
        except CARefused as exc:
            outcomes.append(exc.server_code)

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(attempt)
    assert sorted(outcomes) == ["TOKEN_USED"] * 4 + ["ok"]


async def test_expired_token_is_refused(ca_proc, mesh_ca) -> None:
    stale = _token(ca_proc, now=utcnow() - dt.timedelta(hours=1))
    with pytest.raises(CARefused) as caught:
        await request_svid(ca_proc.url, stale, mesh_ca.bundle)
    assert (caught.value.http_status, caught.value.server_code) == (401, "TOKEN_EXPIRED")
    assert (await request_svid(ca_proc.url, _token(ca_proc), mesh_ca.bundle))[0].identity == WEB


async def test_csr_asking_for_another_identity_gets_the_tokens(ca_proc, mesh_ca) -> None:
    csr = csr_claiming("spiffe://public/ns/default/admin")
    response = await _post_csr(ca_proc, mesh_ca.bundle, csr, _token(ca_proc))
    assert response.status == 200 and response.json["spiffe_id"] == str(WEB)
    leaf = x509.load_pem_x509_certificates(response.json["svid"].encode())[0]
    assert leaf_app_identity(leaf) == WEB


async def test_renewal_over_mtls_keeps_identity_with_a_new_key(ca_proc, mesh_ca) -> None:
    first, bundle = await request_svid(ca_proc.url, _token(ca_proc), mesh_ca.bundle)
    renewed, _ = await renew_svid(ca_proc.url, first, bundle)
    assert renewed.identity == first.identity == WEB
    assert renewed.leaf.public_key() != first.leaf.public_key()
    assert renewed.leaf.serial_number != first.leaf.serial_number
    events = [e for e in ca_proc.log_events() if e["event"] == "svid issued"]
    assert any(e["via"] == "renewal" for e in events)


async def test_client_certificate_from_a_foreign_ca_is_refused(ca_proc, mesh_ca) -> None:
    foreign = make_ca("public")
    forged = issue(foreign, "web")
    ctx = client_context(forged, mesh_ca.bundle)  # trusts our CA, presents a foreign leaf
    with pytest.raises((trio.BrokenResourceError, ssl.SSLError)):
        stream = await open_tls(ca_proc.url, ctx)
        await stream.send_all(b"POST /v1/svid HTTP/1.1\r\nhost: ca\r\ncontent-length: 0\r\n\r\n")
        await read_response(stream)
    with pytest.raises(CAUnreachable):
        await renew_svid(ca_proc.url, forged, mesh_ca.bundle)
    legit = issue(mesh_ca, "web")
    assert (await renew_svid(ca_proc.url, legit, mesh_ca.bundle))[0].identity == WEB


async def test_token_and_client_certificate_together_are_refused(ca_proc, mesh_ca) -> None:
    ctx = client_context(issue(mesh_ca, "web"), mesh_ca.bundle)
    csr = build_csr(new_private_key())
    response = await _post_csr(ca_proc, mesh_ca.bundle, csr, _token(ca_proc), ctx=ctx)
    assert (response.status, response.json["errorCode"]) == (401, "UNAUTHENTICATED")


@pytest.mark.parametrize(
    ("csr", "status", "code", "fragment"),
    [
        (weak_rsa_csr(), 400, "WEAK_KEY", "RSA key of 1024 bits is too weak (minimum 2048)"),
        (b"garbage, not a CSR", 400, "CSR_MALFORMED", "not a PEM certificate request"),
        (tampered_csr(), 400, "CSR_SIGNATURE_INVALID", "signature does not verify"),
    ],
    ids=["rsa-1024", "garbage", "tampered-signature"],
)
async def test_bad_csrs_get_a_4xx_naming_the_reason(ca_proc, mesh_ca, csr, status, code, fragment):
    token = _token(ca_proc)
    response = await _post_csr(ca_proc, mesh_ca.bundle, csr, token)
    assert (response.status, response.json["errorCode"]) == (status, code)
    assert fragment in response.json["message"]
    assert response.headers["content-type"] == "application/json"
    # the token survived the bad CSR and still enrols
    assert (await request_svid(ca_proc.url, token, mesh_ca.bundle))[0].identity == WEB


async def test_oversized_body_is_413(ca_proc, mesh_ca) -> None:
    body = b"-----BEGIN CERTIFICATE REQUEST-----\n" + b"A" * (70 * 1024)
    response = await _post_csr(ca_proc, mesh_ca.bundle, body, _token(ca_proc))
    assert (response.status, response.json["errorCode"]) == (413, "BODY_TOO_LARGE")
    assert "65536-byte limit" in response.json["message"]
    assert (await request_svid(ca_proc.url, _token(ca_proc), mesh_ca.bundle))[0].identity == WEB


async def test_chunked_oversized_body_is_413(ca_proc, mesh_ca) -> None:
    stream = await open_tls(ca_proc.url, _anon_ctx(mesh_ca.bundle))
    chunk = b"A" * 16384
    head = b"POST /v1/svid HTTP/1.1\r\nhost: ca\r\ntransfer-encoding: chunked\r\n\r\n"
    await stream.send_all(head + (b"4000\r\n" + chunk + b"\r\n") * 5 + b"0\r\n\r\n")
    response = await read_response(stream)
    await trio.aclose_forcefully(stream)
    assert (response.status, response.json["errorCode"]) == (413, "BODY_TOO_LARGE")


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/v1/svid", 405, "METHOD_NOT_ALLOWED"),
        ("DELETE", "/v1/bundle", 405, "METHOD_NOT_ALLOWED"),
        ("GET", "/v1/admin", 404, "NOT_FOUND"),
        ("POST", "/", 404, "NOT_FOUND"),
    ],
)
async def test_wrong_method_and_unknown_path(ca_proc, mesh_ca, method, path, status, code) -> None:
    response = await raw_request(ca_proc.url, _anon_ctx(mesh_ca.bundle), method, path)
    assert (response.status, response.json["errorCode"]) == (status, code)
    if status == 405:
        assert response.headers["allow"] in ("POST", "GET")


async def test_no_credentials_is_401(ca_proc, mesh_ca) -> None:
    response = await _post_csr(ca_proc, mesh_ca.bundle, build_csr(new_private_key()), None)
    assert (response.status, response.json["errorCode"]) == (401, "UNAUTHENTICATED")


async def test_malformed_http_is_400(ca_proc, mesh_ca) -> None:
    stream = await open_tls(ca_proc.url, _anon_ctx(mesh_ca.bundle))
    await stream.send_all(b"NOT HTTP AT ALL\r\n\r\n")
    response = await read_response(stream)
    await trio.aclose_forcefully(stream)
    assert (response.status, response.json["errorCode"]) == (400, "BAD_REQUEST")


async def test_control_plane_identity_cannot_be_enrolled(ca_proc, mesh_ca) -> None:
    token = _token(ca_proc, AppIdentity("public", "trustmesh-system", "trustmesh-ca"))
    with pytest.raises(CARefused) as caught:
        await request_svid(ca_proc.url, token, mesh_ca.bundle)
    assert (caught.value.http_status, caught.value.server_code) == (403, "RESERVED_IDENTITY")


async def test_bundle_endpoint(ca_proc, mesh_ca) -> None:
    assert await fetch_bundle(ca_proc.url, mesh_ca.bundle) == mesh_ca.bundle
    response = await raw_request(ca_proc.url, _anon_ctx(mesh_ca.bundle), "GET", "/v1/bundle")
    assert response.json["bundle"].encode() == mesh_ca.bundle.to_pem()


async def test_client_requires_exactly_the_ca_identity(ca_proc, mesh_ca) -> None:
    with pytest.raises(CAIdentityRejected, match="trustmesh-system/trustmesh-ca"):
        await request_svid(ca_proc.url, _token(ca_proc), mesh_ca.bundle, trust_domain="other")
    with pytest.raises(CAUnreachable, match="TLS handshake"):
        await request_svid(ca_proc.url, _token(ca_proc), make_ca("public").bundle)


async def test_unreachable_ca() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    await listeners[0].aclose()  # a port nobody listens on any more
    with pytest.raises(CAUnreachable, match="cannot connect"):
        await fetch_bundle(f"https://127.0.0.1:{port}", make_ca("public").bundle)


async def test_silent_clients_do_not_wedge_the_service(ca_proc, mesh_ca) -> None:
    """A client that connects and says nothing, and one that stops mid-headers, are cut off
    after the I/O timeout while legitimate requests keep being served."""
    silent = await trio.open_tcp_stream(*host_port(ca_proc.url))
    slow = await open_tls(ca_proc.url, _anon_ctx(mesh_ca.bundle))
    await slow.send_all(b"POST /v1/svid HTTP/1.1\r\nhost: ca\r\n")
    assert await fetch_bundle(ca_proc.url, mesh_ca.bundle) == mesh_ca.bundle
    with trio.fail_after(10):
        while await silent.receive_some(4096):
            pass  # the server closes the connection whose handshake never came
        response = await read_response(slow)
    assert (response.status, response.json["errorCode"]) == (408, "REQUEST_TIMEOUT")
    await silent.aclose()
    await trio.aclose_forcefully(slow)
