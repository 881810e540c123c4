"""X.509-SVIDs and trust bundles: parsing, validation and the files they live in.

An SVID on disk is three PEM files, the layout ``trustmesh ca issue`` writes and spiffe-helper
can be told to write: ``svid.pem`` (leaf first, then any intermediates), ``svid.key`` (PKCS#8,
mode 0600) and ``bundle.pem`` (trust anchors). cert-manager's csi-driver-spiffe writes
``tls.crt``/``tls.key``/``ca.crt`` instead; :func:`load_svid_dir` reads either.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._der import DerError, LeafFacts, leaf_facts
from ._errors import SvidError
from ._peer import _app_identity, checked_spiffe_uri
from ._pemfiles import atomic_write, load_cert_chain_pem
from ._spiffe_id import AppIdentity

if TYPE_CHECKING:  # loaded lazily: a serving sidecar keeps PEM and never needs these objects
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey

SVID_FILES = ("svid.pem", "svid.key", "bundle.pem")
CERT_MANAGER_FILES = ("tls.crt", "tls.key", "ca.crt")

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.DOTALL)
_KEY_LABELS = (b"PRIVATE KEY", b"EC PRIVATE KEY", b"RSA PRIVATE KEY")


def _pem_blocks(data: bytes, what: str) -> list[tuple[bytes, bytes]]:
    """(label, DER) of each PEM block in ``data``; text between blocks is ignored, as OpenSSL
    and ``cryptography`` ignore it, but a block whose base64 does not decode is an error."""
    blocks = []
    for match in _PEM_BLOCK.finditer(data):
        try:
            der = base64.b64decode(b"".join(match.group(2).split()), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise SvidError(f"{what}: a PEM block is not base64 ({exc})") from None
        blocks.append((match.group(1), der))
    return blocks


def _to_pem(label: str, der: bytes) -> bytes:
    body = base64.encodebytes(der).replace(b"\n", b"")
    lines = b"\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    return b"-----BEGIN %s-----\n%s\n-----END %s-----\n" % (label.encode(), lines, label.encode())


def _pem_certificate_ders(data: bytes, what: str) -> tuple[bytes, ...]:
    """The DER of every certificate in a PEM list, each read far enough to be sure it is one."""
    ders = tuple(der for label, der in _pem_blocks(data, what) if label == b"CERTIFICATE")
    if not ders:
        raise SvidError(f"{what}: no certificate found")
    for der in ders:
        try:
            leaf_facts(der)
        except DerError as exc:
            raise SvidError(f"{what}: not a PEM certificate list ({exc})") from None
    return ders


def load_pem_certificates(data: bytes, what: str) -> tuple[x509.Certificate, ...]:
    from cryptography import x509

    try:
        certs = tuple(x509.load_pem_x509_certificates(data))
    except ValueError as exc:
        raise SvidError(f"{what}: not a PEM certificate list ({exc})") from exc
    if not certs:
        raise SvidError(f"{what}: no certificate found")
    return certs


def certificates_to_pem(certs: Sequence[x509.Certificate]) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def load_pem_private_key(data: bytes, what: str) -> PrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SvidError(f"{what}: not an unencrypted PEM private key ({exc})") from exc
    supported = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
    if not isinstance(key, supported):
        raise SvidError(f"{what}: unsupported key type {type(key).__name__}")
    return key


def private_key_to_pem(key: PrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _public_bytes(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


class TrustBundle:
    """The CA certificates a peer's chain must lead to.

    Kept as PEM: a sidecar only hands the bundle to OpenSSL. :attr:`authorities` (``cryptography``
    objects) is built on first use, for the CA and the audit verifier, which inspect certificates.
    """

    __slots__ = ("_authorities", "_pem")

    def __init__(self, authorities: Sequence[x509.Certificate]) -> None:
        if not authorities:
            raise SvidError("trust bundle is empty")
        self._authorities: tuple[x509.Certificate, ...] | None = tuple(authorities)
        self._pem: bytes | None = None

    @classmethod
    def from_pem(cls, data: bytes, what: str = "trust bundle") -> TrustBundle:
        ders = _pem_certificate_ders(data, what)
        bundle = cls.__new__(cls)
        bundle._authorities = None
        bundle._pem = b"".join(_to_pem("CERTIFICATE", der) for der in ders)
        return bundle

    @classmethod
    def load(cls, path: Path | str) -> TrustBundle:
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise SvidError(f"cannot read trust bundle {path}: {exc.strerror}") from exc
        return cls.from_pem(data, str(path))

    @property
    def authorities(self) -> tuple[x509.Certificate, ...]:
        if self._authorities is None:
            self._authorities = load_pem_certificates(self.to_pem(), "trust bundle")
        return self._authorities

    def authority_ders(self) -> frozenset[bytes]:
        """The DER of each CA certificate (no X.509 library needed): two bundles trust the
        same authorities if these are equal, and a CA left out of a new one was removed."""
        return frozenset(_pem_certificate_ders(self.to_pem(), "trust bundle"))

    def to_pem(self) -> bytes:
        if self._pem is None:
            self._pem = certificates_to_pem(self._authorities or ())
        return self._pem

    def expires_at(self) -> dt.datetime:
        """When the first of its CAs expires (no X.509 library needed): from then on, peers
        whose chains lead only to that CA are refused, and a CA past it signs nothing."""
        try:
            ends = [leaf_facts(der).not_after for der in self.authority_ders()]
        except DerError as exc:
            raise SvidError(f"trust bundle: a CA certificate does not parse ({exc})") from None
        return dt.datetime.fromtimestamp(min(ends), dt.UTC)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TrustBundle) and self.to_pem() == other.to_pem()

    def __hash__(self) -> int:
        return hash(self.to_pem())

    def __repr__(self) -> str:
        return f"TrustBundle({self.to_pem().count(b'-----BEGIN CERTIFICATE-----')} authorities)"


def _leaf_facts(der: bytes, what: str) -> LeafFacts:
    try:
        facts = leaf_facts(der)
    except DerError as exc:
        raise SvidError(f"{what}: leaf certificate does not parse ({exc})") from None
    if facts.key_algorithm == "other":
        raise SvidError(f"{what}: unsupported key type in the leaf certificate")
    # The leaf profile that matters for identity (one spiffe URI SAN, not a CA).
    _app_identity(checked_spiffe_uri(facts.has_san, facts.uris, facts.is_ca))
    return facts


class X509Svid:
    """A workload's certificate chain (leaf first) and the private key of the leaf.

    Held as PEM plus the facts of the leaf a sidecar uses (SPIFFE ID, validity, serial, key
    type), read without ``cryptography``: :meth:`from_pem` checks the key against the leaf with
    OpenSSL. :attr:`chain`, :attr:`leaf` and :attr:`private_key` give ``cryptography`` objects,
    loaded on first use, for the CA, SPIRE and the tests that build SVIDs from such objects.
    """

    __slots__ = ("_chain", "_chain_pem", "_facts", "_key", "_key_pem")

    def __init__(self, chain: Sequence[x509.Certificate], private_key: PrivateKey) -> None:
        chain = tuple(chain)
        if not chain:
            raise SvidError("SVID has no certificate")
        leaf_key = _public_bytes(chain[0].public_key())
        if leaf_key != _public_bytes(private_key.public_key()):
            raise SvidError("SVID private key does not match the leaf certificate")
        from cryptography.hazmat.primitives.serialization import Encoding

        self._facts = _leaf_facts(chain[0].public_bytes(Encoding.DER), "SVID")
        self._chain: tuple[x509.Certificate, ...] | None = chain
        self._key: Any = private_key
        self._chain_pem = certificates_to_pem(chain)
        self._key_pem = private_key_to_pem(private_key)

    @classmethod
    def from_pem(cls, chain_pem: bytes, key_pem: bytes, what: str = "SVID") -> X509Svid:
        ders = _pem_certificate_ders(chain_pem, f"{what} certificate")
        keys = [block for block in _pem_blocks(key_pem, f"{what} key") if block[0] in _KEY_LABELS]
        if len(keys) != 1:
            encrypted = b"ENCRYPTED" in key_pem
            raise SvidError(
                f"{what} key: not an unencrypted PEM private key "
                f"({'it is encrypted' if encrypted else f'found {len(keys)} private keys'})"
            )
        facts = _leaf_facts(ders[0], what)
        canonical_chain = b"".join(_to_pem("CERTIFICATE", der) for der in ders)
        canonical_key = _to_pem(keys[0][0].decode(), keys[0][1])
        try:  # OpenSSL compares the key with the leaf's public key (X509_check_private_key)
            probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            load_cert_chain_pem(probe, canonical_chain, canonical_key)
        except ssl.SSLError as exc:
            if "KEY_VALUES_MISMATCH" in str(exc) or "key values mismatch" in str(exc):
                raise SvidError("SVID private key does not match the leaf certificate") from None
            raise SvidError(f"{what} key: not a usable PEM private key ({exc})") from None
        except ValueError as exc:
            raise SvidError(f"{what} key: {exc}") from None
        svid = cls.__new__(cls)
        svid._facts, svid._chain, svid._key = facts, None, None
        svid._chain_pem, svid._key_pem = canonical_chain, canonical_key
        return svid

    @property
    def chain(self) -> tuple[x509.Certificate, ...]:
        if self._chain is None:
            self._chain = load_pem_certificates(self._chain_pem, "SVID certificate")
        return self._chain

    @property
    def private_key(self) -> PrivateKey:
        if self._key is None:
            self._key = load_pem_private_key(self._key_pem, "SVID key")
        return self._key

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]

    @property
    def spiffe_uri(self) -> str:
        """The leaf's SPIFFE ID exactly as the certificate spells it."""
        return self._facts.uris[0]

    @property
    def identity(self) -> AppIdentity:
        """The App this SVID is under the identity map in force (asked afresh each time)."""
        return _app_identity(self.spiffe_uri)

    @property
    def serial_number(self) -> int:
        return self._facts.serial_number

    @property
    def key_algorithm(self) -> str:
        """``ec``, ``ed25519`` or ``rsa``: how the leaf's key signs."""
        return self._facts.key_algorithm

    @property
    def not_before(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self._facts.not_before, dt.UTC)

    @property
    def not_after(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self._facts.not_after, dt.UTC)

    def renewal_time(self, received_at: dt.datetime | None = None) -> dt.datetime:
        """Half-way through the leaf's lifetime: Dapr's and SPIRE's renewal point.

        Pass ``received_at`` (when this SVID arrived) to measure from there instead of from
        ``notBefore``: leaves are back-dated for clock skew (15 minutes here and in Dapr), which
        is noise for a 24-hour certificate but puts the half-way point of a short-lived one in
        the past, and a holder would renew in a loop.
        """
        start = self.not_before if received_at is None else max(self.not_before, received_at)
        return start + (self.not_after - start) / 2

    def chain_pem(self) -> bytes:
        return self._chain_pem

    def sign(self, data: bytes) -> bytes:
        """Sign ``data`` with the leaf's key: ECDSA or RSA PKCS#1 v1.5 over SHA-256, or Ed25519
        (through the interpreter's own libcrypto; see ``_sign``)."""
        from ._sign import sign

        return sign(self._key_pem, self.key_algorithm, data)

    def key_pem(self) -> bytes:
        return self._key_pem

    def __repr__(self) -> str:
        return f"X509Svid({self.spiffe_uri}, serial={self.serial_number:x})"


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SvidError(f"cannot read {path}: {exc.strerror}") from exc


