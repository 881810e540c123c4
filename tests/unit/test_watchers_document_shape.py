"""A document that is not a mapping is refused saying what it is (it said "a list" for all)."""

from __future__ import annotations

import pytest

from sidecar.state.documents import DocumentError, load_documents


@pytest.mark.parametrize(
    ("text", "kind"), [("- a\n", "list"), ("hello\n", "str"), ("5\n", "int"), ("true\n", "bool")]
)
def test_a_document_that_is_not_a_mapping_is_refused_naming_its_type(text, kind) -> None:
    with pytest.raises(DocumentError, match=f"f.yaml:1: a resource must be a mapping, not {kind}$"):
        load_documents(text, "f.yaml")


def test_the_twin_a_mapping_is_a_document() -> None:
    (document,) = load_documents("kind: Configuration\nmetadata: {name: calm}\n", "f.yaml")
    assert document.kind == "Configuration" and document.line == 1
