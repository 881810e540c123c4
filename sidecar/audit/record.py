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
from json.encoder import encode_basestring_ascii
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
    # Null when the exchange ended as its head said; else why the answer stopped after its head
    # left (code: message): the caller's SVID or token expired mid-stream, its CA was dropped, a
    # binding moved its App ID, the app or the caller went away.
    "cut",
)

# The fields a sidecar repeats request after request (its own identity, the caller, the route,
# the rule), and the ones that change every time. ``decision_line`` encodes the first group once
# per distinct combination.
REPEATED_FIELDS = DECISION_FIELDS[:15]
VARYING_FIELDS = DECISION_FIELDS[15:]
assert VARYING_FIELDS == ("status", "response_bytes", "duration_ms", "trace_id", "cut")
assert REPEATED_FIELDS[7:9] == ("names", "arg_keys")  # the list-valued ones: decision_line

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


_FRAGMENTS: dict[tuple, str] = {}
MAX_FRAGMENTS = 256  # distinct combinations kept; a caller varying paths only causes misses


def decision_line(seq: int, ts: float, fields: dict[str, Any], prev: str) -> bytes:
    """``encode(decision_entry(...))``, byte for byte, at a fraction of its cost.

    The repeated fields' JSON is looked up by their values; only seq, time, the four varying
    fields and prev are encoded per record. A fragment is kept only for values that are strings
    or None (``names``/``arg_keys``: lists of strings), so equal keys always mean equal JSON
    (``1 == True`` can never alias two encodings); anything else takes the generic encoder."""
    get = fields.get
    key = tuple(map(get, REPEATED_FIELDS))
    names, arg_keys = key[7], key[8]
    if type(names) is list or type(arg_keys) is list:
        key = (*key[:7], _hashable(names), _hashable(arg_keys), *key[9:])
    try:
        fragment = _FRAGMENTS.get(key)
    except TypeError:  # an unhashable value: not a shape the proxies send
        return encode(decision_entry(seq, ts, fields, prev))
    if fragment is None:
        if not _plain(key):
            return encode(decision_entry(seq, ts, fields, prev))
        if len(_FRAGMENTS) >= MAX_FRAGMENTS:
            _FRAGMENTS.clear()
        pairs = zip(REPEATED_FIELDS, key, strict=True)
        fragment = _FRAGMENTS[key] = "".join(
            f',"{name}":{_ENCODER.encode(value)}' for name, value in pairs
        )
    status, size, duration, trace, cut = map(get, VARYING_FIELDS)
    if type(status) is int and type(size) is int and type(duration) is float:
        # What every answered request has; the text is json's own (int and float repr).
        tail = f',"status":{status:d},"response_bytes":{size:d},"duration_ms":{_scalar(duration)}'
    else:
        tail = (
            f',"status":{_scalar(status)},"response_bytes":{_scalar(size)}'
            f',"duration_ms":{_scalar(duration)}'
        )
    trace_json = "null" if trace is None else _scalar(trace)
    cut_json = "null" if cut is None else _scalar(cut)
    return (
        f'{{"seq":{seq:d},"time":"{rfc3339(ts)}","kind":"decision"{fragment}{tail}'
        f',"trace_id":{trace_json},"cut":{cut_json},"prev":"{prev}"}}'
    ).encode("ascii")


def as_text(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` with every value json cannot write replaced by its ``str``: the flush encodes
    records long after ``record`` returned, so an odd value must not stop the writer."""
    out = {}
    for name, value in fields.items():
        try:
            _ENCODER.encode(value)
        except (TypeError, ValueError):
            value = str(value)
        out[name] = value
    return out


def _hashable(value: Any) -> Any:
    return tuple(value) if type(value) is list else value


def _plain(key: tuple) -> bool:
    for value in key:
        if value is None or type(value) is str:
            continue
        if type(value) is tuple and all(type(item) is str for item in value):
            continue
        return False
    return True


def _scalar(value: Any) -> str:
    """JSON for one value, as ``json`` writes it (the common types without its machinery)."""
    if value is None:
        return "null"
    cls = type(value)
    if cls is int:
        return int.__repr__(value)
    if cls is str:
        return encode_basestring_ascii(value)
    if cls is float and value - value == 0.0:  # finite: NaN and infinities take json's path
        return float.__repr__(value)
    return _ENCODER.encode(value)
