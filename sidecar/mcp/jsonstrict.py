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
* Bodies with more than ``max_values`` values and keys are refused (413) *before* they are parsed.

Cost is bounded, because the sidecar serves every connection from one thread. Two passes:

1. ``count_structure`` counts the structural characters ``, : [ {`` outside strings with bytes
   operations that run in C (escaped backslashes and quotes removed, strings cut out window by
   window, stopping as soon as the limit is passed). The count bounds the values and keys of the
   document, so a 4 MiB ``[{},{},...]`` is refused after reading its first few hundred KiB.
2. The fast path parses with the C decoder and no Python hook per object, then walks the
   containers once (depth; case collisions of ASCII keys, one ``set`` per object). A duplicate key
   shows as fewer members than the document has colons outside strings. Anything the fast path
   cannot vouch for (non-ASCII or control characters in keys, escaped surrogates that do not
   re-encode, numbers that may overflow a double, any refusal at all) is handed to the precise
   path, the original hook-per-object reader, which decides and words the refusal. So the fast
   path only ever *accepts* early; every refusal is the precise path's, identical to before
   (``tests/property/test_jsonstrict_differential.py`` holds the two against each other).
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Mapping
from itertools import chain, compress
from typing import Any, NamedTuple

from .errors import JsonRejected, JsonTooComplex, JsonTooLarge, McpRequestRejected

PROTOCOL_KEYS = frozenset({"jsonrpc", "method", "params", "name", "id", "uri"})
DEFAULT_MAX_DEPTH = 64
# Values and keys per body from a caller. The costliest body under it (nested arrays, small
# objects) takes ~10 ms to parse on one core, and a 4 MiB body over it is refused in ~5 ms;
# bench/json_flood.py measures what a flood of them does to a well-behaved caller. Legitimate
# requests are far below (a tools/call with a 1,536-float embedding is ~1,550).
DEFAULT_MAX_VALUES = 50_000
# Responses come from the app itself and can legitimately be larger (a tool returning rows); they
# are still bounded, so a caller cannot make the app echo a parse that stalls the sidecar.
DEFAULT_MAX_RESPONSE_VALUES = 1_000_000
_BOM = b"\xef\xbb\xbf"
# A \uD800-\uDFFF escape somewhere in the text: only then do we look for lone surrogates.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_ASCII_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_IS_CONTAINER = frozenset({dict, list}).__contains__
_WINDOW = 64 * 1024
_ESCAPED_BACKSLASH = b"\\\\"
_ESCAPED_QUOTE = b'\\"'
# Outside strings, digits become 0 and E becomes e and signs go: a number that might not fit a
# double then shows as "e000" (an exponent of three digits or more) or a long run of zeros.
_NUMBER_SHAPE = bytes.maketrans(b"123456789E", b"000000000e")
_LONG_DIGIT_RUN = b"0" * 200


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


class Structure(NamedTuple):
    """What ``count_structure`` read from the bytes outside strings."""

    tokens: int  # the ``, : [ {``; values plus keys are at most tokens + 1
    colons: int  # exactly the members of all objects, for valid JSON
    long_numbers: bool  # a number that might not fit a double (checked by the precise path)
    opens: int = 0  # the ``[ {``: exactly the containers, for valid JSON (a bound on depth)


def count_structure(data: bytes, limit: int) -> Structure:
    """Count the structural characters outside strings, in C-speed passes over the bytes.

    Counting stops once ``tokens`` passes ``limit`` (the caller refuses then), so a body costs at
    most about ``limit`` tokens' work however large it is. For invalid JSON the counts are those
    of its longest valid prefix or more, which bounds what the decoder does before it stops.
    """
    if _ESCAPED_QUOTE in data:
        # In a run of backslashes the pairs are escaped backslashes; an odd one out escapes the
        # next character. After this, every remaining quote opens or closes a string.
        if _ESCAPED_BACKSLASH in data:
            data = data.replace(_ESCAPED_BACKSLASH, b"")
        data = data.replace(_ESCAPED_QUOTE, b"")
    size = len(data)
    if size <= _WINDOW and not data.count(b'"') % 2:
        # One window and no string cut by its end (a typical request): count it directly.
        outside = b"".join(data.split(b'"')[::2])
        colons = outside.count(b":")
        opens = outside.count(b"[") + outside.count(b"{")
        shape = outside.translate(_NUMBER_SHAPE, b"+-")
        long_numbers = b"e000" in shape or _LONG_DIGIT_RUN in shape
        return Structure(colons + outside.count(b",") + opens, colons, long_numbers, opens)
    tokens = colons = opens = 0
    long_numbers = False
    start = 0
    while start < size:
        end = start + _WINDOW
        window = data[start:end]
        if window.count(b'"') % 2:
            # The window ends inside a string, opened by its last quote: count up to that quote
            # and go on after the string's closing quote, never copying the string itself.
            opened = window.rfind(b'"')
            close = data.find(b'"', start + opened + 1)
            window = window[:opened]
            end = size if close < 0 else close + 1
        outside = b"".join(window.split(b'"')[::2])
        found = outside.count(b":")
        colons += found
        containers = outside.count(b"[") + outside.count(b"{")
        opens += containers
        tokens += found + outside.count(b",") + containers
        if tokens > limit:
            break
        shape = outside.translate(_NUMBER_SHAPE, b"+-")
        long_numbers = long_numbers or b"e000" in shape or _LONG_DIGIT_RUN in shape
        start = end
    return Structure(tokens, colons, long_numbers, opens)


def loads_strict(
    data: bytes,
    *,
    max_bytes: int,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_values: int | None = None,
    fold_check: bool = True,
) -> Any:
    """Parse ``data`` or raise ``JsonRejected`` naming the problem.

    ``fold_check`` turns on the case-folding collision rule; request bodies want it, response
    bodies from our own upstream app (parsed only to filter lists) do not need it. So it also
    picks the default ``max_values``: ``DEFAULT_MAX_VALUES`` for requests, else
    ``DEFAULT_MAX_RESPONSE_VALUES``.
    """
    if max_values is None:
        max_values = DEFAULT_MAX_VALUES if fold_check else DEFAULT_MAX_RESPONSE_VALUES
    if len(data) > max_bytes:
        raise JsonTooLarge(f"body of {len(data)} bytes exceeds the limit of {max_bytes}")
    if data.startswith(_BOM):
        raise JsonRejected("body starts with a byte order mark")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JsonRejected(f"body is not valid UTF-8 (byte {exc.start})") from exc
    structure = count_structure(data, max_values)
    if structure.tokens > max_values:
        raise JsonTooComplex(
            f"body has more than {max_values} JSON values and keys "
            f"(limit max_values={max_values}); refused before parsing"
        )
    if not structure.long_numbers:
        # No more containers than levels allowed: no depth to check, only the objects to find.
        shallow = structure.opens <= max_depth
        value = _loads_fast(text, structure.colons, max_depth, fold_check, shallow)
        if value is not _UNVOUCHED:
            return value
    return _loads_precise(text, max_depth, fold_check)


# --- the fast path: C decoder, one walk over the containers --------------------------------------

_UNVOUCHED: Any = object()
_FAST_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _loads_fast(
    text: str, colons: int, max_depth: int, fold_check: bool, shallow: bool = False
) -> Any:
    """The value, or ``_UNVOUCHED`` when only the precise path may decide. ``shallow``: the
    document has at most ``max_depth`` containers (so it cannot nest deeper)."""
    try:
        value = _FAST_DECODER.decode(text)
    except (ValueError, RecursionError, JsonRejected):
        return _UNVOUCHED
    objects = _objects_of(value) if shallow else _objects_within_depth(value, max_depth)
    if objects is None or not _keys_are_plain(objects, colons, fold_check):
        return _UNVOUCHED
    if _SURROGATE_ESCAPE.search(text):
        try:  # a lone surrogate anywhere in a key or a string cannot be encoded
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            return _UNVOUCHED
    return value


def _objects_of(value: Any) -> list[dict]:
    """Every object in ``value``, depth unchecked: for documents with few containers (a
    typical request), where one plain walk costs less than the level-by-level one."""
    objects: list[dict] = []
    stack = [value]
    while stack:
        node = stack.pop()
        kind = type(node)
        if kind is dict:
            objects.append(node)
            stack += node.values()
        elif kind is list:
            stack += node
    return objects


def _objects_within_depth(value: Any, max_depth: int) -> list[dict] | None:
    """Every object in ``value``, or None if nesting passes ``max_depth``.

    Level by level, each level's children flattened and filtered by C iterators: a handful of
    calls per level instead of a Python step per container.
    """
    objects: list[dict] = []
    level = [value] if _IS_CONTAINER(type(value)) else []
    depth = 1
    while level:
        dicts = [node for node in level if type(node) is dict]
        objects += dicts
        children = list(chain.from_iterable(map(dict.values, dicts)))
        if len(dicts) != len(level):
            children += chain.from_iterable(node for node in level if type(node) is list)
        level = list(compress(children, map(_IS_CONTAINER, map(type, children))))
        if level:
            depth += 1
            if depth > max_depth:
                return None
    return objects


def _keys_are_plain(objects: list[dict], colons: int, fold_check: bool) -> bool:
    """True if no object has a duplicate key or a key the precise rules could refuse.

    A duplicate leaves fewer members than the text has colons. Keys that are all ASCII without
    control characters cannot imitate a protocol key, and fold to ``str.lower``; other keys get
    the precise rules, one object at a time.
    """
    keys = list(chain.from_iterable(objects))
    if len(keys) != colons:
        return False
    joined = "".join(keys)
    if not joined.isascii():
        return not any(_key_rule_breaks(obj, fold_check) for obj in objects)
    if not joined.isprintable():  # for ASCII: a control character (\x00-\x1f, \x7f)
        return False
    if fold_check and joined != joined.lower():  # some key has a capital letter
        # Two keys of one object can only be equal after lower() if one has a capital: only
        # the objects with one need their lower-cased keys counted.
        for obj in objects:
            own = "".join(obj)
            if own != own.lower() and len(set(map(str.lower, obj))) != len(obj):
                return False
    return True


def _key_rule_breaks(obj: dict, fold_check: bool) -> bool:
    """Whether ``_pairs_hook`` would refuse ``obj`` for its keys (duplicates aside)."""
    for key in obj:
        if (
            key not in PROTOCOL_KEYS
            and unicodedata.category(key[-1:] or "a") == "Cc"
            and fold_key(key) in PROTOCOL_KEYS
        ):
            return True
    return fold_check and len(obj) > 1 and len(set(map(fold_key, obj))) != len(obj)


# --- the precise path: a hook per object, the reader the fast path answers to -------------------


def _loads_precise(text: str, max_depth: int, fold_check: bool) -> Any:
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
    if isinstance(params, dict):  # parsed JSON: every object is a dict (no ABC check needed)
        _check_level(params, "params.")
        ref = params.get("ref")
        if isinstance(ref, dict):
            _check_level(ref, "params.ref.")


def _check_level(obj: Mapping[str, Any], where: str) -> None:
    for key in obj:
        if key in PROTOCOL_KEYS:
            continue
        # Printable ASCII has no trailing control or format characters and folds as lower().
        folded = key.lower() if key.isascii() and key.isprintable() else fold_key(key)
        if folded in PROTOCOL_KEYS:
            raise McpRequestRejected(
                f"member {where}{key!r} imitates the protocol member {where}{fold_key(key)!r}"
            )
