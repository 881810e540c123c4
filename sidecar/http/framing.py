"""Refusing HTTP/1.1 messages whose framing two parsers could read two ways (#10.10).

Request smuggling lives in the gap between how we frame a message and how the next hop does.
We re-frame everything we forward, so our own reading is what counts — but a message that is
ambiguous at all is refused rather than resolved by a rule the app may not share:

* ``Content-Length`` together with ``Transfer-Encoding`` → 400 (RFC 9112 §6.1 lets a proxy
  resolve it; we do not guess which one the sender meant);
* obsolete line folding (a header line that starts with a space or tab) → 400 (RFC 9112 §5.2
  allows a server to reject it; h11 would silently unfold it);
* ``Transfer-Encoding`` on an HTTP/1.0 message → 400 (1.0 has no transfer codings);
* a transfer coding other than a single ``chunked`` → 501 (h11 refuses it with that hint).

Pure functions over the raw head bytes and the parsed headers, so they are tested with plain data.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_HEAD_END = re.compile(rb"\n\r?\n")
_FOLDED_LINE = re.compile(rb"\n[ \t]")


class FramingProblem(ValueError):
    """A head whose framing is ambiguous; ``http_status`` is what to answer a client with."""

    def __init__(self, message: str, http_status: int = 400) -> None:
        super().__init__(message)
        self.http_status = http_status


def raw_head(buffered: bytes) -> bytes:
    """The head at the start of ``buffered`` (through its blank line), or all of it if the
    blank line has not arrived yet."""
    match = _HEAD_END.search(buffered)
    return buffered if match is None else buffered[: match.end()]


def check_raw_head(head: bytes) -> None:
    """Refuse what a parser hides once it has parsed: obsolete line folding."""
    if _FOLDED_LINE.search(head.lstrip(b"\r\n")):
        raise FramingProblem("obsolete line folding in a header is not accepted")


def check_framing_headers(headers: Iterable[tuple[bytes, bytes]], http_version: bytes) -> None:
    """Refuse a parsed head whose body framing is ambiguous (names are lower-case)."""
    has_length = has_coding = False
    for name, _ in headers:
        if name == b"content-length":
            has_length = True
        elif name == b"transfer-encoding":
            has_coding = True
    if has_length and has_coding:
        raise FramingProblem("Content-Length together with Transfer-Encoding is ambiguous")
    if has_coding and http_version == b"1.0":
        raise FramingProblem("Transfer-Encoding is not defined for HTTP/1.0")
