"""Durations on the command line: one number, one unit, nothing guessed."""

from __future__ import annotations

import datetime as dt

import pytest

from ca._duration import format_duration, parse_duration
from ca._errors import InvalidDuration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", dt.timedelta(seconds=90)),
        ("10m", dt.timedelta(minutes=10)),
        ("24h", dt.timedelta(hours=24)),
        ("7d", dt.timedelta(days=7)),
        (" 1h ", dt.timedelta(hours=1)),
    ],
)
def test_parses(text: str, expected: dt.timedelta) -> None:
    assert parse_duration(text) == expected
    assert parse_duration(format_duration(expected)) == expected


@pytest.mark.parametrize("text", ["", "10", "h", "1.5h", "-1h", "1h30m", "10x", "1 h", "1H"])
def test_refuses_with_the_expected_format(text: str) -> None:
    with pytest.raises(InvalidDuration) as caught:
        parse_duration(text)
    assert str(caught.value) == (
        f"invalid duration {text!r}: use a whole number and one unit of s, m, h or d "
        "(e.g. 90s, 10m, 24h, 7d)"
    )


def test_zero_is_refused() -> None:
    with pytest.raises(InvalidDuration, match="must be greater than zero"):
        parse_duration("0s")


@pytest.mark.parametrize("text", ["36501d", "99999999d", "999999999h"])
def test_a_duration_past_a_century_is_refused_not_overflowed(text: str) -> None:
    with pytest.raises(InvalidDuration, match="must be at most 36500d"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["36500d", "999999999s"])
def test_a_century_or_less_is_accepted(text: str) -> None:
    assert parse_duration(text) <= dt.timedelta(days=36500)
