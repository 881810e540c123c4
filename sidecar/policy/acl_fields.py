"""Small field readers for resource documents: each refuses with the field's exact location.

YAML gives us plain Python values of any type, and Dapr's Go decoder would quietly drop an unknown
key or zero a missing one. A dropped ``defaultaction`` flips a policy's meaning, so every reader
here names the field and what was wrong with it, and unknown keys are refused (with a "did you
mean" when the key is a near miss of a known one).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from ..errors import ResourceInvalid


def check_keys(mapping: Mapping[Any, Any], allowed: tuple[str, ...], location: str) -> None:
    """Refuse any key not in ``allowed``: a typo must not silently change what a policy means."""
    for key in mapping:
        if not isinstance(key, str):
            raise ResourceInvalid(f"field names are strings, not {type(key).__name__}", location)
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            if not close:
                close = [name for name in allowed if name.lower() == key.lower()]
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ResourceInvalid(
                f"unknown field {key!r}{hint}; known fields: {', '.join(allowed)}",
                _join(location, key),
            )


def optional_str(mapping: Mapping[str, Any], key: str, location: str) -> str | None:
    """The string at ``key``, or None when absent or null."""
    value = mapping.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ResourceInvalid(
            f"must be a string, not {type(value).__name__} ({value!r})", _join(location, key)
        )
    return value


def required_str(mapping: Mapping[str, Any], key: str, location: str, missing: str) -> str:
    """The non-empty string at ``key``; ``missing`` is the whole message when it is absent."""
    value = optional_str(mapping, key, location)
    if not value:
        raise ResourceInvalid(missing, _join(location, key))
    return value


def optional_list(mapping: Mapping[str, Any], key: str, location: str) -> list[Any] | None:
    """The list at ``key``, or None when absent or null (a string is not a list of one)."""
    value = mapping.get(key)
    if value is None:
        return None
    if not isinstance(value, list | tuple):
        raise ResourceInvalid(
            f"must be a list, not {type(value).__name__} ({value!r})", _join(location, key)
        )
    return list(value)


def optional_mapping(
    mapping: Mapping[str, Any], key: str, location: str
) -> Mapping[str, Any] | None:
    """The mapping at ``key``, or None when absent or null."""
    value = mapping.get(key)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ResourceInvalid(
            f"must be a mapping, not {type(value).__name__} ({value!r})", _join(location, key)
        )
    return value


def _join(location: str, key: str) -> str:
    return f"{location}.{key}" if location else key
