"""Request targets are normalised (and re-encoded) through a small cache: whatever the target,
the cached answer is the uncached one, a target that fails keeps failing, and a long target is
never kept."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.http import path
from sidecar.http.path import InvalidPath, normalize_target

TARGETS = st.lists(
    st.sampled_from([b"/", b"a", b"%2F", b"%2e", b"..", b"?", b"x=1", b"%", b"\xc3"])
)


@given(TARGETS.map(b"".join))
def test_a_cached_target_is_the_uncached_one(target):
    try:
        expected = path._normalize_target(target)
    except InvalidPath as exc:
        with pytest.raises(InvalidPath, match=re.escape(str(exc))):
            normalize_target(target)
        with pytest.raises(InvalidPath):  # and again: failures are not kept
            normalize_target(target)
        return
    for _ in range(2):
        got = normalize_target(target)
        assert got == expected
        assert got.wire_path == path._wire_path(expected.method, expected.query)


def test_a_long_target_is_not_kept():
    before = path._normalize_target_cached.cache_info().currsize
    normalize_target(b"/" + b"a" * 600)
    assert path._normalize_target_cached.cache_info().currsize == before
