"""Signed checkpoints: the sidecar's SVID vouches for the chain head.

The hash chain alone shows that a file was edited, not who wrote it: anyone who can write the
file can write a whole new chain. A checkpoint is a record in the chain whose ``prev`` is the
head it vouches for, signed with the sidecar's SVID key and carrying the SVID chain, so the
verifier checks it against the trust bundle (signature, chain to an authority, SPIFFE ID of the
log's owner). A forged chain therefore needs the sidecar's private key.

The signature covers the checkpoint's own JSON encoding without ``sig``; checkpoints contain only
strings and integers, so decoding and re-encoding them gives the same bytes.
"""

from __future__ import annotations

import base64
import datetime as dt
from typing import TYPE_CHECKING, Any

from identity import IdentityError, TrustBundle, X509Svid, leaf_spiffe_uri

from .record import CHECKPOINT, encode, rfc3339

if TYPE_CHECKING:
    from cryptography import x509

MAX_CHAIN_DEPTH = 6


class CheckpointInvalid(ValueError):
    """A checkpoint whose signature, certificate chain or identity does not hold."""


def checkpoint_entry(
    seq: int, ts: float, prev: str, records: int, svid: X509Svid
) -> dict[str, Any]:
    """A signed checkpoint over ``prev`` (the hash of record ``seq - 1``)."""
    entry: dict[str, Any] = {
        "seq": seq,
        "time": rfc3339(ts),
        "kind": CHECKPOINT,
        "spiffe_id": svid.spiffe_uri,
        "records": records,
        "svid": svid.chain_pem().decode("ascii"),
        "prev": prev,
    }
    entry["sig"] = base64.b64encode(svid.sign(encode(entry))).decode("ascii")
    return entry


# Verifying (``trustmesh audit verify``) inspects certificates with ``cryptography``; signing
# (the sidecar) does not, so the sidecar never loads it.


def _verify_signature(public_key, signature: bytes, data: bytes) -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

    if isinstance(public_key, ec.EllipticCurvePublicKey):
        public_key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    elif isinstance(public_key, rsa.RSAPublicKey):
        public_key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
    elif isinstance(public_key, ed25519.Ed25519PublicKey):
        public_key.verify(signature, data)
    else:
        raise CheckpointInvalid(f"unsupported key type {type(public_key).__name__}")


def _chains_to_bundle(chain: list[x509.Certificate], bundle: TrustBundle, at: dt.datetime) -> None:
    """The leaf leads, through the intermediates it carries, to an authority of the bundle."""
    from cryptography.exceptions import InvalidSignature

    anchors = {a.subject.public_bytes(): a for a in bundle.authorities}
    current = chain[0]
    pool = chain[1:]
    for _ in range(MAX_CHAIN_DEPTH):
        if not current.not_valid_before_utc <= at <= current.not_valid_after_utc:
            raise CheckpointInvalid(
                f"certificate {current.subject.rfc4514_string() or 'leaf'} was not valid at "
                f"{at.isoformat()}"
            )
        anchor = anchors.get(current.issuer.public_bytes())
        if anchor is not None:
            try:
                current.verify_directly_issued_by(anchor)
                return
            except (ValueError, TypeError, InvalidSignature):
                pass
        issuers = [c for c in pool if c.subject == current.issuer]
        if not issuers:
            break
        try:
            current.verify_directly_issued_by(issuers[0])
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise CheckpointInvalid("certificate chain signature does not verify") from exc
        current, pool = issuers[0], [c for c in pool if c is not issuers[0]]
    raise CheckpointInvalid("signing certificate does not chain to the trust bundle")


def verify_checkpoint(entry: dict[str, Any], bundle: TrustBundle) -> str:
    """Check one checkpoint; return the SPIFFE ID that signed it."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature

    unsigned = dict(entry)
    signature = unsigned.pop("sig", None)
    if not isinstance(signature, str) or not isinstance(entry.get("svid"), str):
        raise CheckpointInvalid("checkpoint has no signature or no SVID")
    try:
        chain = list(x509.load_pem_x509_certificates(entry["svid"].encode("ascii")))
        raw = base64.b64decode(signature, validate=True)
        at = dt.datetime.fromisoformat(str(entry.get("time", "")).replace("Z", "+00:00"))
    except (ValueError, UnicodeError) as exc:
        raise CheckpointInvalid(f"checkpoint is malformed: {exc}") from exc
    if not chain:
        raise CheckpointInvalid("checkpoint carries no certificate")
    try:
        _verify_signature(chain[0].public_key(), raw, encode(unsigned))
    except (InvalidSignature, ValueError, TypeError):
        raise CheckpointInvalid("checkpoint signature does not verify") from None
    _chains_to_bundle(chain, bundle, at)
    try:
        signer = leaf_spiffe_uri(chain[0])
    except IdentityError as exc:
        raise CheckpointInvalid(f"signing certificate has no SPIFFE ID: {exc}") from exc
    if signer != entry.get("spiffe_id"):
        raise CheckpointInvalid(
            f"checkpoint names {entry.get('spiffe_id')} but was signed by {signer}"
        )
    return signer
