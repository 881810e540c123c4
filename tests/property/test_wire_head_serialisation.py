"""What the relay serialises: a head is refused exactly when one of its fields would be
refused alone — a name that is not a token, a value holding CR, LF or NUL — however the
fields are combined (the check runs over the joined fields, not field by field)."""

from __future__ import annotations

import re

import h11
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.http.wire import _head

TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
UNSAFE = re.compile(rb"[\r\n\x00]")
NAME_BYTES = st.sampled_from(list(b"ab-_:. \r\n\x00\t!~Z9"))
names = st.lists(NAME_BYTES, max_size=6).map(bytes)
values = st.lists(st.sampled_from(list(b"ab :\r\n\x00\t\x7f")), max_size=6).map(bytes)


def field_is_safe(name: bytes, value: bytes) -> bool:
    return bool(TOKEN.fullmatch(name)) and not UNSAFE.search(value)


@given(st.lists(st.tuples(names, values), max_size=6))
def test_a_head_is_refused_exactly_when_one_field_is_unsafe(headers):
    safe = all(field_is_safe(n, v) for n, v in headers)
    if safe:
        out = _head(b"GET / HTTP/1.1", headers)
        assert out.endswith(b"\r\n\r\n")
        assert out.count(b"\r\n") == len(headers) + 2
    else:
        with pytest.raises(h11.LocalProtocolError):
            _head(b"GET / HTTP/1.1", headers)
