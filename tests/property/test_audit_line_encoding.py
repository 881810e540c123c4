"""The record encoder the flush uses writes exactly what the generic JSON encoding writes.

``decision_line`` skips ``json`` for the fields a sidecar repeats (their JSON is kept per
distinct combination) and for plain scalars; the chain hashes and the verifier read the bytes
as written, so any difference would be a different log. Hypothesis feeds it every shape a field
could take, including the ones that must not share a kept fragment (``1`` and ``True``, a string
and the list of its characters).
"""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from sidecar.audit.record import (
    _FRAGMENTS,
    DECISION_FIELDS,
    GENESIS,
    decision_entry,
    decision_line,
    encode,
)

scalars = (
    st.none()
    | st.text(max_size=20)
    | st.integers()
    | st.booleans()
    | st.floats()  # NaN and infinities included: json's spelling must win
)
values = scalars | st.lists(st.text(max_size=8), max_size=4) | st.lists(scalars, max_size=3)
records = st.dictionaries(st.sampled_from(DECISION_FIELDS), values)


@given(st.integers(1, 2**53), st.floats(0, 4e9), records, st.sampled_from([GENESIS, "ab" * 32]))
def test_the_fast_line_is_the_generic_encoding_byte_for_byte(seq, ts, fields, prev):
    assert decision_line(seq, ts, fields, prev) == encode(decision_entry(seq, ts, fields, prev))


@given(st.lists(records, min_size=2, max_size=6))
def test_records_sharing_a_kept_fragment_still_encode_their_own_values(batch):
    for fields in batch:  # the same fragment cache across the batch, as in a flush
        assert decision_line(1, 1.0, fields, GENESIS) == encode(
            decision_entry(1, 1.0, fields, GENESIS)
        )


def test_values_equal_in_python_but_not_in_json_never_share_an_encoding():
    _FRAGMENTS.clear()
    pairs = [
        ({"path": "1"}, {"path": 1}),
        ({"path": 1}, {"path": True}),
        ({"path": 1.0}, {"path": 1}),
        ({"names": ["a", "b"]}, {"names": "ab"}),
        ({"names": ["a", "b"]}, {"names": ("a", "b")}),
        ({"names": []}, {"names": None}),
    ]
    for first, second in pairs:
        for fields in (first, second, first):
            line = decision_line(7, 2.0, fields, GENESIS)
            assert line == encode(decision_entry(7, 2.0, fields, GENESIS))
            key = next(iter(fields))
            assert json.loads(line)[key] == json.loads(json.dumps(fields[key]))


def test_a_record_is_one_ascii_line_whatever_its_strings_hold():
    fields = {"path": "a\nb\u2028c\x00", "message": "é\r\n", "names": ["\n"], "trace_id": "\n"}
    line = decision_line(1, 1.0, fields, GENESIS)
    assert b"\n" not in line and b"\r" not in line and line.isascii()
    assert json.loads(line)["path"] == "a\nb\u2028c\x00"
