"""The fast strict-JSON reader refuses exactly what the hook-per-object reader refused.

``tests/_support/jsonstrict_oracle.py`` is the reader as it was; ``loads_strict`` now parses with
the C decoder and walks the result once. Documents are written by hand (so they can hold
duplicate keys, raw number spellings, escapes and syntax errors) from an alphabet of the
differentials the rules exist for; for every one, both readers must return the same value or
raise the same error class with the same message.
"""

from __future__ import annotations

import json
from contextlib import contextmanager

from hypothesis import example, given, settings
from hypothesis import strategies as st

from sidecar.mcp import jsonstrict
from sidecar.mcp.errors import JsonRejected, JsonTooComplex
from tests._support.jsonstrict_oracle import loads_strict as oracle_loads

# Keys as they appear in the text (already JSON-escaped where needed).
KEY_TEXTS = [
    "a", "A", "b", "aB", "ab", "AB", "", "name", "Name", "NAME", "id", "ID", "uri", "method",
    "jsonrpc", "params", "x", "X",
    "name\\u0000", "name\\u001f", "uri\\u007f", "id\\u0085", "name\\u200b", "name\\u00ad",
    "s", "\\u017f", "\u017f", "k", "\u212a", "K", "\u00e9", "\u00c9", "E\\u0301", "\u00df", "ss",
    "pa\\u017fsword", "password", "\\ud800", "\\udfff", "\\ud83d\\ude00", "\U0001f600",
    "a\\\"b", "a\\\\", "c,d", "e:f", "[g", "{h", "\\n", "tab\\t",
]  # fmt: skip
NUMBER_TEXTS = [
    "0", "-0", "1", "-17", "0.5", "1e5", "1E+5", "1e-5", "2.5e-400", "1e308",
    "1.7976931348623157e308", "1e309", "-1e400", "1E+400", "1e0400", "9" * 210,
    "9" * 400 + ".5", "1" * 5000,
    "123456789012345678901234567890",
]  # fmt: skip
STRING_TEXTS = [
    "", "plain", "a,b:c[d]{e}", "quote\\\"inside", "back\\\\slash", "back\\\\\\\"both",
    "\\ud800", "\\udbff\\udc00", "\\ud83d\\ude00", "\\ud83d", "\\\\ud800", "\u00e9t\u00e9",
    "\\u0000", "tab\\there", "e000", "1e400",
]  # fmt: skip
LITERALS = ["true", "false", "null", "NaN", "Infinity", "-Infinity"]
SPACES = st.sampled_from(["", "", " ", "\n", "\t ", "  "])


def _scalars():
    return st.one_of(
        st.sampled_from(NUMBER_TEXTS),
        st.sampled_from(STRING_TEXTS).map(lambda s: f'"{s}"'),
        st.sampled_from(LITERALS),
    )


def _documents():
    def extend(inner):
        arrays = st.lists(inner, max_size=5).flatmap(
            lambda items: SPACES.map(lambda sp: "[" + sp + ("," + sp).join(items) + "]")
        )
        members = st.tuples(st.sampled_from(KEY_TEXTS), inner, SPACES).map(
            lambda m: f'"{m[0]}"{m[2]}:{m[2]}{m[1]}'
        )
        objects = st.lists(members, max_size=5).map(lambda ms: "{" + ",".join(ms) + "}")
        return arrays | objects

    return st.recursive(_scalars(), extend, max_leaves=25)


def _deep(depth: int, inner: str) -> str:
    return "[" * depth + inner + "]" * depth


@st.composite
def _texts(draw):
    text = draw(_documents())
    if draw(st.integers(0, 9)) == 0:  # nesting around the limit
        depth = draw(st.integers(60, 70))
        text = _deep(depth, text) if draw(st.booleans()) else '{"a":' + _deep(depth, text) + "}"
    if draw(st.integers(0, 9)) == 0:  # a syntax error somewhere
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(["", ",", "}", "]", '"', "\\", "x"])) + text[at:]
    return draw(SPACES) + text + draw(SPACES)


def _outcome(reader, data: bytes, **kw):
    try:
        return ("ok", repr(reader(data, max_bytes=1 << 22, **kw)))
    except JsonRejected as exc:
        return (type(exc).__name__, str(exc))


@settings(max_examples=300)
@given(_texts(), st.booleans())
@example('{"a":1,"a":2}', True)
@example('{"x":{"Name":1,"name":2}}', True)
@example('[{"name\\u0000":1}]', False)
@example('{"\\u017f":1,"s":2}', True)
@example('{"k":1,"\u212a":2}', True)
@example('["\\\\ud800"]', True)
@example("[1e400]", True)
@example(_deep(65, "0"), True)
@example(_deep(64, "{}"), True)
def test_fast_reader_agrees_with_the_oracle(text, fold_check):
    data = text.encode("utf-8")
    new = _outcome(jsonstrict.loads_strict, data, fold_check=fold_check, max_values=10**9)
    assert new == _outcome(oracle_loads, data, fold_check=fold_check)


@contextmanager
def _window(size: int):
    saved = jsonstrict._WINDOW
    jsonstrict._WINDOW = size
    try:
        yield
    finally:
        jsonstrict._WINDOW = saved


def _expected_counts(value) -> tuple[int, int]:
    """(tokens, colons) of ``value`` serialized: containers, members and separating commas."""
    tokens = colons = 0
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict | list):
            children = list(node.values()) if isinstance(node, dict) else node
            members = len(node) if isinstance(node, dict) else 0
            colons += members
            tokens += 1 + members + max(len(children) - 1, 0)
            stack.extend(children)
    return tokens, colons


_KEYS = st.text(alphabet='ab,:[]{}"\\ \u00e9', max_size=6)
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='x,:[]{}"\\\n\u00e9', max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=250)
@given(
    _VALUES,
    st.booleans(),
    st.sampled_from([None, (" , ", " : ")]),
    st.integers(1, 9) | st.just(64 * 1024),  # tiny windows, or the one-window path
)
def test_structure_count_is_exact_for_valid_json_whatever_the_window(
    value, ascii_only, separators, window
):
    data = json.dumps(value, ensure_ascii=ascii_only, separators=separators).encode()
    with _window(window):
        counted = jsonstrict.count_structure(data, 10**9)
    assert (counted.tokens, counted.colons) == _expected_counts(value)
    assert counted.opens == _containers(value)
    assert not counted.long_numbers


def _containers(value) -> int:
    if isinstance(value, dict):
        return 1 + sum(map(_containers, value.values()))
    if isinstance(value, list):
        return 1 + sum(map(_containers, value))
    return 0


@settings(max_examples=200)
@given(_VALUES, st.integers(0, 40))
def test_a_body_over_the_value_limit_is_refused_and_one_within_it_is_not(value, limit):
    data = json.dumps(value).encode()
    tokens, _ = _expected_counts(value)
    if tokens > limit:
        try:
            jsonstrict.loads_strict(data, max_bytes=1 << 20, max_values=limit)
        except JsonTooComplex as exc:
            assert f"max_values={limit}" in str(exc)
        else:
            raise AssertionError(f"{tokens} tokens passed a limit of {limit}")
    else:
        assert jsonstrict.loads_strict(data, max_bytes=1 << 20, max_values=limit) == value
