"""Sans-I/O Server-Sent Events: an incremental parser, a serializer, and the list filter.

Parsing follows the WHATWG HTML "event stream interpretation" rules: lines end in CRLF, LF or a
lone CR; a line starting with ``:`` is a comment; ``field:value`` loses one leading space of the
value; ``data`` lines are joined with LF; ``id`` containing NUL is ignored; ``retry`` is honoured
only when all ASCII digits; an empty line dispatches the event, and only if some ``data`` field
was seen; a leading UTF-8 BOM is skipped; an unterminated event at end of stream is discarded.

Blocks are emitted as soon as their terminating empty line arrives, so the first event reaches
the caller before the stream ends, and comment-only blocks (keep-alives) are emitted at once.
Unchanged blocks are passed on byte for byte. A CR ending one chunk may be the first half of a
CRLF; the LF that follows in the next chunk is then emitted on its own ("stray"), so the output
is the same however the input is split.

``SseFilter`` passes everything unchanged — notifications, server→client requests, comments,
priming events (an id with empty data) — except JSON-RPC responses whose id is pending in the
shared ``PendingLists``, and, with a ``backstop`` (the sidecar always gives one), any response
carrying a tools/prompts/resources list whatever its id: those are filtered and re-serialised.
An event the backstop answers with ``DROP`` (a resource update about a URI the caller may not
read) is left out, and so is its id.
Ids alone are not enough: a list replayed on a resumed stream, an evicted entry or a rounded id
would otherwise pass unfiltered. While a list response is pending, an event whose data does not
parse strictly, or a response that cannot be filtered, is never passed on: the filter emits a
JSON-RPC error event for its own pending ids (or one with id null), stops, and drops the rest of
the stream (ToolHive #5257 passed the whole unfiltered reply in this case); with nothing pending
such an event is dropped on its own. Memory is bounded by ``max_event_bytes``.

The ``id`` of every block the filter passes on is told to ``on_event_id``: a client can resume
(``Last-Event-ID``) only from an id it was given, so the sidecar admits only those (sessions.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from . import jsonrpc
from .errors import JsonRejected, ResponseFilterFailed, SseStreamError
from .filtering import DROP, filter_pending_message
from .jsonstrict import loads_strict
from .pending import PendingLists

DEFAULT_MAX_EVENT_BYTES = 8 * 1024 * 1024
_BOM = b"\xef\xbb\xbf"
_EOL = re.compile(rb"[\r\n]")
_DIGITS = re.compile(rb"[0-9]+")


@dataclass(frozen=True, slots=True)
class SseEvent:
    data: bytes  # data lines joined with LF, without the final LF
    event: str | None = None
    id: str | None = None
    retry: int | None = None

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


@dataclass(frozen=True, slots=True)
class SseBlock:
    """A run of input bytes: a dispatched event, anything else, or a stray LF of a split CRLF."""

    raw: bytes
    kind: Literal["event", "other", "stray"]
    event: SseEvent | None = None
    last_event_id: str | None = None  # the stream's last-event-id after this block
    id: str | None = None  # the id field this block itself set (None: it set none)


def serialize_event(event: SseEvent) -> bytes:
    lines = []
    if event.id is not None:
        lines.append(b"id: " + event.id.encode())
    if event.event is not None:
        lines.append(b"event: " + event.event.encode())
    if event.retry is not None:
        lines.append(b"retry: " + str(event.retry).encode())
    lines.extend(b"data: " + line for line in event.data.split(b"\n"))
    return b"\n".join(lines) + b"\n\n"


class SseParser:
    def __init__(self, *, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._max = max_event_bytes
        self._buf = bytearray()
        self._raw = bytearray()  # raw bytes of the block in progress
        self._started = False  # past the optional BOM
        self._skip_lf = False  # the previous line ended in a CR at the end of a chunk
        self._reset_fields()
        self.last_event_id: str | None = None

    def _reset_fields(self) -> None:
        self._data: list[bytes] = []
        self._event: str | None = None
        self._id: str | None = None
        self._retry: int | None = None
        self._has_fields = False

    def feed(self, chunk: bytes) -> list[SseBlock]:
        self._buf += chunk
        blocks: list[SseBlock] = []
        if not self._started:
            if len(self._buf) < len(_BOM) and _BOM.startswith(bytes(self._buf)):
                return blocks
            if self._buf.startswith(_BOM):
                self._raw += _BOM
                del self._buf[: len(_BOM)]
            self._started = True
        while self._buf:
            if self._skip_lf:
                self._skip_lf = False
                if self._buf[0] == 0x0A:
                    del self._buf[0]
                    if self._raw:
                        self._raw += b"\n"
                    else:
                        blocks.append(SseBlock(b"\n", "stray", last_event_id=self.last_event_id))
                    continue
            match = _EOL.search(self._buf)
            if match is None:
                break
            end = match.start()
            if self._buf[end] == 0x0D and end + 1 == len(self._buf):
                width, self._skip_lf = 1, True
            elif self._buf[end : end + 2] == b"\r\n":
                width = 2
            else:
                width = 1
            line = bytes(self._buf[:end])
            self._raw += self._buf[: end + width]
            del self._buf[: end + width]
            block = self._line(line)
            if block is not None:
                blocks.append(block)
        if len(self._raw) + len(self._buf) > self._max:
            raise SseStreamError(f"SSE event larger than {self._max} bytes")
        return blocks

    def _take_raw(self) -> bytes:
        raw = bytes(self._raw)
        self._raw.clear()
        return raw

    def _line(self, line: bytes) -> SseBlock | None:
        if not line:
            event = None
            if self._data:
                event = SseEvent(b"\n".join(self._data), self._event, self._id, self._retry)
            block_id = self._id
            if block_id is not None:
                self.last_event_id = block_id
            self._reset_fields()
            kind = "event" if event is not None else "other"
            return SseBlock(self._take_raw(), kind, event, self.last_event_id, block_id)
        if line.startswith(b":"):
            if not self._has_fields:  # a comment outside any event: pass it on at once
                return SseBlock(self._take_raw(), "other", None, self.last_event_id)
            return None
        name, colon, value = line.partition(b":")
        if colon and value.startswith(b" "):
            value = value[1:]
        self._has_fields = True
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._event = value.decode("utf-8", errors="replace")
        elif name == b"id":
            if b"\x00" not in value:
                self._id = value.decode("utf-8", errors="replace")
        elif name == b"retry" and _DIGITS.fullmatch(value):
            self._retry = int(value)
        return None

    def close(self) -> bytes:
        """End of stream: the raw bytes of an unterminated block (never dispatched)."""
        leftover = bytes(self._raw) + bytes(self._buf)
        self._raw.clear()
        self._buf.clear()
        self._reset_fields()
        return leftover


def parse_stream(data: bytes, *, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> list[SseEvent]:
    parser = SseParser(max_event_bytes=max_event_bytes)
    return [b.event for b in parser.feed(data) if b.event is not None]


class SseFilter:
    """Filter the pending list responses out of one upstream event stream (POST or GET)."""

    def __init__(
        self,
        pending: PendingLists,
        *,
        own_ids: Iterable[jsonrpc.RequestId] = (),
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        backstop: Callable[[Any], Any | None] | None = None,
        observe: Callable[[Any], None] | None = None,
        on_event_id: Callable[[str], None] | None = None,
    ) -> None:
        self._observe = observe  # sees each parsed message before any filtering
        self._on_event_id = on_event_id  # told each event id passed on (resumption points)
        self._pending = pending
        self._backstop = backstop  # filters list results whatever their id (filtering.py)
        self._own_ids = tuple(own_ids)
        self._max = max_event_bytes
        self._parser = SseParser(max_event_bytes=max_event_bytes)
        self._last_rewritten = False
        self.failed: str | None = None  # why the stream was cut, once it was

    def feed(self, chunk: bytes) -> bytes:
        if self.failed:
            return b""
        try:
            blocks = self._parser.feed(chunk)
        except SseStreamError as exc:
            return self._fail(str(exc))
        out = bytearray()
        for block in blocks:
            passed = self._block(block)
            out += passed
            if self.failed:
                break
            if passed and block.id and self._on_event_id is not None:
                self._on_event_id(block.id)
        return bytes(out)

    def close(self) -> bytes:
        if self.failed:
            return b""
        leftover = self._parser.close()
        # An unterminated event is discarded by conforming clients; a lax one might show it,
        # so it is dropped while a list is pending.
        return b"" if self._pending else leftover

    def _block(self, block: SseBlock) -> bytes:
        if block.kind == "stray":
            return b"" if self._last_rewritten else block.raw
        self._last_rewritten = False
        if block.event is None or not (self._pending or self._backstop):
            return block.raw
        if not block.event.data.strip():
            # An id with empty data: the 2025-11-25 priming event (a resumption point).
            return block.raw
        try:
            message = loads_strict(block.event.data, max_bytes=self._max, fold_check=False)
            if self._observe is not None:
                self._observe(message)
            rewritten = self._filter(message)
        except (JsonRejected, ResponseFilterFailed) as exc:
            if self._pending:
                return self._fail(f"event could not be filtered: {exc}")
            # Nothing of ours is pending, but an event we cannot read is never passed on:
            # a lenient client might still find a list in it.
            self._last_rewritten = True
            return b""
        if rewritten is None:
            return block.raw
        self._last_rewritten = True
        if rewritten is DROP:  # e.g. an update about a resource the caller may not read
            return b""
        event = block.event
        return serialize_event(
            SseEvent(jsonrpc.dumps(rewritten), event.event, event.id, event.retry)
        )

    def _filter(self, message: Any) -> Any | None:
        """The filtered message, or None when the event answers no pending list request."""
        if isinstance(message, list):
            answered = [self._answered(m) for m in message]
            backstopped = [
                None if p or self._backstop is None else self._backstop(m)
                for m, p in zip(message, answered, strict=True)
            ]
            if not any(answered) and not any(b is not None for b in backstopped):
                return None
            kept = [
                self._apply(m, p) if p else (b if b is not None else m)
                for m, p, b in zip(message, answered, backstopped, strict=True)
            ]
            kept = [m for m in kept if m is not DROP]
            return kept if kept else DROP
        entry = self._answered(message)
        if entry is not None and "error" in message:  # error responses pass (content-checked)
            self._pending.discard(entry.request_id)
            return self._backstop(message) if self._backstop is not None else None
        if entry is not None:
            return self._apply(message, entry)
        return self._backstop(message) if self._backstop is not None else None

    def _answered(self, message: Any):
        if not isinstance(message, dict) or "method" in message:
            return None
        if "result" not in message and "error" not in message:
            return None
        return self._pending.get(message.get("id"))

    def _apply(self, message: dict, entry) -> Any:
        filtered = filter_pending_message(message, entry)
        self._pending.discard(entry.request_id)
        if self._backstop is not None:  # also the policy in force now, not only the one then
            again = self._backstop(filtered)
            filtered = filtered if again is None else again
        return filtered

    def _fail(self, reason: str) -> bytes:
        self.failed = reason
        ids = [i for i in self._own_ids if i in self._pending] or [None]
        message = f"upstream response withheld: {reason}"
        return b"".join(
            serialize_event(SseEvent(jsonrpc.error_body(i, jsonrpc.INTERNAL_ERROR, message)))
            for i in ids
        )
