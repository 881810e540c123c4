"""Certificate signing requests: the only thing a workload sends the CA about its key.

The CA reads exactly two facts from a CSR: the public key, and that the requester holds the
matching private key (the CSR's self-signature). Subject and extensions are ignored, not
validated: identity comes from the join token or the client certificate, so a CSR asking for
``spiffe://public/ns/default/admin`` is simply signed for whoever the token says. Like Dapr's
sidecar, our client sends an empty subject so nothing suggests otherwise.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from ._authority import check_public_key_strength
from ._errors import CSRSignatureInvalid, InvalidCSR

_PEM_MARKER = b"-----BEGIN CERTIFICATE REQUEST-----"


def public_key_from_csr(pem: bytes):
    """The public key of a PEM CSR whose self-signature verifies and whose key is strong enough.

    Raises :class:`InvalidCSR` for anything that is not one PEM CSR, :class:`CSRSignatureInvalid`
    if the requester did not prove possession of the key, :class:`WeakKey` for a weak key.
    """
    if _PEM_MARKER not in pem:
        raise InvalidCSR("body is not a PEM certificate request (BEGIN CERTIFICATE REQUEST)")
    if pem.count(_PEM_MARKER) != 1:
        raise InvalidCSR("body must contain exactly one certificate request")
    try:
        csr = x509.load_pem_x509_csr(pem)
    except ValueError as exc:
        raise InvalidCSR(f"certificate request does not parse: {exc}") from exc
    try:
        public_key = csr.public_key()
        signature_ok = csr.is_signature_valid
    except (ValueError, TypeError) as exc:
        raise InvalidCSR(f"certificate request key is unreadable: {exc}") from exc
    # Strength first: a weak key's self-signature proves little, and the refusal is clearer.
    check_public_key_strength(public_key)
    if not signature_ok:
        raise CSRSignatureInvalid("certificate request signature does not verify")
    return public_key


def build_csr(private_key) -> bytes:
    """A PEM CSR over ``private_key`` with an empty subject and no extensions."""
    algorithm = None if isinstance(private_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(private_key, algorithm)
    )
    return csr.public_bytes(serialization.Encoding.PEM)
