"""Signing bytes with an SVID's key, through the OpenSSL the ``ssl`` module already loaded.

A sidecar signs an audit checkpoint every thousand records or every minute. Importing
``cryptography`` for that would cost every sidecar ~10 MiB of resident memory for its whole life,
and a helper process per checkpoint would cost ~100 ms of CPU each time, on the request path. The
interpreter's ``_ssl`` module is linked against libcrypto already, so this module asks that same
library, through :mod:`ctypes`, for the one operation needed: ``EVP_DigestSign`` over the data
with the PEM key (ECDSA and RSA PKCS#1 v1.5 with SHA-256, Ed25519 pure): the signatures
``cryptography`` makes, and the audit verifier checks them with ``cryptography``.

Where libcrypto's symbols are not reachable from ``_ssl`` (an interpreter that links OpenSSL
statically), :func:`sign` falls back to ``cryptography``, imported then and only then.
"""

from __future__ import annotations

import ctypes
from typing import Any

from ._errors import SvidError

_lib: Any = None  # the loaded function table, False when libcrypto is not reachable


def _libcrypto() -> Any:
    global _lib
    if _lib is None:
        try:
            import _ssl

            lib = ctypes.CDLL(_ssl.__file__)  # dlsym searches _ssl and the libcrypto it needs
            p, i, sz = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t
            table = (
                ("BIO_new_mem_buf", p, [ctypes.c_char_p, i]),
                ("BIO_free", i, [p]),
                ("PEM_read_bio_PrivateKey", p, [p, p, p, ctypes.c_char_p]),
                ("EVP_PKEY_free", None, [p]),
                ("EVP_MD_CTX_new", p, []),
                ("EVP_MD_CTX_free", None, [p]),
                ("EVP_sha256", p, []),
                ("EVP_DigestSignInit", i, [p, p, p, p, p]),
                ("EVP_DigestSign", i, [p, p, ctypes.POINTER(sz), ctypes.c_char_p, sz]),
                ("ERR_clear_error", None, []),
            )
            for name, restype, argtypes in table:
                function = getattr(lib, name)
                function.restype, function.argtypes = restype, argtypes
            _lib = lib
        except (OSError, AttributeError, ImportError):
            _lib = False
    return _lib


def _sign_openssl(lib: Any, key_pem: bytes, algorithm: str, data: bytes) -> bytes:
    bio = pkey = md_ctx = None
    try:
        bio = lib.BIO_new_mem_buf(key_pem, len(key_pem))
        # An empty passphrase as user data: an encrypted key fails instead of prompting a tty.
        pkey = bio and lib.PEM_read_bio_PrivateKey(bio, None, None, b"")
        md_ctx = lib.EVP_MD_CTX_new()
        if not bio or not pkey or not md_ctx:
            raise SvidError("OpenSSL could not read the SVID key for signing")
        digest = None if algorithm == "ed25519" else lib.EVP_sha256()
        if lib.EVP_DigestSignInit(md_ctx, None, digest, None, pkey) != 1:
            raise SvidError(f"OpenSSL refused to sign with the SVID's {algorithm} key")
        size = ctypes.c_size_t(0)
        if lib.EVP_DigestSign(md_ctx, None, ctypes.byref(size), data, len(data)) != 1:
            raise SvidError("OpenSSL could not size the signature")
        out = ctypes.create_string_buffer(size.value)
        if lib.EVP_DigestSign(md_ctx, out, ctypes.byref(size), data, len(data)) != 1:
            raise SvidError("OpenSSL could not sign")
        return out.raw[: size.value]
    finally:
        if md_ctx:
            lib.EVP_MD_CTX_free(md_ctx)
        if pkey:
            lib.EVP_PKEY_free(pkey)
        if bio:
            lib.BIO_free(bio)
        lib.ERR_clear_error()  # leave no error behind for the ssl module to misreport


def _sign_cryptography(key_pem: bytes, data: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    from ._svid import load_pem_private_key

    key = load_pem_private_key(key_pem, "SVID key")
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(hashes.SHA256()))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    return key.sign(data)  # Ed25519


def sign(key_pem: bytes, algorithm: str, data: bytes) -> bytes:
    """Sign ``data`` with the PEM private key whose type is ``algorithm`` (``ec``, ``rsa`` or
    ``ed25519``, as :attr:`X509Svid.key_algorithm` reads it off the leaf)."""
    if algorithm not in ("ec", "rsa", "ed25519"):
        raise SvidError(f"cannot sign with a {algorithm} key")
    lib = _libcrypto()
    if lib:
        return _sign_openssl(lib, key_pem, algorithm, data)
    return _sign_cryptography(key_pem, data)
