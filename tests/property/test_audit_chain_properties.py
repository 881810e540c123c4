"""Properties of the chain verifier: any single edit, deletion or swap is caught, at its line."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from sidecar.audit.record import GENESIS, decision_entry, encode, line_hash
from sidecar.audit.verify import Line, Report, verify_lines

FILE = Path("default.server.jsonl")
ME = "spiffe://public/ns/default/server"


def chain(n: int) -> list[bytes]:
    out, prev = [], GENESIS
    for seq in range(1, n + 1):
        fields = {"direction": "inbound", "callee": ME, "caller": "c", "status": 200 + seq}
        line = encode(decision_entry(seq, 1_800_000_000.0 + seq, fields, prev))
        out.append(line)
        prev = line_hash(line)
    return out


def run(raw: list[bytes]) -> Report:
    lines = [Line(FILE, i + 1, r, _parse(r)) for i, r in enumerate(raw)]
    return verify_lines(lines, Report(), None)


def _parse(raw: bytes):
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


@given(st.integers(1, 30))
def test_an_untouched_chain_verifies(n):
    report = run(chain(n))
    assert report.error is None and report.records == n and report.head_seq == n


@given(st.integers(3, 30).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n - 2))))
def test_a_changed_record_is_named_unless_it_is_the_last(case):
    n, index = case
    raw = chain(n)
    raw[index] = raw[index].replace(b'"status":', b'"status":1', 1)
    report = run(raw)
    assert report.error is not None and report.error.line == index + 1


@given(st.integers(3, 30).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n - 2))))
def test_a_deleted_record_is_named_where_it_is_missing(case):
    n, index = case
    raw = chain(n)
    del raw[index]
    report = run(raw)
    assert report.error is not None and report.error.line == index + 1


@given(st.integers(2, 30).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n - 2))))
def test_two_swapped_records_are_named_at_the_first(case):
    n, index = case
    raw = chain(n)
    raw[index], raw[index + 1] = raw[index + 1], raw[index]
    report = run(raw)
    assert report.error is not None and report.error.line == index + 1
