"""Operation matching for the ACL: Dapr's trie, quirks included.

Reference: dapr/dapr ``pkg/config/acl_trie.go`` (``Trie.Search``, ``PutOperationAction``,
``findNodeWithWildcard``, ``isMatch``); behaviour catalogued in ``notes/dapr-compat.md`` §1.6.
We reproduce the *behaviour* exactly, because an ACL ported from Dapr must decide the same way
here, but the data layout is ours: nodes are frozen and built once at parse time, segment names
are kept without their leading ``/`` (so searching never concatenates strings), and globs are
pre-split into their literal pieces.

Theory of operation. A name such as ``/v1/items/*`` is cut at ``/`` into segments, one trie level
per segment. Searching a request operation walks the same way, one segment at a time:

* **Child choice.** The children of a node are scanned *in insertion order* and the first one that
  fits is taken, with no "most specific wins" across siblings. A child fits when its name equals
  the segment; or it is ``*`` and this is the last segment (a ``*`` child is skipped in the
  middle); or it is ``**`` (always); or it is a glob that matches the segment (``*`` = any run of
  characters within the segment, nothing else is special).
* **Shallow data wins.** If the chosen node carries a rule, that rule is the answer at once, even
  when the request has more segments: a plain name covers everything below it
  (``/op1`` matches ``/op1/a/b``). The one exception is a ``*`` node reached before the end (only
  possible when the request itself has a literal ``*`` segment): the walk continues below it.
* **Trailing wildcard.** If the request ends on a node without a rule, a ``*``/``**``/glob child
  of that node answers for it, so ``/op1/*`` and ``/op1/**`` both match ``/op1``.
* ``**`` in the middle of a name matches exactly one segment; ``*`` in the middle never matches a
  real segment. Only the *name* is a pattern: a ``*`` in the request is an ordinary character.
* **First inserted wins.** Inserting a name whose node already has a rule keeps the old rule.

Nothing here lower-cases or prefixes: callers hand in names and operations already normalised.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

R = TypeVar("R")

SINGLE_SEGMENT_WILDCARD = "*"  # Dapr's "/*"
MULTI_SEGMENT_WILDCARD = "**"  # Dapr's "/**"


def glob_match(pieces: tuple[str, ...], text: str) -> bool:
    """Whether ``text`` matches the glob whose literal pieces (split at ``*``) are ``pieces``.

    Same answers as Dapr's ``isMatch`` dynamic programme, in linear-ish time: the first piece is a
    prefix, the last a suffix, and the middle pieces are found greedily left to right (greedy
    leftmost placement is always safe when the only wildcard is ``*``). A regex would backtrack
    polynomially on names like ``a*a*a*b``, and the text comes from the network.
    """
    first, last = pieces[0], pieces[-1]
    if len(text) < len(first) + len(last):
        return False
    if not (text.startswith(first) and text.endswith(last)):
        return False
    position, end = len(first), len(text) - len(last)
    for piece in pieces[1:-1]:
        if piece:
            found = text.find(piece, position, end)
            if found < 0:
                return False
            position = found + len(piece)
    return True


@dataclass(frozen=True, slots=True)
class TrieNode(Generic[R]):
    """One segment of one or more operation names, and the rule of the name that ends here."""

    segment: str  # without the leading "/"; "" for the empty segment
    rule: R | None
    children: tuple[TrieNode[R], ...]
    glob_pieces: tuple[str, ...] | None  # set when segment holds a "*" and is not "*" or "**"

    def child_for(self, segment: str, is_last: bool) -> TrieNode[R] | None:
        """Dapr's ``findNodeWithWildcard``: the first child, in insertion order, that fits."""
        for child in self.children:
            name = child.segment
            if name == segment:
                return child
            if name == SINGLE_SEGMENT_WILDCARD:
                if is_last:
                    return child
                continue
            if name == MULTI_SEGMENT_WILDCARD:
                return child
            if child.glob_pieces is not None and glob_match(child.glob_pieces, segment):
                return child
        return None


class _NodeBuilder(Generic[R]):
    """Mutable twin of :class:`TrieNode`, used only while the trie is being built."""

    __slots__ = ("children", "rule", "segment")

    def __init__(self, segment: str) -> None:
        self.segment = segment
        self.rule: R | None = None
        self.children: list[_NodeBuilder[R]] = []

    def freeze(self) -> TrieNode[R]:
        segment = self.segment
        is_glob = "*" in segment and segment not in (
            SINGLE_SEGMENT_WILDCARD,
            MULTI_SEGMENT_WILDCARD,
        )
        return TrieNode(
            segment,
            self.rule,
            tuple(child.freeze() for child in self.children),
            tuple(segment.split("*")) if is_glob else None,
        )


@dataclass(frozen=True, slots=True)
class OperationTrie(Generic[R]):
    """An immutable set of operation names, each with a rule, searched the way Dapr searches."""

    root: TrieNode[R]

    @classmethod
    def build(cls, entries: Iterable[tuple[str, R]]) -> OperationTrie[R]:
        """Insert ``(name, rule)`` pairs in order; names must start with ``/``.

        Dapr's ``PutOperationAction``: walk (or create) one node per segment by exact name, and
        attach the rule to the last node only if it has none yet (the first name wins).
        """
        root: _NodeBuilder[R] = _NodeBuilder("")
        for name, rule in entries:
            if not name.startswith("/"):
                raise ValueError(f"operation names start with '/': {name!r}")
            node = root
            for segment in name.split("/")[1:]:
                child = next((c for c in node.children if c.segment == segment), None)
                if child is None:
                    child = _NodeBuilder(segment)
                    node.children.append(child)
                node = child
            if node.rule is None:
                node.rule = rule
        return cls(root.freeze())

    def search(self, operation: str) -> R | None:
        """The rule that decides ``operation`` (``/``-prefixed), or None when no name matches.

        Dapr's ``Trie.Search``, step for step; see the module docstring for what the steps mean.
        """
        segments = operation.split("/")
        last = len(segments) - 1
        node: TrieNode[R] | None = self.root
        for index in range(1, last + 1):
            is_last = index == last
            node = node.child_for(segments[index], is_last)
            if node is None:
                return None
            if node.rule is not None:
                if not is_last and node.segment == SINGLE_SEGMENT_WILDCARD:
                    continue
                return node.rule
            if is_last:
                wildcard = node.child_for(SINGLE_SEGMENT_WILDCARD, True)
                if wildcard is not None and wildcard.rule is not None:
                    return wildcard.rule
        return None
