"""The method table: versions, categories, where gated methods name their item."""

from __future__ import annotations

import pytest

from sidecar.mcp.methods import LIST_METHODS, METHODS, lookup


@pytest.mark.parametrize(
    ("method", "version", "defined"),
    [
        ("initialize", "2025-03-26", True),
        ("initialize", "2026-07-28", False),
        ("ping", "2025-11-25", True),
        ("ping", "2026-07-28", False),
        ("logging/setLevel", "2026-07-28", False),
        ("resources/subscribe", "2026-07-28", False),
        ("server/discover", "2025-11-25", False),
        ("server/discover", "2026-07-28", True),
        ("subscriptions/listen", "2026-07-28", True),
        ("tasks/get", "2025-06-18", False),
        ("tasks/get", "2025-11-25", True),
        ("tasks/result", "2026-07-28", False),
        ("tasks/update", "2026-07-28", True),
        ("elicitation/create", "2025-03-26", False),
        ("tools/call", "2024-11-05", True),
        ("tools/call", "2026-07-28", True),
    ],
)
def test_versions(method, version, defined):
    assert lookup(method).defined_in(version) is defined


def test_item_fields_and_lists():
    assert lookup("tools/call").item_field == "name"
    assert lookup("prompts/get").item_field == "name"
    assert lookup("resources/read").item_field == "uri"
    assert lookup("resources/unsubscribe").item_field == "uri"
    assert lookup("completion/complete").item_field == "ref"
    assert {
        "tools/list",
        "resources/list",
        "resources/templates/list",
        "prompts/list",
    } == LIST_METHODS
    assert lookup("resources/templates/list").list_item_key == "uriTemplate"


def test_lookup_is_exact():
    assert lookup("Tools/Call") is None
    assert lookup("tools/call ") is None


def test_categories_are_the_six():
    assert {m.category for m in METHODS.values()} == {
        "tools", "resources", "prompts", "lifecycle-utility", "completion", "tasks",
    }  # fmt: skip
