"""Signing: the root, the issuing intermediate and the X.509-SVID leaf profile.

Two tiers, as Dapr's Sentry has: a self-signed root that is the trust bundle, and an issuer
intermediate that signs workloads, so the root key is read only when the issuer is (re)made.

Extensions, each with the RFC that asks for it:

* root — basicConstraints CA:true (critical, RFC 5280 §4.2.1.9); keyUsage keyCertSign+cRLSign
  (critical, §4.2.1.3); nameConstraints permitting only URIs in this trust domain (critical,
  §4.2.1.10: for a URI the constraint is its host, and the host of a SPIFFE ID is its trust
  domain), so neither this root nor anything under it can vouch for another domain; SKI.
* issuer — CA:true pathlen 0 (critical); keyUsage keyCertSign+cRLSign+digitalSignature
  (critical); SKI; AKI.
* leaf (X.509-SVID spec §4–5) — an empty subject, so the SAN is critical (RFC 5280 §4.2.1.6);
  exactly one URI SAN, the SPIFFE ID; basicConstraints CA:false (critical); keyUsage
  digitalSignature (critical); EKU serverAuth+clientAuth; SKI; AKI; a random serial of 159 bits;
  notBefore back-dated for clock skew (Sentry: 15 min); notAfter clamped to the issuer's.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from identity import AppIdentity, TrustBundle, X509Svid, validate_trust_domain

from ._errors import ReservedIdentity, SigningRefused, WeakKey

CLOCK_SKEW = dt.timedelta(minutes=15)
DEFAULT_CA_TTL = dt.timedelta(days=365)
DEFAULT_LEAF_TTL = dt.timedelta(hours=24)
MIN_RSA_BITS = 2048
ALLOWED_CURVES = (ec.SECP256R1, ec.SECP384R1)

# The CA's own TLS identity lives in a namespace no workload may be issued into, so holding a
# join token or an SVID can never yield a certificate that passes for the CA.
CONTROL_PLANE_NAMESPACE = "trustmesh-system"
CA_SERVER_APP_ID = "trustmesh-ca"


def ca_server_identity(trust_domain: str) -> AppIdentity:
    """``spiffe://<td>/ns/trustmesh-system/trustmesh-ca``: what clients require of the CA."""
    return AppIdentity(trust_domain, CONTROL_PLANE_NAMESPACE, CA_SERVER_APP_ID)


def check_workload_identity(identity: AppIdentity) -> AppIdentity:
    """Refuse identities reserved for the control plane; every workload issuance path calls it."""
    if identity.namespace == CONTROL_PLANE_NAMESPACE:
        raise ReservedIdentity(
            f"namespace {CONTROL_PLANE_NAMESPACE!r} is reserved for trustmesh itself: "
            f"refusing to issue {identity}"
        )
    return identity


def new_private_key(kind: str = "ec-p256"):
    """A fresh workload or CA key. ECDSA P-256 by default (Dapr ≤ 1.17 and SPIRE); Ed25519 too."""
    if kind == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unknown key type {kind!r}: use 'ec-p256' or 'ed25519'")


def check_public_key_strength(public_key) -> None:
    """Refuse keys a verifier should not have to trust: small RSA, unknown curves, DSA…"""
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < MIN_RSA_BITS:
            raise WeakKey(
                f"RSA key of {public_key.key_size} bits is too weak (minimum {MIN_RSA_BITS})"
            )
        return
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if not isinstance(public_key.curve, ALLOWED_CURVES):
            raise WeakKey(
                f"elliptic curve {public_key.curve.name} is not allowed (use P-256 or P-384)"
            )
        return
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return
    raise WeakKey(f"unsupported public key type {type(public_key).__name__}")


