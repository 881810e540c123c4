"""The serving path reads certificates without ``cryptography``: its reader must agree with it.

Each fact ``identity._der`` reads (serial, validity, URI SANs, CA flag, key type) is compared with
``cryptography``'s reading of the same certificate; PEM SVIDs are checked by OpenSSL (a foreign
key, an encrypted key are refused); and signatures made through the interpreter's libcrypto verify
with ``cryptography``, as the audit verifier checks them.
"""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from identity import PeerIdentityError, SvidError, X509Svid, private_key_to_pem
from identity import _sign as signing
from identity._der import DerError, leaf_facts
from identity._peer import verified_peer_svid
from tests._support.certs import build_cert

APP = "spiffe://public/ns/default/web"
segment = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20)


@settings(max_examples=40, deadline=None)
@given(
    uris=st.lists(segment.map(lambda s: f"spiffe://public/ns/default/{s}"), max_size=3),
    dns=st.lists(segment.map(lambda s: f"{s}.local"), max_size=2),
    ca=st.booleans(),
    seconds=st.integers(min_value=60, max_value=20 * 365 * 86400),
)
def test_the_leaf_reader_agrees_with_cryptography(uris, dns, ca, seconds) -> None:
    cert, _ = build_cert(uris=tuple(uris), dns=tuple(dns), ca=ca, ttl=dt.timedelta(seconds=seconds))
    facts = leaf_facts(cert.public_bytes(serialization.Encoding.DER))
    assert facts.serial_number == cert.serial_number
    assert facts.not_before == cert.not_valid_before_utc.timestamp()
    assert facts.not_after == cert.not_valid_after_utc.timestamp()
    assert facts.uris == tuple(uris)
    assert facts.has_san == bool(uris or dns)
    assert facts.is_ca is ca
    assert facts.key_algorithm == "ec"


@pytest.mark.parametrize(
    "der",
    [b"", b"\x30", b"\x30\x81\x01\x00", b"\x30\x03garbage", b"\x31\x00", b"\x30\x00\x00"],
    ids=["empty", "no-length", "non-minimal-length", "truncated", "not-a-sequence", "trailing"],
)
def test_the_leaf_reader_refuses_what_is_not_a_certificate(der: bytes) -> None:
    with pytest.raises(DerError):
        leaf_facts(der)


def test_a_leaf_that_repeats_an_extension_is_refused() -> None:
    cert, _ = build_cert(uris=(APP,))
    der = cert.public_bytes(serialization.Encoding.DER)
    # Rename the basicConstraints OID (2.5.29.19) to the SAN's (2.5.29.17): two SAN extensions.
    doctored = der.replace(bytes.fromhex("0603551d13"), bytes.fromhex("0603551d11"), 1)
    with pytest.raises(DerError):
        leaf_facts(doctored)


def _pem(cert, key) -> tuple[bytes, bytes]:
    return cert.public_bytes(serialization.Encoding.PEM), private_key_to_pem(key)


def test_a_pem_svid_reads_as_the_same_svid_built_from_objects() -> None:
    cert, key = build_cert(uris=(APP,))
    from_objects = X509Svid((cert,), key)
    from_pem = X509Svid.from_pem(*_pem(cert, key))
    assert from_pem.identity == from_objects.identity
    assert from_pem.not_after == from_objects.not_after == cert.not_valid_after_utc
    assert from_pem.serial_number == cert.serial_number
    assert from_pem.chain_pem() == from_objects.chain_pem()
    assert from_pem.leaf == cert  # cryptography objects are still there for whoever asks


def test_a_pem_svid_with_a_foreign_key_is_refused_by_openssl() -> None:
    cert, _ = build_cert(uris=(APP,))
    _, other = build_cert(uris=(APP,))
    with pytest.raises(SvidError, match="private key does not match the leaf"):
        X509Svid.from_pem(*_pem(cert, other))


def test_a_pem_svid_with_an_encrypted_key_is_refused() -> None:
    cert, key = build_cert(uris=(APP,))
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    with pytest.raises(SvidError, match="it is encrypted"):
        X509Svid.from_pem(cert.public_bytes(serialization.Encoding.PEM), encrypted)


def test_a_pem_svid_of_a_ca_certificate_is_refused() -> None:
    cert, key = build_cert(uris=(APP,), ca=True)
    with pytest.raises(PeerIdentityError, match="CA certificate"):
        X509Svid.from_pem(*_pem(cert, key))


def _verify(public_key, signature: bytes, data: bytes) -> None:
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        public_key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    elif isinstance(public_key, rsa.RSAPublicKey):
        public_key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
    else:
        public_key.verify(signature, data)


KEYS = {
    "ec": lambda: ec.generate_private_key(ec.SECP256R1()),
    "rsa": lambda: rsa.generate_private_key(65537, 2048),
    "ed25519": ed25519.Ed25519PrivateKey.generate,
}


@pytest.mark.parametrize("through", ["libcrypto", "cryptography"])
@pytest.mark.parametrize("kind", sorted(KEYS))
def test_svid_signatures_verify_with_cryptography(kind, through, monkeypatch) -> None:
    if through == "cryptography":
        monkeypatch.setattr(signing, "_lib", False)  # as where libcrypto is not reachable
    else:
        assert signing._libcrypto(), "this interpreter's _ssl should expose libcrypto"
    signer = ec.generate_private_key(ec.SECP256R1())  # the issuer's key; the leaf's is ``kind``
    cert, key = build_cert(uris=(APP,), key=KEYS[kind](), issuer_key=signer)
    svid = X509Svid.from_pem(*_pem(cert, key))
    assert svid.key_algorithm == kind
    data = b'{"kind":"checkpoint","prev":"abc"}'
    _verify(cert.public_key(), svid.sign(data), data)
    with pytest.raises(InvalidSignature):  # the twin: other bytes do not verify
        _verify(cert.public_key(), svid.sign(data), data + b" ")


def test_an_unverified_peer_is_refused_whatever_its_certificate_says() -> None:
    cert, _ = build_cert(uris=(APP,))
    der = cert.public_bytes(serialization.Encoding.DER)
    with pytest.raises(PeerIdentityError, match="not verified"):
        verified_peer_svid({}, der)  # what getpeercert() returns for an unverified chain
    with pytest.raises(PeerIdentityError, match="no certificate"):
        verified_peer_svid(None, None)


def test_a_peer_whose_sans_openssl_reads_differently_is_refused() -> None:
    cert, _ = build_cert(uris=(APP,))
    der = cert.public_bytes(serialization.Encoding.DER)
    decoded = {"subjectAltName": (("URI", APP),), "notAfter": "Jan  1 00:00:00 2100 GMT"}
    assert str(verified_peer_svid(decoded, der).spiffe_id) == APP
    other = {**decoded, "subjectAltName": (("URI", "spiffe://public/ns/default/admin"),)}
    with pytest.raises(PeerIdentityError, match="read differently"):
        verified_peer_svid(other, der)
