"""Atomic, permission-aware file writes shared by every package that keeps secrets on disk.

A reader must never see half a certificate or a key with loose permissions, so every write goes
to a sibling temporary file created with its final mode and is renamed into place.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path


def atomic_write(path: Path | str, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` so readers see either the old or the new content."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


_SHM = "/dev/shm"  # noqa: S108 - tmpfs keeps the key off disk; mkdtemp makes a 0700 dir
_PRIVATE_TMP = _SHM if os.path.isdir(_SHM) and os.access(_SHM, os.W_OK) else None


def _no_passphrase() -> bytes:
    raise ValueError("the private key is encrypted; give an unencrypted PKCS#8 or SEC1 key")


def load_cert_chain_pem(ctx, chain_pem: bytes, key_pem: bytes) -> None:
    """``ctx.load_cert_chain`` from bytes. The stdlib loads a chain only from files, so the key is
    written, loaded and unlinked inside a fresh 0700 directory (on tmpfs where there is one).
    OpenSSL refuses a key that does not match the leaf (``KEY_VALUES_MISMATCH``); an encrypted
    key fails here rather than prompting on a terminal."""
    directory = tempfile.mkdtemp(prefix="trustmesh-svid-", dir=_PRIVATE_TMP)
    try:
        cert_path = os.path.join(directory, "chain.pem")
        key_path = os.path.join(directory, "key.pem")
        for path, data in ((cert_path, chain_pem), (key_path, key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
        ctx.load_cert_chain(cert_path, key_path, password=_no_passphrase)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
