"""The one YAML reader for every resource, config and run file trustmesh reads.

Why a reader of our own: YAML anchors and aliases let a few hundred bytes describe a tree of
millions of nodes (an 8-level, fan-out-9 alias tree is 640 bytes and 43 million nodes). PyYAML
shares aliased nodes, but anything that walks the tree afterwards — a duplicate-key check, a
parser, a serializer — pays for every expanded node. A policy file has no use for anchors, so
they are refused outright, at the line that holds the first one. With no aliases the node tree
is at most as large as the text, so bounding the text bounds every later walk; nesting depth,
node count and CPU time are bounded too, so no file can cost more than a known amount.

Speed matters even within the bounds: a sidecar parses in a worker thread that shares the GIL
with its event loop. Events come from libyaml when PyYAML has it (about 4x faster than the
pure-Python scanner), and the worker pauses every few nodes (:class:`_Pacer`). Measured with a
240 KB alias-free file swapped into a watched file under a scheduled caller: the caller's median
latency rose 3-8x with the pure-Python parser and no pauses, 1.0-1.2x with both.

Refusals are :class:`YamlRefused`, a ``yaml.MarkedYAMLError``: callers that already handle
``yaml.YAMLError`` (and print its ``problem`` at its ``problem_mark``) show them unchanged.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

MAX_BYTES = 512 * 1024  # the largest real policy file is a few KiB; a tool list, tens of KiB
MAX_DEPTH = 64
MAX_NODES = 200_000
MAX_SECONDS = 2.0
PAUSE_EVERY = 8  # nodes handled between pauses, in a worker thread
PAUSE_SECONDS = 0.0001


class YamlRefused(yaml.MarkedYAMLError):
    """YAML that trustmesh will not read: anchors/aliases, or past a size/depth/time bound."""

    def __init__(self, problem: str, mark: yaml.Mark | None = None) -> None:
        super().__init__(problem=problem, problem_mark=mark)


class FileUnreadable(OSError):
    """A file could not be read as UTF-8 text within the size bound; ``str`` says why.

    An ``OSError`` (with ``strerror`` set) so that callers handling unreadable files already
    handle this one too.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.strerror = reason


class _Pacer:
    """Counts nodes; in a worker thread, pauses briefly every few so the GIL changes hands.

    A sidecar parses its policy in a worker thread while its event loop serves requests. The two
    share the GIL: without pauses, each time the loop gives the GIL up for a system call it waits
    a whole switch interval (5 ms) to get it back, and a large file slows every request in
    flight. Short, frequent pauses keep that wait to a fraction of a millisecond. The command
    line parses in its main thread and never pauses.
    """

    def __init__(self) -> None:
        self.count = 0
        self.pausing = threading.current_thread() is not threading.main_thread()

    def tick(self) -> None:
        self.count += 1
        if self.pausing and self.count % PAUSE_EVERY == 0:
            time.sleep(PAUSE_SECONDS)


class _PurePythonEvents(Reader, Scanner, Parser):
    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)


try:  # libyaml's event parser, when PyYAML was built with it: it scans ~4x faster
    from yaml._yaml import CParser as _EventParser
except ImportError:  # pragma: no cover - a PyYAML built without libyaml
    _EventParser = _PurePythonEvents


