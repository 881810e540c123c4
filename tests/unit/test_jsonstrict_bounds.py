"""jsonstrict's cost bounds: the value limit refuses floods before parsing; plain bodies take the
fast path; large-but-shallow bodies pass."""

from __future__ import annotations

import json

import pytest

from sidecar.mcp import jsonstrict
from sidecar.mcp.errors import JsonRejected, JsonTooComplex, JsonTooLarge

FOUR_MIB = 4 * 1024 * 1024
FLOOD = b"[" + b",".join([b"{}"] * ((FOUR_MIB - 2) // 3)) + b"]"


def call(arguments) -> bytes:
    message = {
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "ingest", "arguments": arguments},
    }  # fmt: skip
    return json.dumps(message).encode()


def test_a_4_mib_flood_of_empty_objects_is_refused_naming_the_limit():
    with pytest.raises(JsonTooComplex) as info:
        jsonstrict.loads_strict(FLOOD, max_bytes=FOUR_MIB)
    assert info.value.http_status == 413
    assert info.value.code == "ERR_MCP_JSON_TOO_COMPLEX"
    limit = jsonstrict.DEFAULT_MAX_VALUES
    assert f"more than {limit} JSON values and keys (limit max_values={limit})" in str(info.value)
    assert isinstance(info.value, JsonTooLarge)  # callers treating "too large" alike keep working


def test_the_count_stops_soon_after_the_limit_instead_of_reading_the_whole_flood():
    counted = jsonstrict.count_structure(FLOOD, 1000)
    assert 1000 < counted.tokens < 2 * jsonstrict._WINDOW
    assert jsonstrict.count_structure(FLOOD, 10**9).tokens == 2 * ((FOUR_MIB - 2) // 3)


def test_the_flood_is_refused_without_calling_the_decoder(monkeypatch):
    def no_parse(*args, **kwargs):
        raise AssertionError("the flood reached a JSON decoder")

    monkeypatch.setattr(jsonstrict, "_loads_fast", no_parse)
    monkeypatch.setattr(jsonstrict, "_loads_precise", no_parse)
    with pytest.raises(JsonTooComplex):
        jsonstrict.loads_strict(FLOOD, max_bytes=FOUR_MIB)


def test_a_large_but_shallow_call_passes_whatever_its_strings_hold():
    csv = "id,name,[tags],{note}\n" + '1,"a,b",[x],{y}\n' * 150_000  # commas, brackets, quotes
    body = call({"csv": csv, "rows": list(range(1000))})
    assert len(body) > 2 * 1024 * 1024
    assert jsonstrict.loads_strict(body, max_bytes=FOUR_MIB) == json.loads(body)


def test_structure_just_under_the_limit_passes_and_just_over_is_refused():
    body = b"[" + b",".join([b"0"] * 100) + b"]"  # 99 commas + 1 bracket = 100 tokens
    assert jsonstrict.count_structure(body, 10**9).tokens == 100
    assert len(jsonstrict.loads_strict(body, max_bytes=1 << 20, max_values=100)) == 100
    with pytest.raises(JsonTooComplex, match="max_values=99"):
        jsonstrict.loads_strict(body, max_bytes=1 << 20, max_values=99)


def test_responses_get_the_larger_default_limit():
    rows = json.dumps({"result": {"rows": list(range(jsonstrict.DEFAULT_MAX_VALUES))}}).encode()
    assert jsonstrict.loads_strict(rows, max_bytes=FOUR_MIB, fold_check=False)["result"]
    with pytest.raises(JsonTooComplex):
        jsonstrict.loads_strict(rows, max_bytes=FOUR_MIB)


def test_an_ordinary_call_is_read_by_the_fast_path_alone(monkeypatch):
    def no_precise(*args, **kwargs):
        raise AssertionError("an ordinary body fell back to the hook-per-object reader")

    monkeypatch.setattr(jsonstrict, "_loads_precise", no_precise)
    body = call({"text": 'h\u00e9llo "world"\n', "n": 3.5, "items": [{"k": True}], "ID": 2})
    assert jsonstrict.loads_strict(body, max_bytes=1 << 20) == json.loads(body)
    emoji = b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"t":"\\ud83d\\ude00"}}'
    assert jsonstrict.loads_strict(emoji, max_bytes=1 << 20)["params"]["t"] == "\U0001f600"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'[{"a":{}},{"x":{"y":1,"y":2}}]', "duplicate key 'y'"),
        (b'{"args":{"Id":1,"iD":2}}', "keys 'Id' and 'iD' differ only by case or padding"),
        (b'{"deep":[{"name\\u0000":1}]}', "imitates the protocol key 'name'"),
    ],
)
def test_refusals_found_by_the_fast_path_are_worded_by_the_precise_one(body, message):
    with pytest.raises(JsonRejected) as info:
        jsonstrict.loads_strict(body, max_bytes=1 << 20)
    assert message in str(info.value)
    assert info.value.http_status == 400
