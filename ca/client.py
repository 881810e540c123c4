"""The CA's client, for sidecars: enrol with a join token, renew over mTLS, fetch the bundle.

Every call makes one HTTPS connection, verifies the server's chain against the bundle the
caller already trusts, and then requires the server to be exactly
``spiffe://<td>/ns/trustmesh-system/trustmesh-ca``: host names mean nothing here, so a server
that merely chains to the bundle (any workload does) is not the CA.

Keys are made here and never leave the process: the CA sees a CSR, signs it, and the answer is
checked to certify *our* key (:class:`identity.X509Svid` refuses a mismatch) for the identity we
expected. Failures are :class:`CAClientError` subclasses: :class:`CAUnreachable` (transport; worth
a retry), :class:`CAIdentityRejected`, :class:`CARefused` (the CA said no; carries its status and
``errorCode``), :class:`CABadResponse`.
"""

from __future__ import annotations

import json
import ssl
from urllib.parse import urlsplit

import h11
import trio

from identity import (
    AppIdentity,
    IdentityError,
    PeerIdentityError,
    TrustBundle,
    X509Svid,
    client_context,
    expect_peer_identity,
    load_pem_certificates,
)

from ._authority import ca_server_identity, new_private_key, root_trust_domain
from ._errors import (
    CABadResponse,
    CAClientError,
    CAError,
    CAIdentityRejected,
    CARefused,
    CAUnreachable,
)
from .csr import build_csr
from .service import BUNDLE_PATH, SVID_PATH

DEFAULT_TIMEOUT = 10.0
MAX_RESPONSE_BYTES = 1024 * 1024


def _split_url(ca_url: str) -> tuple[str, int]:
    parts = urlsplit(ca_url)
    if parts.scheme != "https" or not parts.hostname:
        raise CAClientError(f"CA URL must be https://host:port, not {ca_url!r}")
    try:
        port = parts.port or 443
    except ValueError as exc:
        raise CAClientError(f"CA URL has an invalid port: {ca_url!r}") from exc
    return parts.hostname, port


def bundle_trust_domain(bundle: TrustBundle) -> str:
    """The one trust domain the bundle's roots are constrained to; refuses if it is not one."""
    domains = set()
    for cert in bundle.authorities:
        try:
            domains.add(root_trust_domain(cert))
        except (CAError, IdentityError):
            continue
    if len(domains) != 1:
        raise CAClientError(
            "cannot tell the CA's trust domain from the bundle; pass trust_domain explicitly"
        )
    return domains.pop()


