"""X.509-SVIDs and trust bundles: parsing, validation and the files they live in.

An SVID on disk is three PEM files, the layout ``trustmesh ca issue`` writes and spiffe-helper
can be told to write: ``svid.pem`` (leaf first, then any intermediates), ``svid.key`` (PKCS#8,
mode 0600) and ``bundle.pem`` (trust anchors). cert-manager's csi-driver-spiffe writes
``tls.crt``/``tls.key``/``ca.crt`` instead; :func:`load_svid_dir` reads either.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from ._errors import SvidError
from ._peer import leaf_app_identity
from ._pemfiles import atomic_write
from ._spiffe_id import AppIdentity

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey

SVID_FILES = ("svid.pem", "svid.key", "bundle.pem")
CERT_MANAGER_FILES = ("tls.crt", "tls.key", "ca.crt")


def load_pem_certificates(data: bytes, what: str) -> tuple[x509.Certificate, ...]:
    try:
        certs = tuple(x509.load_pem_x509_certificates(data))
    except ValueError as exc:
        raise SvidError(f"{what}: not a PEM certificate list ({exc})") from exc
    if not certs:
        raise SvidError(f"{what}: no certificate found")
    return certs


def certificates_to_pem(certs: Sequence[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def load_pem_private_key(data: bytes, what: str) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SvidError(f"{what}: not an unencrypted PEM private key ({exc})") from exc
    if not isinstance(key, PrivateKey):
        raise SvidError(f"{what}: unsupported key type {type(key).__name__}")
    return key


def private_key_to_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _public_bytes(key) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclass(frozen=True)
class TrustBundle:
    """The CA certificates a peer's chain must lead to."""

    authorities: tuple[x509.Certificate, ...]

    def __post_init__(self) -> None:
        if not self.authorities:
            raise SvidError("trust bundle is empty")

    @classmethod
    def from_pem(cls, data: bytes, what: str = "trust bundle") -> TrustBundle:
        return cls(load_pem_certificates(data, what))

    @classmethod
    def load(cls, path: Path | str) -> TrustBundle:
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise SvidError(f"cannot read trust bundle {path}: {exc.strerror}") from exc
        return cls.from_pem(data, str(path))

    def to_pem(self) -> bytes:
        return certificates_to_pem(self.authorities)


@dataclass(frozen=True)
class X509Svid:
    """A workload's certificate chain (leaf first) and the private key of the leaf."""

    chain: tuple[x509.Certificate, ...]
    private_key: PrivateKey

    def __post_init__(self) -> None:
        if not self.chain:
            raise SvidError("SVID has no certificate")
        leaf_key = _public_bytes(self.chain[0].public_key())
        if leaf_key != _public_bytes(self.private_key.public_key()):
            raise SvidError("SVID private key does not match the leaf certificate")
        # Validates the leaf profile that matters for identity (one spiffe URI SAN, not a CA).
        leaf_app_identity(self.chain[0])

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]

    @property
    def identity(self) -> AppIdentity:
        return leaf_app_identity(self.leaf)

    @property
    def not_before(self) -> dt.datetime:
        return self.leaf.not_valid_before_utc

    @property
    def not_after(self) -> dt.datetime:
        return self.leaf.not_valid_after_utc

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
        return certificates_to_pem(self.chain)

    def key_pem(self) -> bytes:
        return private_key_to_pem(self.private_key)

    @classmethod
    def from_pem(cls, chain_pem: bytes, key_pem: bytes, what: str = "SVID") -> X509Svid:
        return cls(
            load_pem_certificates(chain_pem, f"{what} certificate"),
            load_pem_private_key(key_pem, f"{what} key"),
        )


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
