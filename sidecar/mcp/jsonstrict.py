"""A strict JSON reader for bodies from untrusted peers.

Gateways in front of MCP servers have been bypassed by *parser differentials*: the gateway reads
one value and the server another (notes §5: Go's case-insensitive field matching,
GHSA-wvj2-96wp-fq3f; keys with a trailing NUL, GHSA-q382-vc8q-7jhj; duplicate keys, where
parsers disagree on first- vs last-wins). The only safe answer is to refuse every document two
reasonable parsers could read differently. Choices, each refusing rather than guessing:

* Bytes must be UTF-8 (RFC 8259 §8.1). A leading BOM is refused: RFC 8259 forbids senders to add
  one and lets receivers ignore it, so some parsers strip it and some fail — a differential.
* Escaped lone surrogates (``"\\ud800"``) are refused: Python yields a string that cannot be
  encoded, Go substitutes U+FFFD, others fail. Escaped *pairs* are ordinary characters.
* ``NaN``/``Infinity`` and numbers that overflow a double (``1e400``) are refused (not JSON).
* Duplicate keys in any object at any depth are refused.
* Two keys in one object that are equal after Unicode case folding (``ſ``→``s`` and ``K``→``k``
  included) or after dropping trailing control/format characters are refused at any depth (for
  request bodies), since a case-insensitive decoder anywhere downstream would merge them.
* A key that is a protocol key (``jsonrpc``, ``method``, ``params``, ``name``, ``id``, ``uri``)
  plus trailing control characters (``"name\\u0000"``) is refused at any depth.
* A key that folds to a protocol key without being it (``"Name"``, ``"ID"``) is refused in the
  JSON-RPC envelope (the message, its ``params`` and ``params.ref``) by ``check_envelope``. It is
  allowed deeper, inside tool ``arguments``, where ``"ID"`` is a perfectly good argument name.
* Nesting deeper than ``max_depth`` and bodies larger than ``max_bytes`` are refused.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from .errors import JsonRejected, JsonTooLarge, McpRequestRejected

PROTOCOL_KEYS = frozenset({"jsonrpc", "method", "params", "name", "id", "uri"})
DEFAULT_MAX_DEPTH = 64
_BOM = b"\xef\xbb\xbf"
# A \uD800-\uDFFF escape somewhere in the text: only then do we look for lone surrogates.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def fold_key(key: str) -> str:
    """The form under which two keys count as "the same" for some decoder downstream."""
    end = len(key)
    while end and unicodedata.category(key[end - 1]) in ("Cc", "Cf"):
        end -= 1
    return key[:end].casefold()


def _reject_constant(name: str) -> Any:
    raise JsonRejected(f"non-standard JSON constant {name} is not allowed")


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonRejected(f"number {text[:32]} does not fit a double")
    return value


def _pairs_hook(fold_check: bool):
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(pairs)
        if len(obj) != len(pairs):
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    raise JsonRejected(f"duplicate key {key!r}")
                seen.add(key)
        for key in obj:
            if (
                key not in PROTOCOL_KEYS
                and unicodedata.category(key[-1:] or "a") == "Cc"
                and fold_key(key) in PROTOCOL_KEYS
            ):
                raise JsonRejected(f"key {key!r} imitates the protocol key {fold_key(key)!r}")
        if fold_check and len(obj) > 1:
            folded: dict[str, str] = {}
            for key in obj:
                other = folded.setdefault(fold_key(key), key)
                if other is not key:
                    raise JsonRejected(f"keys {other!r} and {key!r} differ only by case or padding")
        return obj

    return hook


def _walk(value: Any, max_depth: int, check_strings: bool) -> None:
    """Iteratively check nesting depth and (when escapes were seen) lone surrogates."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            if depth > max_depth:
                raise JsonRejected(f"nesting deeper than {max_depth} levels")
            for key, child in node.items():
                if check_strings:
                    _check_string(key)
                stack.append((child, depth + 1))
        elif isinstance(node, list):
            if depth > max_depth:
                raise JsonRejected(f"nesting deeper than {max_depth} levels")
            stack.extend((child, depth + 1) for child in node)
        elif check_strings and isinstance(node, str):
            _check_string(node)


def _check_string(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise JsonRejected("string contains an unpaired UTF-16 surrogate escape") from exc


def loads_strict(
    data: bytes,
    *,
    max_bytes: int,
    max_depth: int = DEFAULT_MAX_DEPTH,
    fold_check: bool = True,
) -> Any:
    """Parse ``data`` or raise ``JsonRejected`` naming the problem.

    ``fold_check`` turns on the case-folding collision rule; request bodies want it, response
    bodies from our own upstream app (parsed only to filter lists) do not need it.
    """
    if len(data) > max_bytes:
        raise JsonTooLarge(f"body of {len(data)} bytes exceeds the limit of {max_bytes}")
    if data.startswith(_BOM):
        raise JsonRejected("body starts with a byte order mark")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JsonRejected(f"body is not valid UTF-8 (byte {exc.start})") from exc
    try:
        value = json.loads(
            text,
            object_pairs_hook=_pairs_hook(fold_check),
            parse_constant=_reject_constant,
            parse_float=_parse_float,
        )
    except json.JSONDecodeError as exc:
        raise JsonRejected(
            f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    except RecursionError as exc:
        raise JsonRejected(f"nesting deeper than {max_depth} levels") from exc
    except ValueError as exc:  # e.g. an integer with more digits than Python will convert
        if isinstance(exc, McpRequestRejected):
            raise
        raise JsonRejected(f"invalid JSON number: {exc}") from exc
    _walk(value, max_depth, _SURROGATE_ESCAPE.search(text) is not None)
    return value


def check_envelope(message: Mapping[str, Any]) -> None:
    """Refuse protocol-key look-alikes in the JSON-RPC envelope (message, params, params.ref)."""
    _check_level(message, "")
    params = message.get("params")
    if isinstance(params, Mapping):
        _check_level(params, "params.")
        ref = params.get("ref")
        if isinstance(ref, Mapping):
            _check_level(ref, "params.ref.")


def _check_level(obj: Mapping[str, Any], where: str) -> None:
    for key in obj:
        if key not in PROTOCOL_KEYS and fold_key(key) in PROTOCOL_KEYS:
            raise McpRequestRejected(
                f"member {where}{key!r} imitates the protocol member {where}{fold_key(key)!r}"
            )
