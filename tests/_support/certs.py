"""Hand-built certificates for refusal tests: shapes our CA would never issue."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def build_cert(
    *,
    uris: tuple[str, ...] = (),
    dns: tuple[str, ...] = (),
    ca: bool = False,
    san: bool = True,
    issuer_cert: x509.Certificate | None = None,
    issuer_key=None,
    key=None,
    now: dt.datetime | None = None,
    ttl: dt.timedelta = dt.timedelta(hours=1),
) -> tuple[x509.Certificate, object]:
    """A certificate with exactly the SANs asked for, self-signed unless an issuer is given."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    now = now or dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject if issuer_cert else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + ttl)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    names = [x509.UniformResourceIdentifier(u) for u in uris] + [x509.DNSName(d) for d in dns]
    if san and names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if issuer_cert is not None:
        ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    cert = builder.sign(issuer_key or key, hashes.SHA256())
    return cert, key
