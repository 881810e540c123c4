"""The strict JSON reader as it was before the fast path: the test oracle for ``jsonstrict``.

Frozen on purpose (do not "fix" it along with ``sidecar.mcp.jsonstrict``): the differential tests
in ``tests/property/test_jsonstrict_differential.py`` require the new reader to refuse exactly what
this one refuses, with the same message, and to return the same value for everything else. It
calls ``object_pairs_hook`` once per JSON object, which made a 4 MiB ``[{},{},...]`` cost about a
second; the rules it enforces are documented in ``sidecar/mcp/jsonstrict.py``.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from typing import Any

from sidecar.mcp.errors import JsonRejected, JsonTooLarge, McpRequestRejected

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
