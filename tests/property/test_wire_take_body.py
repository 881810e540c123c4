"""``Http1.take_body`` hands out a whole body at once exactly when event-by-event reading would
have yielded that same body and its end from what already arrived; otherwise it consumes
nothing. Checked against a second parser fed the same bytes, however they are split."""

from __future__ import annotations

import h11
from hypothesis import given
from hypothesis import strategies as st

from sidecar.http.wire import NEED_DATA, SERVER, Http1


def request(body: bytes, chunked: bool) -> bytes:
    if chunked:
        pieces = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (body[:3], body[3:]) if p)
        return (
            b"POST / HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n"
            + pieces
            + b"0\r\n\r\n"
        )
    return b"POST / HTTP/1.1\r\nhost: t\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


def by_events(parser: Http1) -> tuple[bytes, bool]:
    parts, ended = [], False
    while True:
        event = parser.next_event()
        if type(event) is h11.Data:
            parts.append(event.data)
        else:
            ended = type(event) is h11.EndOfMessage
            break
    return b"".join(parts), ended


@given(st.binary(max_size=40), st.booleans(), st.integers(min_value=0, max_value=200))
def test_take_body_agrees_with_reading_event_by_event(body, chunked, cut):
    wire = request(body, chunked)
    fed = wire[: max(cut, wire.index(b"\r\n\r\n") + 4)]
    fast, slow = Http1(SERVER), Http1(SERVER)
    for parser in (fast, slow):
        parser.receive_data(fed)
        assert parser.next_event().method == b"POST"
    taken = fast.take_body()
    expected, ended = by_events(slow)
    if taken is None:
        assert not ended
        assert by_events(fast) == (expected, ended)  # nothing was consumed
    else:
        assert ended and taken == expected == body
        assert fast.their_state is h11.DONE
        assert fast.next_event() in (NEED_DATA, h11.PAUSED)
