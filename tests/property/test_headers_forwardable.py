"""``forwardable`` leaves out exactly the hop-by-hop, ``Connection``-nominated, framing and
dropped fields, in either ``-``/``_`` spelling, whichever of its paths a head takes (the fast
path for heads with nothing to drop is checked against the field-by-field rule)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sidecar.http.headers import HOP_BY_HOP, forwardable

NAMES = [
    b"host", b"content-type", b"connection", b"keep-alive", b"te", b"x-a", b"x_a", b"upgrade",
    b"content-length", b"transfer-encoding", b"authorization", b"dapr-api-token", b"x-b",
]  # fmt: skip
VALUES = [b"x", b"close", b"x-a", b"keep-alive, x-b", b"X-A", b"chunked", b"12"]


def reference(headers, drop):
    nominated = set()
    for name, value in headers:
        if name == b"connection":
            nominated.update(t.strip().lower() for t in value.split(b",") if t.strip())
    kept = []
    for name, value in headers:
        canon = name.replace(b"_", b"-")
        if canon in HOP_BY_HOP or canon in nominated or canon in drop:
            continue
        if canon == b"content-length":
            continue
        kept.append((name, value))
    return kept


@given(
    st.lists(st.tuples(st.sampled_from(NAMES), st.sampled_from(VALUES)), max_size=8),
    st.frozensets(st.sampled_from([b"authorization", b"dapr-api-token", b"x-b"])),
)
def test_forwardable_drops_exactly_what_the_field_by_field_rule_drops(headers, drop):
    assert forwardable(headers, drop) == reference(headers, drop)
    assert forwardable(iter(headers), drop) == reference(headers, drop)
