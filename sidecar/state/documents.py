"""Reading resource YAML so that every error names its file and line.

Resource parsers work on plain dicts and report *where* in the document a problem is as a field
path (``spec.accessControl.policies[1].appId``). This module keeps the YAML node tree beside each
document and turns such a path back into a line number. It also refuses duplicate mapping keys,
which PyYAML would silently resolve by keeping the last one — in a policy file that is exactly
the kind of ambiguity an attacker (or a tired operator) exploits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import ResourceInvalid
from . import yaml_loader

_PATH_RE = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


class DocumentError(ResourceInvalid):
    """A resource file cannot be used; the message starts with ``file:line:``."""

    code = "ERR_RESOURCE_INVALID"


@dataclass(frozen=True)
class Document:
    body: dict[str, Any]
    source: str
    line: int
    node: yaml.Node

    @property
    def kind(self) -> str:
        return str(self.body.get("kind", ""))

    @property
    def name(self) -> str:
        metadata = self.body.get("metadata")
        return str(metadata.get("name", "")) if isinstance(metadata, dict) else ""

    def error(self, exc: ResourceInvalid) -> DocumentError:
        """Re-raise a parser's error with this document's file and the field's line."""
        line = locate(self.node, exc.location) if exc.location else self.line
        label = f"{self.kind or 'document'} {self.name!r}" if self.name else self.kind or "document"
        where = f" {exc.location}:" if exc.location else ""
        return DocumentError(f"{self.source}:{line}: {label}:{where} {exc.reason}")


def _check_duplicate_keys(node: yaml.Node, source: str) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                if key.value in seen:
                    raise DocumentError(
                        f"{source}:{key.start_mark.line + 1}: duplicate key {key.value!r} "
                        f"(first at line {seen[key.value]})"
                    )
                seen[key.value] = key.start_mark.line + 1
            _check_duplicate_keys(value, source)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _check_duplicate_keys(item, source)


def load_documents(text: str, source: str) -> list[Document]:
    """All non-empty documents in ``text``; each must be a mapping.

    Read with :mod:`.yaml_loader`, so anchors/aliases and oversized input are refused with the
    file and line before any walk over the tree (the duplicate-key check included) begins.
    """
    try:
        nodes = yaml_loader.compose_all(text)
    except yaml.YAMLError as exc:
        line, problem = yaml_loader.problem_text(exc)
        where = f"{line}:" if line is not None else ""
        what = "" if isinstance(exc, yaml_loader.YamlRefused) else " not valid YAML:"
        raise DocumentError(f"{source}:{where}{what} {problem}") from None
    documents = []
    for node in nodes:
        if node is None:
            continue
        line = node.start_mark.line + 1
        _check_duplicate_keys(node, source)
        try:
            body = yaml_loader.construct(node)
        except yaml.YAMLError as exc:
            raise DocumentError(f"{source}:{line}: cannot read document: {exc}") from None
        if body is None:
            continue
        if not isinstance(body, dict):
            kind = type(body).__name__
            raise DocumentError(f"{source}:{line}: a resource must be a mapping, not {kind}")
        documents.append(Document(body, source, line, node))
    return documents


def read_file(path: Path | str) -> str:
    """A resource file's text, or a :class:`DocumentError` that names the file and the reason."""
    try:
        return yaml_loader.read_text(path)
    except FileNotFoundError:
        raise DocumentError(f"{path}: no such file") from None
    except yaml_loader.FileUnreadable as exc:
        raise DocumentError(f"{path}: {exc}") from None


def locate(node: yaml.Node, location: str) -> int:
    """The line of the deepest node on ``location`` that exists (1-based)."""
    current = node
    for key, index in _PATH_RE.findall(location):
        following = None
        if key and isinstance(current, yaml.MappingNode):
            for key_node, value_node in current.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
                    following = value_node
                    break
        elif index and isinstance(current, yaml.SequenceNode):
            position = int(index)
            if position < len(current.value):
                following = current.value[position]
        if following is None:
            break
        current = following
    return current.start_mark.line + 1
