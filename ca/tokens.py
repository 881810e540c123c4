"""One-time join tokens: how a new workload proves it may have a given identity.

A token is ``tmjoin_`` followed by 32 random bytes in URL-safe base64 (``secrets.token_urlsafe``),
so it is recognisable in a log or a leaked-secret scan and cannot be guessed. The CA keeps only
``sha256(token)`` with the identity it is bound to, its expiry and whether it was used: a copy of
``tokens.json`` lets nobody enrol. Looking a token up by its hash is the constant-time
comparison: the dictionary compares digests, and a digest says nothing about a near-miss token.

The rules (:func:`check`, :func:`consume`, :func:`mint`, :func:`prune`) are pure functions over a
dict of records and ``now``. :class:`TokenStore` wraps them in a read-modify-write of
``tokens.json`` under an ``flock``, because ``trustmesh ca token`` and ``trustmesh ca serve`` are
different processes, and a token must be consumed exactly once even if two requests race.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace

from identity import AppIdentity, IdentityError, atomic_write

from ._errors import CAStorageError, InvalidDuration, TokenExpired, TokenInvalid, TokenUsed
from .home import PRIVATE_FILE_MODE, CALayout, locked

TOKEN_PREFIX = "tmjoin_"  # noqa: S105 - a public marker, not a secret
TOKEN_BYTES = 32
DEFAULT_TOKEN_TTL = dt.timedelta(minutes=10)
# Used and expired records are kept this long so a replay is answered "already used" or
# "expired" (useful to an operator) rather than "unknown"; then they are dropped.
KEEP_AFTER_EXPIRY = dt.timedelta(days=1)
_TOKEN_RE = re.compile(re.escape(TOKEN_PREFIX) + r"[A-Za-z0-9_-]{43}")

Records = Mapping[str, "TokenRecord"]


@dataclass(frozen=True)
class TokenRecord:
    """What the CA remembers about one token: never the token itself."""

    identity: AppIdentity
    created_at: dt.datetime
    expires_at: dt.datetime
    used_at: dt.datetime | None = None

    def to_json(self) -> dict:
        return {
            "spiffe_id": str(self.identity),
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "used_at": self.used_at.isoformat() if self.used_at else None,
        }

    @classmethod
    def from_json(cls, data: dict) -> TokenRecord:
        used_at = data.get("used_at")
        return cls(
            identity=AppIdentity.from_spiffe_id(data["spiffe_id"]),
            created_at=dt.datetime.fromisoformat(data["created_at"]),
            expires_at=dt.datetime.fromisoformat(data["expires_at"]),
            used_at=dt.datetime.fromisoformat(used_at) if used_at else None,
        )


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def mint(
    records: Records, identity: AppIdentity, *, now: dt.datetime, ttl: dt.timedelta
) -> tuple[str, dict[str, TokenRecord]]:
    """A new token for ``identity`` and the records with its hash added (old ones pruned)."""
    if ttl <= dt.timedelta(0):
        raise InvalidDuration("a join token's lifetime must be positive")
    token = new_token()
    updated = prune(records, now=now)
    updated[token_hash(token)] = TokenRecord(identity, now, now + ttl)
    return token, updated


def check(records: Records, token: str, *, now: dt.datetime) -> TokenRecord:
    """The record ``token`` names if it may be used now; else the refusal that says why."""
    if not isinstance(token, str) or not _TOKEN_RE.fullmatch(token):
        raise TokenInvalid(f"not a trustmesh join token (expected {TOKEN_PREFIX}…)")
    record = records.get(token_hash(token))
    if record is None:
        raise TokenInvalid("unknown join token")
    if record.used_at is not None:
        raise TokenUsed(f"join token was already used at {record.used_at.isoformat()}")
    if now >= record.expires_at:
        raise TokenExpired(f"join token expired at {record.expires_at.isoformat()}")
    return record


def consume(
    records: Records, token: str, *, now: dt.datetime
) -> tuple[AppIdentity, dict[str, TokenRecord]]:
    """Check ``token`` and mark it used; returns its identity and the updated records."""
    record = check(records, token, now=now)
    updated = dict(records)
    updated[token_hash(token)] = replace(record, used_at=now)
    return record.identity, updated


def prune(records: Records, *, now: dt.datetime) -> dict[str, TokenRecord]:
    return {h: r for h, r in records.items() if now < r.expires_at + KEEP_AFTER_EXPIRY}


def records_to_bytes(records: Records) -> bytes:
    body = {"version": 1, "tokens": {h: r.to_json() for h, r in sorted(records.items())}}
    return json.dumps(body, indent=2).encode() + b"\n"


def records_from_bytes(data: bytes, what: str) -> dict[str, TokenRecord]:
    try:
        body = json.loads(data)
        if body.get("version") != 1:
            raise ValueError(f"unsupported version {body.get('version')!r}")
        return {str(h): TokenRecord.from_json(r) for h, r in body["tokens"].items()}
    except (ValueError, KeyError, TypeError, AttributeError, IdentityError) as exc:
        # Fail closed: a damaged token file enrols nobody until an operator looks at it.
        raise CAStorageError(f"{what} is damaged: {exc}") from exc


class TokenStore:
    """``tokens.json`` in a CA layout, every change made under the CA's lock file."""

    def __init__(self, layout: CALayout) -> None:
        self.layout = layout

    def _locked(self):
        self.layout.ensure()  # the lock file lives in the CA directory
        return locked(self.layout.lock)

    def _load(self) -> dict[str, TokenRecord]:
        try:
            data = self.layout.tokens.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise CAStorageError(f"cannot read {self.layout.tokens}: {exc.strerror}") from exc
        return records_from_bytes(data, str(self.layout.tokens))

    def _save(self, records: Records) -> None:
        try:
            atomic_write(self.layout.tokens, records_to_bytes(records), PRIVATE_FILE_MODE)
        except OSError as exc:
            raise CAStorageError(f"cannot write {self.layout.tokens}: {exc}") from exc

    def issue(self, identity: AppIdentity, *, now: dt.datetime, ttl: dt.timedelta) -> str:
        """Mint a token for ``identity``; the returned string is shown once and never stored."""
        with self._locked():
            token, records = mint(self._load(), identity, now=now, ttl=ttl)
            self._save(records)
        return token

    def check(self, token: str, *, now: dt.datetime) -> AppIdentity:
        """The identity ``token`` would grant, without using it up."""
        with self._locked():
            return check(self._load(), token, now=now).identity

    def consume(self, token: str, *, now: dt.datetime) -> AppIdentity:
        """Use ``token`` up and return its identity; a second call for it raises TokenUsed."""
        with self._locked():
            identity, records = consume(self._load(), token, now=now)
            self._save(records)
        return identity
