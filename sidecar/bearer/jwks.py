"""JWK Sets, parsed strictly into an immutable snapshot the validator reads.

Theory of operation. A JWKS is fetched from the issuer and turned into a ``JwksSnapshot`` once;
every request then only looks keys up. For each usable key we build, up front, one pyjwt
``PyJWK`` per algorithm that fits the key (RSA → RS*/PS*, EC by curve → one ES*, OKP → EdDSA),
each bound to its algorithm — pyjwt then verifies with the key's bound algorithm and never with
whatever the token header asks for.

What is kept, skipped or refused (RFC 7517, RFC 7518, RFC 8725):

* ``kty`` other than RSA, EC, OKP, oct: ignored (RFC 7517 §5: unknown members are ignored).
* ``oct`` keys are recorded with no verifier, so a token naming one is refused as
  ``key_type_mismatch`` — an HMAC key in a public set is a mistake, and it is never used.
* Keys carrying private material (``d``, ``p``, ``k``…) are skipped: a set that publishes private
  keys is compromised and we will not verify with what anyone can sign with.
* RSA moduli below 2048 bits are skipped (NIST SP 800-131A); EC curves other than P-256/384/521
  and OKP curves other than Ed25519/Ed448 are skipped.
* Keys without a ``kid`` are skipped: tokens must name their key, so they could never be chosen.
* ``use`` other than ``sig``, or ``key_ops`` without ``verify``: recorded with no verifier, so
  the refusal names the reason (``key_use_not_sig``) instead of looking like an unknown kid.
* **Duplicate kids**: RFC 7517 §4.5 only says kids SHOULD be distinct. A kid that names two
  members is ambiguous — which key verifies depends on the order a parser keeps — so *every* member
  with that kid is dropped and the kid recorded as ambiguous; tokens naming it are refused
  (``kid_ambiguous``) without triggering refreshes. The other keys of the set stay usable.

A set with no usable signing key at all is refused (``JwksInvalid``); the cache then keeps the
previous snapshot.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from jwt import PyJWK
from jwt.exceptions import PyJWTError

from ._json import loads_object
from .config import ALLOWED_ALGORITHMS
from .errors import JwksInvalid

MAX_KEYS = 100
MIN_RSA_BITS = 2048

RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
EC_ALGORITHM_OF_CURVE = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
OKP_CURVES = frozenset({"Ed25519", "Ed448"})

# RFC 7517 §4 / RFC 7518 §6: members that only private (or symmetric) keys have.
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


@dataclass(frozen=True, slots=True)
class JwkEntry:
    """One member of the set, as far as the validator needs to know it."""

    kid: str
    kty: str  # "RSA", "EC", "OKP" or "oct"
    curve: str | None  # `crv` for EC / OKP keys
    use: str | None  # JWK `use`, if present
    alg: str | None  # JWK `alg`, if present: the only algorithm the key may be used with
    key_ops: tuple[str, ...] | None
    # alg → PyJWK bound to that alg; empty when the key must never verify anything
    verifiers: Mapping[str, PyJWK] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class JwksSnapshot:
    """An immutable, parsed JWKS: swapped whole when a fetch succeeds."""

    source_url: str
    fetched_at: float
    keys: Mapping[str, JwkEntry]
    ambiguous_kids: frozenset[str] = frozenset()
    skipped: tuple[str, ...] = ()  # why members were left out, for the log (never for clients)

    def lookup(self, kid: str) -> JwkEntry | None:
        return self.keys.get(kid)

    @property
    def usable_kids(self) -> frozenset[str]:
        return frozenset(kid for kid, entry in self.keys.items() if entry.verifiers)


def parse_jwks(body: bytes, *, source_url: str, fetched_at: float) -> JwksSnapshot:
    """Parse a JWKS document; raise ``JwksInvalid`` unless it holds a usable signing key."""
    try:
        doc = loads_object(body)
    except ValueError as exc:
        raise JwksInvalid(f"{source_url}: {exc}") from exc
    members = doc.get("keys")
    if not isinstance(members, list):
        raise JwksInvalid(f"{source_url}: the document has no 'keys' list")
    if len(members) > MAX_KEYS:
        raise JwksInvalid(f"{source_url}: more than {MAX_KEYS} keys")

    kid_counts = Counter(m.get("kid") for m in members if isinstance(m, dict))
    ambiguous = frozenset(k for k, n in kid_counts.items() if isinstance(k, str) and n > 1)
    keys: dict[str, JwkEntry] = {}
    skipped: list[str] = []
    for index, member in enumerate(members):
        entry, why = _entry(member, ambiguous)
        if entry is None:
            skipped.append(f"keys[{index}]: {why}")
        else:
            keys[entry.kid] = entry
    snapshot = JwksSnapshot(
        source_url, fetched_at, MappingProxyType(keys), ambiguous, tuple(skipped)
    )
    if not snapshot.usable_kids:
        detail = "; ".join(skipped[:5]) or "the set is empty"
        raise JwksInvalid(f"{source_url}: no usable signing key ({detail})")
    return snapshot


def _entry(member: Any, ambiguous: frozenset[str]) -> tuple[JwkEntry | None, str]:
    """The entry for one member, or (None, why it is skipped)."""
    if not isinstance(member, dict):
        return None, "not a JSON object"
    kty, kid = member.get("kty"), member.get("kid")
    if not isinstance(kid, str) or not kid:
        return None, "no kid"
    if kid in ambiguous:
        return None, f"kid {kid!r} is used by more than one key"
    if kty not in ("RSA", "EC", "OKP", "oct"):
        return None, f"unsupported kty {kty!r}"
    if kty != "oct" and _PRIVATE_MEMBERS & member.keys():
        return None, f"kid {kid!r} publishes private key material"
    use, alg, key_ops, curve = (
        member.get("use"),
        member.get("alg"),
        member.get("key_ops"),
        member.get("crv"),
    )
    if use is not None and not isinstance(use, str):
        return None, f"kid {kid!r} has a non-string use"
    if alg is not None and not isinstance(alg, str):
        return None, f"kid {kid!r} has a non-string alg"
    if key_ops is not None:
        if not isinstance(key_ops, list) or not all(isinstance(op, str) for op in key_ops):
            return None, f"kid {kid!r} has a malformed key_ops"
        key_ops = tuple(key_ops)
    if curve is not None and not isinstance(curve, str):
        return None, f"kid {kid!r} has a non-string crv"
    if kty == "EC" and curve not in EC_ALGORITHM_OF_CURVE:
        return None, f"kid {kid!r} is on unsupported EC curve {curve!r}"
    if kty == "OKP" and curve not in OKP_CURVES:
        return None, f"kid {kid!r} is on unsupported OKP curve {curve!r}"
    entry = JwkEntry(kid, kty, curve, use, alg, key_ops)
    if kty == "oct" or not signs(entry):
        return entry, ""
    try:
        verifiers = _verifiers(member, entry)
    except (PyJWTError, ValueError, TypeError) as exc:
        return None, f"kid {kid!r} cannot be loaded ({type(exc).__name__})"
    if kty == "RSA" and any(v.key.key_size < MIN_RSA_BITS for v in verifiers.values()):
        return None, f"kid {kid!r} is an RSA key shorter than {MIN_RSA_BITS} bits"
    return JwkEntry(kid, kty, curve, use, alg, key_ops, MappingProxyType(verifiers)), ""


def signs(entry: JwkEntry) -> bool:
    """RFC 7517 §4.2/§4.3: a key published for encryption must not verify signatures."""
    if entry.use is not None and entry.use != "sig":
        return False
    return entry.key_ops is None or "verify" in entry.key_ops


def algorithms_for(entry: JwkEntry) -> tuple[str, ...]:
    """The algorithms a key of this type (and curve) can verify, by RFC 7518 / RFC 8037."""
    if entry.kty == "RSA":
        return RSA_ALGORITHMS
    if entry.kty == "EC" and entry.curve in EC_ALGORITHM_OF_CURVE:
        return (EC_ALGORITHM_OF_CURVE[entry.curve],)
    if entry.kty == "OKP" and entry.curve in OKP_CURVES:
        return ("EdDSA",)
    return ()  # "oct" and anything else: nothing, ever


def _verifiers(member: dict[str, Any], entry: JwkEntry) -> dict[str, PyJWK]:
    fitting = [a for a in algorithms_for(entry) if a in ALLOWED_ALGORITHMS]
    if entry.alg is not None:
        # A JWK `alg` binds the key to one algorithm (RFC 7517 §4.4); anything else is refused.
        fitting = [a for a in fitting if a == entry.alg]
    return {alg: PyJWK.from_dict(member, algorithm=alg) for alg in fitting}
