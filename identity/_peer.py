"""Reading an App identity off a certificate.

The caller's identity comes from its leaf certificate and nowhere else. A leaf is accepted only
if it has exactly one URI SAN, that URI is a SPIFFE ID the mesh's identity map turns into an App
(``_mapping``: the Dapr form, the ServiceAccount form, or a bound ID), and it is not a CA
certificate (X.509-SVID spec §4.1: leaf SVIDs set ``cA`` false). The chain itself has already
been verified by OpenSSL during the handshake; this module decides *who* that chain names.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._der import DerError, LeafFacts, leaf_facts
from ._errors import IdentityError, PeerIdentityError
from ._mapping import IdentityMap, app_identity_of
from ._spiffe_id import AppIdentity, SpiffeId

if TYPE_CHECKING:  # cryptography is imported only by callers that already hold its objects
    from cryptography import x509


def checked_spiffe_uri(has_san: bool, uris: tuple[str, ...] | list[str], is_ca: bool) -> str:
    """The one SPIFFE URI a leaf may carry, or :class:`PeerIdentityError` naming the rule."""
    if not has_san:
        raise PeerIdentityError("certificate has no subjectAltName, so no SPIFFE ID")
    if len(uris) != 1:
        raise PeerIdentityError(f"certificate must carry exactly one URI SAN, found {len(uris)}")
    if not uris[0].startswith("spiffe://"):
        raise PeerIdentityError(f"certificate URI SAN is not a SPIFFE ID: {uris[0]!r}")
    if is_ca:
        raise PeerIdentityError("certificate is a CA certificate, not a workload leaf")
    return uris[0]


def _facts(cert: x509.Certificate | bytes) -> LeafFacts:
    if isinstance(cert, bytes | bytearray | memoryview):
        der = bytes(cert)
    else:
        from cryptography.hazmat.primitives.serialization import Encoding

        der = cert.public_bytes(Encoding.DER)
    try:
        return leaf_facts(der)
    except DerError as exc:
        raise PeerIdentityError(f"peer certificate does not parse: {exc}") from None


def leaf_spiffe_uri(cert: x509.Certificate | bytes) -> str:
    """The SPIFFE ID a leaf (a ``cryptography`` certificate or DER) carries, as a string."""
    facts = _facts(cert)
    return checked_spiffe_uri(facts.has_san, facts.uris, facts.is_ca)


def _app_identity(uri: str) -> AppIdentity:
    try:
        return app_identity_of(uri)
    except IdentityError as exc:
        raise PeerIdentityError(f"certificate SPIFFE ID is not an App ID: {exc}") from exc


def leaf_app_identity(cert: x509.Certificate | bytes) -> AppIdentity:
    return _app_identity(leaf_spiffe_uri(cert))


def peer_identity(peer_certificate: x509.Certificate | bytes) -> AppIdentity:
    """The App identity in a peer's (already chain-verified) leaf, given as a certificate or DER."""
    return leaf_app_identity(peer_certificate)


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


def _peer_svid(uri: str, not_after: float) -> PeerSvid:
    try:
        sid = SpiffeId.parse(uri)
    except IdentityError as exc:
        raise PeerIdentityError(f"certificate SPIFFE ID is not valid: {exc}") from exc
    return PeerSvid(sid, not_after)


def peer_svid(peer_certificate: x509.Certificate | bytes) -> PeerSvid:
    """The SPIFFE ID and expiry of a peer's (already chain-verified) leaf; raise
    :class:`PeerIdentityError` if the leaf carries no usable SPIFFE ID."""
    facts = _facts(peer_certificate)
    uri = checked_spiffe_uri(facts.has_san, facts.uris, facts.is_ca)
    return _peer_svid(uri, facts.not_after)


def verified_peer_svid(decoded: dict[str, Any] | None, der: bytes | None) -> PeerSvid:
    """The peer's SPIFFE ID and expiry from what ``getpeercert()`` returned after a handshake.

    ``decoded`` is OpenSSL's own reading of the verified leaf (``getpeercert()``): the URI SANs
    and notAfter are taken from it. It is empty when the chain was not verified, and then the
    peer is refused whatever its certificate says. ``der`` (``getpeercert(binary_form=True)``)
    supplies the one fact OpenSSL's reading leaves out, whether the leaf is a CA; our reader of
    it must also find the same URI SANs, so a parser disagreement refuses rather than guesses.
    """
    if not der:
        raise PeerIdentityError("peer presented no certificate")
    if not decoded:
        raise PeerIdentityError("peer certificate was not verified against the trust bundle")
    names = decoded.get("subjectAltName")
    uris = [value for kind, value in names or () if kind == "URI"]
    facts = _facts(der)
    if tuple(uris) != facts.uris:
        raise PeerIdentityError("peer certificate SANs read differently by OpenSSL and trustmesh")
    uri = checked_spiffe_uri(names is not None, uris, facts.is_ca)
    try:
        not_after = float(ssl.cert_time_to_seconds(decoded["notAfter"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise PeerIdentityError(f"peer certificate notAfter does not read: {exc}") from None
    return _peer_svid(uri, not_after)
