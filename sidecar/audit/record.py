"""One audit record as bytes: field order, time format, and the hash that chains it.

A record is one JSON line. The chain hash of a record is the SHA-256 of its exact line bytes
(without the newline), and every record carries the hash of the one before it in ``prev``, so
the verifier never re-encodes a decision record: what was written is what is hashed. Lines are
ASCII-only JSON (``ensure_ascii``), so no value can smuggle a line break into the file.

Two kinds share the chain: ``decision`` (one per request a sidecar decided) and ``checkpoint``
(a signature over the chain head, see :mod:`.checkpoint`).
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

GENESIS = "0" * 64

DECISION = "decision"
CHECKPOINT = "checkpoint"

# What the proxies pass to ``AuditLog.record`` (the seam agreed with the proxies' owner).
DECISION_FIELDS = (
    "direction",
    "callee",
    "caller",
    "bearer_subject",
    "verb",
    "path",
    "mcp_method",
    "names",
    "arg_keys",
    "decision",
    "layer",
    "rule",
    "reason",
    "message",
    "policy_version",
    "status",
    "response_bytes",
    "duration_ms",
    "trace_id",
)

_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True)


_last_second: list = [None, ""]  # (whole second, its text): one strftime a second, not a record


def rfc3339(ts: float) -> str:
    """UTC with microseconds and a ``Z``: sortable as text and unambiguous across hosts."""
    whole = int(ts)
    micros = round((ts - whole) * 1_000_000)
    if micros == 1_000_000:
        whole, micros = whole + 1, 0
    if _last_second[0] != whole:
        _last_second[:] = [whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))]
    return f"{_last_second[1]}.{micros:06d}Z"


def encode(entry: dict[str, Any]) -> bytes:
    return _ENCODER.encode(entry).encode("ascii")


def line_hash(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def decision_entry(seq: int, ts: float, fields: dict[str, Any], prev: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"seq": seq, "time": rfc3339(ts), "kind": DECISION}
    entry.update(zip(DECISION_FIELDS, map(fields.get, DECISION_FIELDS), strict=True))
    entry["prev"] = prev
    return entry