def _signature_hash(private_key):
    return None if isinstance(private_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def _ski(public_key) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(public_key)


def _aki(issuer_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _name(trust_domain: str, common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "trustmesh"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, trust_domain),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


@dataclass(frozen=True)
class CertificateAuthority:
    """A root and its issuing intermediate, both with keys, for one trust domain."""

    trust_domain: str
    root_cert: x509.Certificate
    root_key: object
    issuer_cert: x509.Certificate
    issuer_key: object

    @classmethod
    def create(
        cls,
        trust_domain: str,
        *,
        now: dt.datetime,
        ttl: dt.timedelta = DEFAULT_CA_TTL,
        key_type: str = "ec-p256",
    ) -> CertificateAuthority:
        validate_trust_domain(trust_domain)
        not_before, not_after = now - CLOCK_SKEW, now + ttl
        root_key = new_private_key(key_type)
        root_name = _name(trust_domain, f"trustmesh root CA ({trust_domain})")
        root = (
            x509.CertificateBuilder()
            .subject_name(root_name)
            .issuer_name(root_name)
            .public_key(root_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(_ca_key_usage(digital_signature=False), critical=True)
            .add_extension(
                x509.NameConstraints(
                    permitted_subtrees=[x509.UniformResourceIdentifier(trust_domain)],
                    excluded_subtrees=None,
                ),
                critical=True,
            )
            .add_extension(_ski(root_key.public_key()), critical=False)
            .sign(root_key, _signature_hash(root_key))
        )
        issuer_key = new_private_key(key_type)
        issuer = (
            x509.CertificateBuilder()
            .subject_name(_name(trust_domain, f"trustmesh issuer CA ({trust_domain})"))
            .issuer_name(root_name)
            .public_key(issuer_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_ca_key_usage(digital_signature=True), critical=True)
            .add_extension(_ski(issuer_key.public_key()), critical=False)
            .add_extension(_aki(root), critical=False)
            .sign(root_key, _signature_hash(root_key))
        )
        return cls(trust_domain, root, root_key, issuer, issuer_key)

    @property
    def bundle(self) -> TrustBundle:
        return TrustBundle((self.root_cert,))

    @property
    def not_after(self) -> dt.datetime:
        return min(self.root_cert.not_valid_after_utc, self.issuer_cert.not_valid_after_utc)

    def sign_leaf(
        self,
        identity: AppIdentity,
        public_key,
        *,
        now: dt.datetime,
        ttl: dt.timedelta = DEFAULT_LEAF_TTL,
    ) -> tuple[x509.Certificate, ...]:
        """Sign an X.509-SVID for ``identity`` over ``public_key``; returns leaf + issuer.

        The identity is the caller's decision (from a join token or a verified SVID), never
        something read out of a CSR: this function has no CSR parameter on purpose.
        """
        if identity.trust_domain != self.trust_domain:
            raise SigningRefused(
                f"identity {identity} is outside this CA's trust domain {self.trust_domain!r}"
            )
        if ttl <= dt.timedelta(0):
            raise SigningRefused("certificate lifetime must be positive")
        check_public_key_strength(public_key)
        if now >= self.not_after:
            raise SigningRefused("the CA certificate has expired; run 'trustmesh ca init --force'")
        not_after = min(now + ttl, self.not_after)
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.issuer_cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(not_after)
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(identity))]),
                critical=True,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_leaf_key_usage(), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(_ski(public_key), critical=False)
            .add_extension(_aki(self.issuer_cert), critical=False)
            .sign(self.issuer_key, _signature_hash(self.issuer_key))
        )
        return (leaf, self.issuer_cert)

    def issue(
        self,
        identity: AppIdentity,
        *,
        now: dt.datetime,
        ttl: dt.timedelta = DEFAULT_LEAF_TTL,
        key_type: str = "ec-p256",
    ) -> X509Svid:
        """Make a key and sign it: for ``trustmesh ca issue`` and tests, not the CSR service."""
        key = new_private_key(key_type)
        return X509Svid(self.sign_leaf(identity, key.public_key(), now=now, ttl=ttl), key)


def _ca_key_usage(*, digital_signature: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _leaf_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def root_trust_domain(root_cert: x509.Certificate) -> str:
    """The trust domain a trustmesh root vouches for, read off its URI name constraint.

    The constraint is what verifiers enforce, so it, rather than a subject attribute, is the
    authoritative answer. Roots with no single permitted URI subtree are not ours.
    """
    try:
        constraints = root_cert.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        raise SigningRefused(
            "root certificate has no name constraint, so no trust domain"
        ) from None
    uris = [
        name.value
        for name in constraints.permitted_subtrees or ()
        if isinstance(name, x509.UniformResourceIdentifier)
    ]
    if len(uris) != 1:
        raise SigningRefused(
            f"root certificate must permit exactly one URI trust domain, found {len(uris)}"
        )
    return validate_trust_domain(uris[0])
