"""Saving and loading the CA's keys and certificates in the state directory.

Keys are written 0600 with :func:`identity.atomic_write` (temp file + rename, so a crash leaves
the old file or the new one, never half of either) and refused on load if anyone else may read
them: a leaked issuer key is every identity in the mesh. On load the pieces are checked against
each other (issuer signed by root, keys match certificates) so a hand-edited directory fails here
with a sentence instead of producing certificates nobody can verify.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from identity import (
    IdentityError,
    TrustBundle,
    atomic_write,
    certificates_to_pem,
    load_pem_certificates,
    load_pem_private_key,
    private_key_to_pem,
)

from ._authority import CertificateAuthority, root_trust_domain
from ._errors import CAAlreadyExists, CAError, CANotInitialised, CAStorageError
from .home import PRIVATE_FILE_MODE, CALayout, locked


def ca_exists(layout: CALayout) -> bool:
    """True if any CA file is present: a half-written CA is still one ``init`` must not clobber."""
    return any(path.exists() for path in layout.all_files)


def save_ca(layout: CALayout, authority: CertificateAuthority, *, force: bool = False) -> None:
    """Write ``authority`` into ``layout``; refuse to replace an existing CA unless ``force``.

    Replacing a CA also drops its outstanding join tokens: they were minted to enrol workloads
    under the old root, and nobody should discover later that they still work.
    """
    layout.ensure()
    with locked(layout.lock):
        if ca_exists(layout) and not force:
            raise CAAlreadyExists(
                f"a CA already exists in {layout.directory}; use --force to replace it"
            )
        try:
            atomic_write(layout.root_key, private_key_to_pem(authority.root_key), PRIVATE_FILE_MODE)
            atomic_write(
                layout.issuer_key, private_key_to_pem(authority.issuer_key), PRIVATE_FILE_MODE
            )
            atomic_write(layout.root_cert, certificates_to_pem([authority.root_cert]))
            atomic_write(layout.issuer_cert, certificates_to_pem([authority.issuer_cert]))
            atomic_write(layout.bundle, authority.bundle.to_pem())
            if force:
                with contextlib.suppress(FileNotFoundError):
                    layout.tokens.unlink()
        except OSError as exc:
            raise CAStorageError(f"cannot write the CA in {layout.directory}: {exc}") from exc


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CANotInitialised(
            f"no CA in {path.parent} ({path.name} is missing); run 'trustmesh ca init'"
        ) from None
    except OSError as exc:
        raise CAStorageError(f"cannot read {path}: {exc.strerror}") from exc


def _read_private(path: Path) -> bytes:
    data = _read(path)
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        raise CAStorageError(
            f"{path} is readable by other users (mode {mode:04o}); run 'chmod 600 {path}'"
        )
    return data


def _one_cert(path: Path) -> x509.Certificate:
    try:
        certs = load_pem_certificates(_read(path), str(path))
    except IdentityError as exc:
        raise CAStorageError(str(exc)) from exc
    if len(certs) != 1:
        raise CAStorageError(f"{path}: expected one certificate, found {len(certs)}")
    return certs[0]


def _key(path: Path):
    try:
        return load_pem_private_key(_read_private(path), str(path))
    except IdentityError as exc:
        raise CAStorageError(str(exc)) from exc


def _same_key(cert: x509.Certificate, key) -> bool:
    def spki(public_key) -> bytes:
        return public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    return spki(cert.public_key()) == spki(key.public_key())


def load_ca(layout: CALayout) -> CertificateAuthority:
    """Read and cross-check the CA in ``layout``; raise :class:`CAError` naming what is wrong."""
    root_cert, issuer_cert = _one_cert(layout.root_cert), _one_cert(layout.issuer_cert)
    root_key, issuer_key = _key(layout.root_key), _key(layout.issuer_key)
    if not _same_key(root_cert, root_key):
        raise _mismatch(layout, f"{layout.root_key} does not match {layout.root_cert}")
    if not _same_key(issuer_cert, issuer_key):
        raise _mismatch(layout, f"{layout.issuer_key} does not match {layout.issuer_cert}")
    try:
        issuer_cert.verify_directly_issued_by(root_cert)
    except (InvalidSignature, ValueError, TypeError) as exc:
        raise _mismatch(
            layout, f"{layout.issuer_cert} is not signed by {layout.root_cert}"
        ) from exc
    try:
        trust_domain = root_trust_domain(root_cert)
    except (CAError, IdentityError) as exc:
        raise CAStorageError(f"{layout.root_cert}: {exc}") from exc
    return CertificateAuthority(trust_domain, root_cert, root_key, issuer_cert, issuer_key)


def _mismatch(layout: CALayout, message: str) -> CAStorageError:
    """Files of two CAs side by side: what a ``ca rotate activate`` cut short between its four
    files leaves. Say so, or the operator may take it for a broken CA and ``init --force``
    (every sidecar enrolling again) where running activate again finishes the job."""
    if _holds_part_of_next(layout):
        message += (
            "; a 'trustmesh ca rotate activate' cut short leaves this: run it again to finish"
        )
    return CAStorageError(message)


def _holds_part_of_next(layout: CALayout) -> bool:
    """Some of the CA's files are already those of the prepared CA (and so not a hand edit)."""
    if layout.part:
        return False
    ours = (layout.root_key, layout.issuer_key, layout.root_cert, layout.issuer_cert)
    prepared = layout.next
    theirs = (prepared.root_key, prepared.issuer_key, prepared.root_cert, prepared.issuer_cert)
    for mine, next_one in zip(ours, theirs, strict=True):
        with contextlib.suppress(OSError):
            if mine.read_bytes() == next_one.read_bytes():
                return True
    return False


def load_bundle(layout: CALayout) -> TrustBundle:
    """The trust bundle alone: what ``ca bundle`` prints and what needs no key to read."""
    try:
        return TrustBundle.from_pem(_read(layout.bundle), str(layout.bundle))
    except IdentityError as exc:
        raise CAStorageError(str(exc)) from exc


def load_serving(layout: CALayout) -> tuple[CertificateAuthority, TrustBundle]:
    """The CA and the bundle ``ca serve`` hands out and accepts renewals under.

    The bundle must hold the CA's own root: every SVID the CA signs chains to it, so a bundle
    without it would have sidecars refuse the CA and each other, and the CA refuse renewals.
    """
    authority, trusted = load_ca(layout), load_bundle(layout)
    if authority.root_cert not in trusted.authorities:
        raise CAStorageError(
            f"{layout.bundle} does not hold the CA's own root ({layout.root_cert})"
        )
    return authority, trusted
