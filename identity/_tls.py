"""``ssl.SSLContext`` builders for mutual TLS between sidecars, and the identity checks after.

Host names mean nothing in the mesh: a sidecar is addressed by App ID. So client contexts turn
host-name checking off and the caller *must* state the identity it expects, checked right after
the handshake with :func:`expect_peer_identity` (the chain itself is verified by OpenSSL against
the trust bundle, with ``CERT_REQUIRED`` on both sides). TLS 1.2 is the floor, with forward-secret
AEAD suites only; TLS 1.3 is preferred and negotiated whenever both ends have it.

The stdlib can load a certificate chain only from files, so the key is written, loaded and
unlinked inside a fresh 0700 directory (``_pemfiles.load_cert_chain_pem``).
"""

from __future__ import annotations

import ssl

from ._errors import PeerIdentityMismatch
from ._mapping import current_identity_map
from ._peer import PeerSvid, verified_peer_svid
from ._pemfiles import load_cert_chain_pem
from ._spiffe_id import AppIdentity
from ._svid import TrustBundle, X509Svid

_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


def _base_context(protocol: int, svid: X509Svid, bundle: TrustBundle) -> ssl.SSLContext:
    ctx = ssl.SSLContext(protocol)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(_TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=bundle.to_pem().decode("ascii"))
    load_cert_chain_pem(ctx, svid.chain_pem(), svid.key_pem())
    return ctx


def server_context(svid: X509Svid, bundle: TrustBundle) -> ssl.SSLContext:
    """A server context that refuses any client without a certificate chaining to ``bundle``."""
    ctx = _base_context(ssl.PROTOCOL_TLS_SERVER, svid, bundle)
    ctx.set_alpn_protocols(["http/1.1"])
    # No TLS 1.3 session tickets: nothing we dial resumes sessions, and bytes arriving after the
    # handshake would make an idle pooled connection look as if its server had spoken.
    ctx.num_tickets = 0
    return ctx


def client_context(svid: X509Svid, bundle: TrustBundle) -> ssl.SSLContext:
    """A client context presenting ``svid``; pair every connection with
    :func:`expect_peer_identity`, since host names are deliberately not checked."""
    ctx = _base_context(ssl.PROTOCOL_TLS_CLIENT, svid, bundle)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def ssl_peer_svid(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> PeerSvid:
    """The peer's SPIFFE ID and leaf expiry, kept by a connection to judge each request by.

    Read from OpenSSL's own parse of the verified leaf (``getpeercert()``), so a serving process
    needs no X.509 library of its own."""
    return verified_peer_svid(ssl_object.getpeercert(), ssl_object.getpeercert(binary_form=True))


def ssl_peer_identity(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> AppIdentity:
    """The App identity the peer proved during the handshake that just completed."""
    return ssl_peer_svid(ssl_object).app_identity(current_identity_map())


def expect_peer_identity(
    ssl_object: ssl.SSLObject | ssl.SSLSocket, expected: AppIdentity
) -> AppIdentity:
    """Raise :class:`PeerIdentityMismatch` unless the peer is exactly ``expected``.

    "Exactly" is spelled through the identity map: the peer's SPIFFE ID must be one the map
    derives for ``expected`` (its bound ID, or its Dapr / ServiceAccount form when unbound).
    """
    actual = ssl_peer_identity(ssl_object)
    allowed = current_identity_map().spiffe_ids_for(expected)
    if actual != expected or actual.spiffe_id not in allowed:
        wanted = " or ".join(str(sid) for sid in allowed)
        raise PeerIdentityMismatch(f"peer presented {actual} but {wanted} was expected")
    return actual
