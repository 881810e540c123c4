"""Durations as people type them on a command line: ``90s``, ``10m``, ``24h``, ``7d``.

One number and one unit, nothing else: ``1h30m`` and bare numbers are refused rather than
guessed at, because a TTL that silently means seconds instead of hours is a security bug.
"""

from __future__ import annotations

import datetime as dt
import re

from ._errors import InvalidDuration

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_DURATION_RE = re.compile(r"([0-9]{1,9})([smhd])")
# Every duration here is added to "now" (a token, an SVID, a CA, a rotation's wait): a century
# is more than any of them needs and keeps the sum inside what a datetime can hold (year 9999),
# so "99999999d" is an invalid value rather than an OverflowError deep inside a command.
MAX_DURATION = dt.timedelta(days=36500)


def parse_duration(text: str) -> dt.timedelta:
    """``"24h"`` → ``timedelta(hours=24)``; raise :class:`InvalidDuration` naming the format."""
    match = _DURATION_RE.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise InvalidDuration(
            f"invalid duration {text!r}: use a whole number and one unit of s, m, h or d "
            "(e.g. 90s, 10m, 24h, 7d)"
        )
    value = int(match.group(1))
    if value == 0:
        raise InvalidDuration(f"invalid duration {text!r}: must be greater than zero")
    duration = dt.timedelta(**{_UNITS[match.group(2)]: value})
    if duration > MAX_DURATION:
        raise InvalidDuration(f"invalid duration {text!r}: must be at most {MAX_DURATION.days}d")
    return duration


def format_duration(delta: dt.timedelta) -> str:
    """The shortest exact spelling of ``delta`` that :func:`parse_duration` reads back."""
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
