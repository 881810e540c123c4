"""Readable log lines show lists and mappings as text, not as Python reprs."""

from __future__ import annotations

from sidecar.logsetup import plain_values


def test_lists_and_mappings_read_as_text_and_scalars_are_untouched():
    event = {
        "event": "request denied",
        "names": ["add", "echo"],
        "arg_keys": [],
        "sources": {"acl": "v3", "tools": ["x"]},
        "status": 403,
        "caller": "spiffe://public/ns/default/a",
    }
    assert plain_values(None, "warning", event) == {
        "event": "request denied",
        "names": "add,echo",
        "arg_keys": "-",
        "sources": "acl:v3,tools:x",
        "status": 403,
        "caller": "spiffe://public/ns/default/a",
    }
