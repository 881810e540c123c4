"""Strict JSON for documents fetched from an issuer (discovery, JWKS).

Python's ``json`` keeps the last of duplicate keys and accepts ``NaN``/``Infinity``; other parsers
keep the first or refuse. A document that different parsers read differently is refused here, so
what we check is what anyone else would see.
"""

from __future__ import annotations

import json
from typing import Any

MAX_DOCUMENT_BYTES = 512 * 1024  # a JWKS with dozens of RSA-4096 keys is ~50 KiB


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads_object(body: bytes) -> dict[str, Any]:
    """Parse ``body`` as one UTF-8 JSON object, or raise ``ValueError`` saying why not."""
    if not isinstance(body, bytes | bytearray):
        raise ValueError("the document must be bytes")
    if len(body) > MAX_DOCUMENT_BYTES:
        raise ValueError(f"the document is larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        text = bytes(body).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError("the document is not UTF-8") from exc
    try:
        value = json.loads(
            text, object_pairs_hook=_refuse_duplicates, parse_constant=_refuse_constant
        )
    except RecursionError as exc:
        raise ValueError("the document nests too deeply") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"the document is not JSON ({exc.msg} at {exc.pos})") from exc
    if not isinstance(value, dict):
        raise ValueError("the document is not a JSON object")
    return value
