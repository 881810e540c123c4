"""jsonstrict: each parser differential from notes §5, paired with the legitimate body."""

from __future__ import annotations

import json

import pytest

from sidecar.mcp import JsonRejected, JsonTooLarge, McpRequestRejected, check_envelope, loads_strict

OK = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","arguments":{"a":1}}}'


def load(data: bytes, **kw):
    return loads_strict(data, max_bytes=1 << 20, **kw)


def test_legitimate_request_parses_like_json_loads():
    assert load(OK) == json.loads(OK)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"a":1,"a":2}', "duplicate key 'a'"),
        (b'{"params":{"name":"add","name":"rm"}}', "duplicate key 'name'"),
        (b'{"params":{"arguments":{"x":{"y":{"z":1,"z":2}}}}}', "duplicate key 'z'"),
        (b'{"name":"add","Name":"rm"}', "keys 'name' and 'Name' differ only by case or padding"),
        (b'{"args":{"id":1,"ID":2}}', "keys 'id' and 'ID' differ only by case or padding"),
        (b'{"pa\\u017fsword":1,"password":2}', "differ only by case or padding"),  # long s
        (b'{"x":{"name\\u0000":"rm"}}', "key 'name\\x00' imitates the protocol key 'name'"),
        (b'{"uri\\u001f":"x"}', "imitates the protocol key 'uri'"),
        (b"[NaN]", "non-standard JSON constant NaN"),
        (b"[-Infinity]", "non-standard JSON constant -Infinity"),
        (b"[1e400]", "does not fit a double"),
        (b'"\\ud800"', "unpaired UTF-16 surrogate"),
        (b'{"\\udfff":1}', "unpaired UTF-16 surrogate"),
        (b"\xef\xbb\xbf{}", "byte order mark"),
        (b'{"a":"\xff"}', "not valid UTF-8"),
        (b'{"a":"\xed\xa0\x80"}', "not valid UTF-8"),  # CESU-8 encoded surrogate
        (b"[" * 65 + b"]" * 65, "nesting deeper than 64 levels"),
        (b"[" * 5000 + b"]" * 5000, "nesting deeper than 64 levels"),
        (b'{"a":', "invalid JSON"),
    ],
)
def test_differentials_are_refused(data, message):
    with pytest.raises(JsonRejected, match=None) as info:
        load(data)
    assert message in str(info.value)
    assert info.value.http_status == 400


def test_legitimate_twins_pass():
    assert load(b'"\\ud83d\\ude00"') == "\U0001f600"  # an escaped surrogate *pair* is fine
    assert load(b"[" * 64 + b"]" * 64) is not None
    assert load(b'{"args":{"ID":2}}') == {"args": {"ID": 2}}  # "ID" alone is a fine argument
    assert load(b'{"Name":1,"name":2}', fold_check=False) == {"Name": 1, "name": 2}


def test_size_limit():
    with pytest.raises(JsonTooLarge) as info:
        loads_strict(b"[1, 2, 3]", max_bytes=4)
    assert info.value.http_status == 413
    assert loads_strict(b"[1,2]", max_bytes=5) == [1, 2]


@pytest.mark.parametrize(
    "message",
    [
        {"jsonrpc": "2.0", "Method": "tools/call"},
        {"jsonrpc": "2.0", "method": "tools/call", "params": {"Name": "rm"}},
        {"jsonrpc": "2.0", "method": "tools/call", "params": {"name\u200b": "rm"}},
        {"jsonrpc": "2.0", "method": "x", "params": {"ref": {"URI": "file:///x"}}},
        {"JSONRPC": "2.0"},
    ],
)
def test_envelope_lookalikes_alone_are_refused(message):
    with pytest.raises(McpRequestRejected, match="imitates the protocol member"):
        check_envelope(message)


def test_envelope_lookalikes_deeper_are_allowed():
    check_envelope({"jsonrpc": "2.0", "method": "tools/call", "params": {"arguments": {"Name": 1}}})
