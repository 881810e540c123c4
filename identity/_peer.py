"""Reading an App identity off a certificate.

The caller's identity comes from its leaf certificate and nowhere else. A leaf is accepted only
if it has exactly one URI SAN, that URI is a SPIFFE ID the mesh's identity map turns into an App
(``_mapping``: the Dapr form, the ServiceAccount form, or a bound ID), and it is not a CA
certificate (X.509-SVID spec §4.1: leaf SVIDs set ``cA`` false). The chain itself has already
been verified by OpenSSL during the handshake; this module decides *who* that chain names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography import x509

from ._errors import IdentityError, PeerIdentityError
from ._mapping import IdentityMap, app_identity_of
from ._spiffe_id import AppIdentity, SpiffeId


def leaf_spiffe_uri(cert: x509.Certificate) -> str:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise PeerIdentityError("certificate has no subjectAltName, so no SPIFFE ID") from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise PeerIdentityError(f"certificate must carry exactly one URI SAN, found {len(uris)}")
    if not uris[0].startswith("spiffe://"):
        raise PeerIdentityError(f"certificate URI SAN is not a SPIFFE ID: {uris[0]!r}")
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        bc = None
    if bc is not None and bc.ca:
        raise PeerIdentityError("certificate is a CA certificate, not a workload leaf")
    return uris[0]


def leaf_app_identity(cert: x509.Certificate) -> AppIdentity:
    uri = leaf_spiffe_uri(cert)
    try:
        return app_identity_of(uri)
    except IdentityError as exc:
        raise PeerIdentityError(f"certificate SPIFFE ID is not an App ID: {exc}") from exc


def _certificate(peer_certificate: x509.Certificate | bytes) -> x509.Certificate:
    if isinstance(peer_certificate, bytes | bytearray):
        try:
            return x509.load_der_x509_certificate(bytes(peer_certificate))
        except ValueError as exc:
            raise PeerIdentityError(f"peer certificate does not parse: {exc}") from exc
    return peer_certificate


def peer_identity(peer_certificate: x509.Certificate | bytes) -> AppIdentity:
    """The App identity in a peer's (already chain-verified) leaf, given as a certificate or DER."""
    return leaf_app_identity(_certificate(peer_certificate))


@dataclass(eq=False, slots=True)
class PeerSvid:
    """What a connection keeps of its peer's leaf: the SPIFFE ID and when the leaf expires.

    A connection outlives both facts its handshake established: the App ID the identity map gave
    that SPIFFE ID (a binding applied later may take it away) and the certificate's validity (a
    kept-alive connection would otherwise serve an expired SVID for ever). So each request asks
    :meth:`app_identity` again under the map in force; the answer is cached per map object (maps
    are immutable and swapped whole, so the object is the map's generation), and an unchanged
    map costs one identity comparison.
    """

    spiffe_id: SpiffeId
    not_after: float  # POSIX seconds; the leaf is no longer valid at or after this instant
    _map: IdentityMap | None = field(default=None, repr=False)
    _app: AppIdentity | None = field(default=None, repr=False)
    _refusal: str | None = field(default=None, repr=False)

    def expired(self, now: float) -> bool:
        return now >= self.not_after

    def app_identity(self, identity_map: IdentityMap) -> AppIdentity:
        """The App this SPIFFE ID is under ``identity_map``; raise :class:`PeerIdentityError`
        (naming why) if it is none."""
        if identity_map is not self._map:
            try:
                self._app, self._refusal = identity_map.app_identity(self.spiffe_id), None
            except IdentityError as exc:
                self._app, self._refusal = None, f"certificate SPIFFE ID is not an App ID: {exc}"
            self._map = identity_map
        if self._app is None:
            raise PeerIdentityError(self._refusal or "no App identity")
        return self._app


def peer_svid(peer_certificate: x509.Certificate | bytes) -> PeerSvid:
    """The SPIFFE ID and expiry of a peer's (already chain-verified) leaf; raise
    :class:`PeerIdentityError` if the leaf carries no usable SPIFFE ID."""
    cert = _certificate(peer_certificate)
    uri = leaf_spiffe_uri(cert)
    try:
        sid = SpiffeId.parse(uri)
    except IdentityError as exc:
        raise PeerIdentityError(f"certificate SPIFFE ID is not valid: {exc}") from exc
    return PeerSvid(sid, cert.not_valid_after_utc.timestamp())