def _anonymous_context(bundle: TrustBundle) -> ssl.SSLContext:
    """Server-authenticated TLS for enrolment, before we have a certificate of our own."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False  # the SPIFFE ID is checked instead, right after the handshake
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=bundle.to_pem().decode("ascii"))
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


async def _connect(ca_url: str, ctx: ssl.SSLContext, expected: AppIdentity) -> trio.SSLStream:
    host, port = _split_url(ca_url)
    try:
        tcp = await trio.open_tcp_stream(host, port)
    except OSError as exc:
        raise CAUnreachable(f"cannot connect to the CA at {ca_url}: {exc}") from exc
    stream = trio.SSLStream(tcp, ctx, server_hostname=None)
    try:
        await stream.do_handshake()
    except (trio.BrokenResourceError, ssl.SSLError, OSError) as exc:
        await trio.aclose_forcefully(stream)
        cause = exc.__cause__ or exc
        raise CAUnreachable(f"TLS handshake with the CA at {ca_url} failed: {cause}") from exc
    try:
        expect_peer_identity(stream, expected)
    except PeerIdentityError as exc:
        await trio.aclose_forcefully(stream)
        raise CAIdentityRejected(f"{ca_url} is not the CA: {exc}") from exc
    return stream


async def _read_response(conn: h11.Connection, stream: trio.SSLStream) -> tuple[int, bytes]:
    status, body = None, bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(65536))
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_RESPONSE_BYTES:
                raise CABadResponse("the CA's response is too large")
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            break
    if status is None:
        raise CABadResponse("the CA closed the connection without answering")
    return status, bytes(body)


async def _call(
    ca_url: str,
    ctx: ssl.SSLContext,
    expected: AppIdentity,
    method: str,
    path: str,
    *,
    body: bytes = b"",
    token: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> dict:
    """One request; the decoded JSON of a 200, else the matching :class:`CAClientError`."""
    try:
        with trio.fail_after(timeout):
            stream = await _connect(ca_url, ctx, expected)
            try:
                host, _ = _split_url(ca_url)
                headers = [("host", host), ("connection", "close"), ("accept", "application/json")]
                if method == "POST":
                    headers += [
                        ("content-type", "application/pkcs10"),
                        ("content-length", str(len(body))),
                    ]
                if token is not None:
                    headers.append(("authorization", f"Bearer {token}"))
                conn = h11.Connection(h11.CLIENT)
                data = conn.send(h11.Request(method=method, target=path, headers=headers))
                data += conn.send(h11.Data(data=body)) if body else b""
                data += conn.send(h11.EndOfMessage())
                await stream.send_all(data)
                status, payload = await _read_response(conn, stream)
            finally:
                await trio.aclose_forcefully(stream)
    except trio.TooSlowError as exc:
        raise CAUnreachable(f"the CA at {ca_url} did not answer within {timeout}s") from exc
    except (trio.BrokenResourceError, ssl.SSLError, OSError) as exc:
        cause = exc.__cause__ or exc
        raise CAUnreachable(f"connection to the CA at {ca_url} failed: {cause}") from exc
    except h11.ProtocolError as exc:
        raise CABadResponse(f"the CA at {ca_url} sent malformed HTTP: {exc}") from exc
    try:
        document = json.loads(payload)
        if not isinstance(document, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        raise CABadResponse(f"the CA answered {status} with a body that is not JSON") from exc
    if status != 200:
        code = str(document.get("errorCode", "UNKNOWN"))
        message = str(document.get("message", "no message"))
        raise CARefused(
            f"the CA refused the request ({status} {code}): {message}",
            http_status=status,
            server_code=code,
        )
    return document


def _svid_from(document: dict, private_key, expected_td: str) -> tuple[X509Svid, TrustBundle]:
    try:
        chain = load_pem_certificates(str(document["svid"]).encode(), "CA response svid")
        svid = X509Svid(chain, private_key)
        bundle = TrustBundle.from_pem(str(document["bundle"]).encode(), "CA response bundle")
    except (KeyError, IdentityError) as exc:
        raise CABadResponse(f"the CA's answer is not a usable SVID: {exc}") from exc
    if svid.identity.trust_domain != expected_td:
        raise CABadResponse(f"the CA issued {svid.identity}, outside trust domain {expected_td!r}")
    return svid, bundle


async def request_svid(
    ca_url: str,
    token: str,
    ca_bundle: TrustBundle,
    *,
    key_type: str = "ec-p256",
    trust_domain: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> tuple[X509Svid, TrustBundle]:
    """Enrol: a new key, a CSR, and a join token; returns the SVID and the CA's bundle.

    ``trust_domain`` defaults to the one the bundle's root is name-constrained to.
    """
    trust_domain = trust_domain or bundle_trust_domain(ca_bundle)
    key = new_private_key(key_type)
    document = await _call(
        ca_url,
        _anonymous_context(ca_bundle),
        ca_server_identity(trust_domain),
        "POST",
        SVID_PATH,
        body=build_csr(key),
        token=token,
        timeout=timeout,
    )
    return _svid_from(document, key, trust_domain)


async def renew_svid(
    ca_url: str,
    current: X509Svid,
    ca_bundle: TrustBundle,
    *,
    key_type: str = "ec-p256",
    timeout: float = DEFAULT_TIMEOUT,
) -> tuple[X509Svid, TrustBundle]:
    """Renew: a new key, authenticated by the current SVID over mTLS; same identity back."""
    identity = current.identity
    key = new_private_key(key_type)
    document = await _call(
        ca_url,
        client_context(current, ca_bundle),
        ca_server_identity(identity.trust_domain),
        "POST",
        SVID_PATH,
        body=build_csr(key),
        timeout=timeout,
    )
    svid, bundle = _svid_from(document, key, identity.trust_domain)
    if svid.identity != identity:
        raise CABadResponse(f"renewal of {identity} returned {svid.identity}")
    return svid, bundle


async def fetch_bundle(
    ca_url: str,
    ca_bundle: TrustBundle,
    *,
    trust_domain: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> TrustBundle:
    """The CA's current trust bundle, fetched over TLS authenticated by the one we hold."""
    trust_domain = trust_domain or bundle_trust_domain(ca_bundle)
    document = await _call(
        ca_url,
        _anonymous_context(ca_bundle),
        ca_server_identity(trust_domain),
        "GET",
        BUNDLE_PATH,
        timeout=timeout,
    )
    try:
        return TrustBundle.from_pem(str(document["bundle"]).encode(), "CA response bundle")
    except (KeyError, IdentityError) as exc:
        raise CABadResponse(f"the CA's answer is not a trust bundle: {exc}") from exc
