"""The HTTP message heads the proxies hand to the relay, made in one place.

The judge decides what the app is sent; the relay decides how it is put on the wire. This
factory is the seam between them: the proxies build every head they forward through
:func:`request_head` and read heads only through ``method``/``target``/``headers``
(lower-case names) and, for responses, ``status_code``/``headers``, so the transport can change
its representation without touching the decision code.
"""

from __future__ import annotations

from .wire import RequestHead

Headers = list[tuple[bytes, bytes]]


def request_head(method: bytes, target: bytes, headers: Headers) -> RequestHead:
    """The request head the relay sends upstream. Built without per-event validation: the
    engine checks every name and value once, when the head is serialised."""
    return RequestHead(method, target, list(headers))