def svid_dir_layout(directory: Path | str) -> tuple[Path, Path, Path]:
    """The (chain, key, bundle) paths in ``directory``: ours if present, else cert-manager's."""
    directory = Path(directory)
    ours = tuple(directory / name for name in SVID_FILES)
    theirs = tuple(directory / name for name in CERT_MANAGER_FILES)
    if ours[0].exists() or not theirs[0].exists():
        return ours  # type: ignore[return-value]
    return theirs  # type: ignore[return-value]


def load_svid_dir(directory: Path | str) -> tuple[X509Svid, TrustBundle]:
    chain_path, key_path, bundle_path = svid_dir_layout(directory)
    svid = X509Svid.from_pem(_read(chain_path), _read(key_path), str(chain_path))
    bundle = TrustBundle.from_pem(_read(bundle_path), str(bundle_path))
    return svid, bundle


def save_svid_dir(directory: Path | str, svid: X509Svid, bundle: TrustBundle) -> None:
    """Write ``svid.pem``, ``svid.key`` (0600) and ``bundle.pem``; the key goes first so a
    watcher never pairs a new certificate with an old key for long."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write(directory / "svid.key", svid.key_pem(), mode=0o600)
    atomic_write(directory / "svid.pem", svid.chain_pem())
    atomic_write(directory / "bundle.pem", bundle.to_pem())
