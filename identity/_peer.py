"""Reading an App identity off a certificate.

The caller's identity comes from its leaf certificate and nowhere else. A leaf is accepted only
if it has exactly one URI SAN, that URI is a SPIFFE ID the mesh's identity map turns into an App
(``_mapping``: the Dapr form, the ServiceAccount form, or a bound ID), and it is not a CA
certificate (X.509-SVID spec §4.1: leaf SVIDs set ``cA`` false). The chain itself has already
been verified by OpenSSL during the handshake; this module decides *who* that chain names.
"""

from __future__ import annotations

from cryptography import x509

from ._errors import IdentityError, PeerIdentityError
from ._mapping import app_identity_of
from ._spiffe_id import AppIdentity


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


def peer_identity(peer_certificate: x509.Certificate | bytes) -> AppIdentity:
    """The App identity in a peer's (already chain-verified) leaf, given as a certificate or DER."""
    if isinstance(peer_certificate, bytes | bytearray):
        try:
            peer_certificate = x509.load_der_x509_certificate(bytes(peer_certificate))
        except ValueError as exc:
            raise PeerIdentityError(f"peer certificate does not parse: {exc}") from exc
    return leaf_app_identity(peer_certificate)