class _Bounds(Composer):
    """A ``SafeLoader``'s composer that refuses anchors and aliases and stops at the bounds.

    The check sits in ``compose_node``, which the composer calls once per node before building
    it: an alias is refused before it is resolved, so its cost is never paid. Concrete loaders
    below add the event parser (``_events``), the safe constructor and the resolver.
    """

    _events: type

    def __init__(self, stream: str, *, deadline: float | None = None) -> None:
        self._events.__init__(self, stream)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self._depth = 0
        self._pacer = _Pacer()
        # CPU time of this thread, not wall time: a busy machine must not refuse a good file.
        self._deadline = deadline if deadline is not None else time.thread_time() + MAX_SECONDS

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise YamlRefused(
                f"alias *{event.anchor} refused: trustmesh files may not use YAML anchors or "
                "aliases (write the value out)",
                event.start_mark,
            )
        if getattr(event, "anchor", None) is not None:
            raise YamlRefused(
                f"anchor &{event.anchor} refused: trustmesh files may not use YAML anchors or "
                "aliases (write the value out)",
                event.start_mark,
            )
        self._pacer.tick()
        nodes = self._pacer.count
        if nodes > MAX_NODES:
            raise YamlRefused(f"more than {MAX_NODES} YAML nodes", event.start_mark)
        if self._depth >= MAX_DEPTH:
            raise YamlRefused(f"nested deeper than {MAX_DEPTH} levels", event.start_mark)
        if nodes % 1024 == 0 and time.thread_time() > self._deadline:
            raise YamlRefused(f"took more than {MAX_SECONDS:g}s of CPU to read", event.start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class BoundedLoader(_Bounds, _EventParser, SafeConstructor, Resolver):
    _events = _EventParser


class PurePythonBoundedLoader(_Bounds, _PurePythonEvents, SafeConstructor, Resolver):
    """The same bounds over PyYAML's own scanner (what runs where libyaml is missing)."""

    _events = _PurePythonEvents


class _PacedConstructor(yaml.SafeLoader):
    """``SafeLoader``'s constructor, pausing as :class:`_Pacer` says (trees are bounded already)."""

    def __init__(self) -> None:
        super().__init__("")
        self._pacer = _Pacer()

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        self._pacer.tick()
        return super().construct_object(node, deep)


def _bounded(text: str) -> str:
    if len(text) > MAX_BYTES:
        raise YamlRefused(f"larger than {MAX_BYTES // 1024} KiB; trustmesh files are smaller")
    return text


def compose_all(text: str) -> list[yaml.Node | None]:
    """The node tree of every document in ``text`` (like ``yaml.compose_all``), bounded."""
    loader = BoundedLoader(_bounded(text))
    try:
        nodes = []
        while loader.check_node():
            nodes.append(loader.get_node())
        return nodes
    finally:
        loader.dispose()


def compose(text: str) -> yaml.Node | None:
    """The node tree of the single document in ``text`` (like ``yaml.compose``), bounded."""
    loader = BoundedLoader(_bounded(text))
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


def construct(node: yaml.Node) -> Any:
    """Plain Python data (dicts, lists, scalars) from a node tree ``compose`` returned."""
    loader = _PacedConstructor()
    try:
        return loader.construct_document(node)
    finally:
        loader.dispose()


def safe_load(text: str) -> Any:
    """``yaml.safe_load`` with the bounds above (for files read without line tracking)."""
    node = compose(text)
    return None if node is None else construct(node)


def read_text(path: Path | str, limit: int = MAX_BYTES) -> str:
    """The file's text, read at most ``limit`` bytes far: a huge or binary file fails plainly.

    Raises :class:`FileUnreadable` with the reason (without the path: callers add it where
    their message format wants it); ``FileNotFoundError`` passes through for callers that
    treat a missing file as "absent".
    """
    try:
        with open(path, "rb") as handle:
            raw = handle.read(limit + 1)
    except FileNotFoundError:
        raise
    except IsADirectoryError:
        raise FileUnreadable("is a directory, not a file") from None
    except OSError as exc:
        raise FileUnreadable(f"cannot read: {exc.strerror or exc}") from None
    if len(raw) > limit:
        raise FileUnreadable(f"larger than {limit // 1024} KiB; trustmesh files are smaller")
    if b"\0" in raw:
        raise FileUnreadable("is a binary file, not YAML text")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileUnreadable(f"is not UTF-8 text (byte {exc.start} cannot be decoded)") from None


def problem_text(exc: yaml.YAMLError) -> tuple[int | None, str]:
    """(1-based line or None, the problem) of any PyYAML error, for one-line messages."""
    if isinstance(exc, yaml.reader.ReaderError):  # its str() spans lines; say it in one
        return None, (
            f"character #x{exc.character:04x} at position {exc.position} is not allowed in YAML"
            if isinstance(exc.character, int)
            else f"cannot decode byte #x{exc.character[0]:02x} at position {exc.position}"
        )
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return (mark.line + 1 if mark is not None else None), problem
