"""CSRs a legitimate client would never send: other identities, weak keys, broken signatures."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID


def csr_claiming(spiffe_id: str, key=None) -> bytes:
    """A CSR whose subject and SAN both ask for ``spiffe_id``; the CA must ignore both."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, spiffe_id)]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def weak_rsa_csr(bits: int = 1024) -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return csr_claiming("spiffe://public/ns/default/web", key)


def secp256k1_csr() -> bytes:
    return csr_claiming("spiffe://public/ns/default/web", ec.generate_private_key(ec.SECP256K1()))


def tampered_csr() -> bytes:
    """A well-formed CSR whose self-signature no longer verifies (one signature byte flipped)."""
    der = bytearray(
        x509.load_pem_x509_csr(csr_claiming("spiffe://public/ns/default/web")).public_bytes(
            serialization.Encoding.DER
        )
    )
    der[-1] ^= 0x01
    return x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
