"""Sans-I/O HTTP/1.1 for the data plane's hot path, on llhttp (via ``httptools``).

h11 spent more CPU per request than everything else in the sidecar (#11): it parses in Python
and validates every event it builds. :class:`Http1` keeps h11's interface — the same events
(``Request``/``Response``/``Data``/``EndOfMessage``/``ConnectionClosed``, ``NEED_DATA``), the same
``our_state``/``their_state`` values, ``receive_data``/``next_event``/``send``/
``start_next_cycle`` — so the relay and the server loop drive either one, and h11 stays the
oracle in the differential tests and the parser of the admin port. llhttp (Node's parser)
parses heads and de-chunks bodies in C and is strict by default: it refuses obsolete line
folding, ``Content-Length`` beside ``Transfer-Encoding``, duplicate lengths, bare LF, and any
byte outside the grammar. On top of it this module refuses what llhttp lets through but h11
(or we) would not: a missing or repeated ``Host`` on HTTP/1.1, a version other than 1.0/1.1,
a transfer coding other than a single ``chunked`` (501), ``Transfer-Encoding`` on HTTP/1.0, a
head over the size limit (431, counted while it is still arriving).

Heads are built without h11's per-event validation; what we *send* is checked once, when it is
serialised (header names are tokens, values and targets hold no CR, LF or NUL), so nothing a
caller or a token claim put in a header can split a message.
"""

from __future__ import annotations

import re
from collections import deque
from operator import itemgetter

import h11
import httptools

Headers = list[tuple[bytes, bytes]]

# h11's state and event vocabulary, shared so callers need not know which engine runs.
IDLE, SEND_BODY, SEND_RESPONSE, DONE = h11.IDLE, h11.SEND_BODY, h11.SEND_RESPONSE, h11.DONE
MUST_CLOSE, CLOSED, ERROR = h11.MUST_CLOSE, h11.CLOSED, h11.ERROR
CLIENT, SERVER, NEED_DATA, PAUSED = h11.CLIENT, h11.SERVER, h11.NEED_DATA, h11.PAUSED

END = h11.EndOfMessage()  # immutable: one instance serves every message
_END = END
_CLOSED = h11.ConnectionClosed()
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TOKEN_LIST = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+(?::[!#$%&'*+\-.^_`|~0-9A-Za-z]+)*")
_UNSAFE_VALUE = re.compile(rb"[\r\n\x00]")
_UNSAFE_TARGET = re.compile(rb"[\x00-\x20\x7f]")
_BODYLESS_STATUS = frozenset({204, 304})
_NAME, _VALUE, _FIELD = itemgetter(0), itemgetter(1), b": "
# What llhttp tolerates in a request line and h11 (RFC 9112 §3) does not: several spaces.
_REQUEST_LINE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+ [^\x00-\x20\x7f]+ HTTP/[0-9]\.[0-9]\r\n")


class RequestHead(h11.Request):
    """An ``h11.Request`` built without h11's validation (llhttp validated it, or we will when
    it is serialised). ``headers`` is a plain list of (lower-case name, value)."""

    __slots__ = ()

    def __init__(
        self, method: bytes, target: bytes, headers: Headers, http_version: bytes = b"1.1"
    ) -> None:
        object.__setattr__(self, "method", method)
        object.__setattr__(self, "target", target)
        object.__setattr__(self, "headers", headers)
        object.__setattr__(self, "http_version", http_version)


class ResponseHead(h11.Response):
    __slots__ = ()

    def __init__(
        self, status_code: int, headers: Headers, reason: bytes = b"", http_version: bytes = b"1.1"
    ) -> None:
        object.__setattr__(self, "status_code", status_code)
        object.__setattr__(self, "headers", headers)
        object.__setattr__(self, "reason", reason)
        object.__setattr__(self, "http_version", http_version)


class InformationalHead(h11.InformationalResponse):
    __slots__ = ()

    def __init__(self, status_code: int, headers: Headers, reason: bytes = b"") -> None:
        object.__setattr__(self, "status_code", status_code)
        object.__setattr__(self, "headers", headers)
        object.__setattr__(self, "reason", reason)
        object.__setattr__(self, "http_version", b"1.1")


def as_h11(event):
    """``event`` as h11's own type, for an h11 engine (it dispatches on exact types)."""
    kind = type(event)
    if kind is RequestHead:
        return h11.Request(
            method=event.method, target=event.target, headers=event.headers,
            http_version=event.http_version,
        )  # fmt: skip
    if kind is ResponseHead:
        return h11.Response(
            status_code=event.status_code, headers=event.headers, reason=event.reason,
            http_version=event.http_version,
        )  # fmt: skip
    if kind is InformationalHead:
        return h11.InformationalResponse(
            status_code=event.status_code, headers=event.headers, reason=event.reason
        )
    return event


class _Refusal:
    """A parse error, queued behind the events that came before it."""

    __slots__ = ("error",)

    def __init__(self, error: h11.RemoteProtocolError) -> None:
        self.error = error


def _refusal(message: str, status: int = 400) -> h11.RemoteProtocolError:
    return h11.RemoteProtocolError(message, error_status_hint=status)


class Http1:
    """One HTTP/1.1 connection's protocol state, either side; h11.Connection's interface."""

    def __init__(self, our_role, max_incomplete_event_size: int = 16 * 1024) -> None:
        self.our_role = our_role
        self.their_role = SERVER if our_role is CLIENT else CLIENT
        self.our_state = IDLE
        self.their_state = IDLE
        self.max_head = max_incomplete_event_size
        self.they_are_waiting_for_100_continue = False
        self._events: deque = deque()
        self._parser = (
            httptools.HttpRequestParser(self)
            if our_role is SERVER
            else httptools.HttpResponseParser(self)
        )
        self._eof = False
        self._broken = False  # the parser failed or was left mid-protocol: feed it nothing
        self._extra = False  # client side: bytes arrived beyond the response being read
        self._answered = False  # client side: a whole response was parsed; nothing may follow
        self._keep_alive = True
        self._request_method: bytes | None = None  # the request under way, either side
        self._sent_framing: object = None  # our body: int bytes left, "chunked", "close", None
        self._peer_is_10 = False
        # Parse-level state (ahead of what next_event has handed out, when pipelined).
        self._in_head = True
        self._head_fed = 0
        self._heads_done = 0
        self._url = b""
        self._reason = b""
        self._line = b""  # the start of a request line, until it is whole and checked
        self._line_open = False
        self._mid_message = False
        self._headers: Headers = []
        self._head_size = 0
        self._noted = _HeadFacts()
        self._until_eof = False  # response body framed by the connection closing
        self._skip_body = False  # response to HEAD: the head is the whole message
        self._informational = False

    # --- receiving ------------------------------------------------------------------------

    @property
    def trailing_data(self) -> tuple[bytes, bool]:
        """h11's name; here: a non-empty marker if anything arrived beyond the last message
        a client connection read (llhttp consumes what it is fed, so the bytes are gone)."""
        return (b"\x00" if self._extra else b"", self._eof)

    def receive_data(self, data: bytes) -> None:
        if not data:
            self._receive_eof()
            return
        if self._broken or self._answered:
            self._extra = True  # after a response (or a failure) nothing may follow
            return
        heads_before, in_head_before = self._heads_done, self._in_head
        if self.our_role is SERVER and (self._line_open or not self._mid_message):
            # A request starting with this read: its request line, once whole, must be exactly
            # "method SP target SP version CRLF". (A request pipelined behind another within
            # one read is left to llhttp, which re-serialises the same either way.)
            self._line = (self._line + data[: self.max_head]) if self._line_open else data
            self._line_open = b"\n" not in self._line
            if not self._line_open and not _REQUEST_LINE.match(self._line.lstrip(b"\r\n")):
                self._broken = True
                self._fail(_refusal("malformed request line"))
                return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._broken = True
            self._keep_alive = False
            if self.our_role is CLIENT:
                self._fail(_refusal("upstream switched protocols"))
        except httptools.HttpParserCallbackError as exc:
            self._broken = True
            cause = exc.__context__
            if not isinstance(cause, _SkipRest):
                self._fail(
                    cause if isinstance(cause, h11.RemoteProtocolError) else _refusal(str(exc))
                )
        except httptools.HttpParserError as exc:
            self._broken = True
            if self._answered:
                self._extra = True  # garbage after a complete response: not ours to parse
            else:
                self._fail(_parser_refusal(str(exc)))
        if self._in_head and not self._broken:
            # Bytes of a head still arriving: llhttp buffers a partial header itself, so the
            # limit is enforced on what was fed since the head began (a head that started
            # inside this read is counted from the next one: at most one read more).
            if in_head_before and self._heads_done == heads_before:
                self._head_fed += len(data)
            else:
                self._head_fed = 0
            if self._head_fed > self.max_head:
                self._broken = True
                self._fail(_refusal(f"head exceeds the {self.max_head}-byte limit", 431))

    def _receive_eof(self) -> None:
        """EOF ends a body framed by it; anywhere else it is ``ConnectionClosed``, which the
        relay treats as a lost connection when it arrives mid-message."""
        if self._eof:
            return
        self._eof = True
        if self._until_eof:
            self._until_eof = False
            self._events.append(_END)
        self._events.append(_CLOSED)

    def _fail(self, error: h11.RemoteProtocolError) -> None:
        self._events.append(_Refusal(error))

    # httptools callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._answered:
            self._extra = True  # a second response to one request: stop here
            raise _SkipRest
        self._in_head = True
        self._mid_message = True
        self._url = b""
        self._reason = b""
        self._headers = []
        self._head_size = 0
        self._noted = _HeadFacts()

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)

    def on_status(self, status: bytes) -> None:
        self._reason += status
        self._head_size += len(status)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:
            return  # a trailer field: dropped, as h11's relay drops them
        name = name.lower()
        if value and value[-1] in (32, 9):
            value = value.rstrip(b" \t")  # trailing whitespace is not part of a value
        if name in _NOTED:  # the few fields the head's checks need, noted as they arrive
            noted = self._noted
            if name == b"transfer-encoding":
                value = value.lower()  # as h11 does: framing compares it, forwards "chunked"
                noted.codings.append(value)
            elif name == b"host":
                noted.hosts += 1
            elif name == b"content-length":
                noted.length = True
            elif value.lower() == b"100-continue":  # expect
                noted.expect_continue = True
        self._headers.append((name, value))
        self._head_size += len(name) + len(value) + 4

    def on_headers_complete(self) -> None:
        self._heads_done += 1
        self._in_head = False
        self._line = b""
        self._head_fed = 0
        parser = self._parser
        version = parser.get_http_version().encode()
        headers = self._headers
        if self._head_size > self.max_head:
            size, limit = self._head_size, self.max_head
            raise _refusal(f"head of {size} bytes exceeds the {limit}-byte limit", 431)
        if version not in (b"1.1", b"1.0"):
            raise _refusal(f"HTTP/{version.decode()} is not supported", 505)
        noted = self._noted
        _check_framing(noted.codings, version)
        keep_alive = parser.should_keep_alive() and version == b"1.1"
        if self.our_role is SERVER:
            hosts = noted.hosts
            if hosts > 1 or (hosts == 0 and version == b"1.1"):
                raise _refusal("an HTTP/1.1 request needs exactly one Host header")
            method = parser.get_method()
            head = RequestHead(method, self._url, headers, version)
            self._events.append((head, keep_alive, noted.expect_continue))
            return
        status = parser.get_status_code()
        if status < 200:
            if status == 101:
                raise _refusal("upstream switched protocols")
            self._informational = True
            self._events.append(InformationalHead(status, headers, self._reason))
            return
        self._informational = False
        self._skip_body = self._request_method == b"HEAD"
        self._until_eof = (
            not self._skip_body
            and status not in _BODYLESS_STATUS
            and not noted.length
            and not noted.codings
        )
        if self._until_eof:
            keep_alive = False
        head = ResponseHead(status, headers, self._reason, version)
        self._events.append((head, keep_alive, False))
        if self._skip_body:
            # llhttp cannot be told a response answers HEAD: end the message here. The
            # connection is never reused after HEAD (see HttpConnection.reusable), so whatever
            # follows is only ever "extra".
            self._events.append(_END)
            self._answered = True
            self._in_head = True
            raise _SkipRest

    def on_body(self, body: bytes) -> None:
        self._events.append(h11.Data(data=body))

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            self._in_head = True
            return
        self._until_eof = False
        self._mid_message = False
        self._events.append(_END)
        self._in_head = True
        self._url = b""
        self._headers = []
        if self.our_role is CLIENT:
            self._answered = True

    # --- events ---------------------------------------------------------------------------

    def next_event(self):
        if self.their_state is ERROR:
            raise h11.RemoteProtocolError("cannot read from a connection in error")
        if not self._events:
            return _CLOSED if self.their_state is CLOSED else NEED_DATA
        event = self._events[0]
        if type(event) is tuple:
            if self.their_state is not IDLE and self.their_state is not SEND_RESPONSE:
                return PAUSED  # the next pipelined message waits for start_next_cycle
            self._events.popleft()
            head, keep_alive, expect_continue = event
            self._receive_head(head, keep_alive, expect_continue)
            return head
        self._events.popleft()
        if type(event) is _Refusal:
            self.their_state = ERROR
            raise event.error
        if event is _END:
            self.their_state = DONE
            self._settle()
        elif event is _CLOSED:
            self.their_state = CLOSED
            self._keep_alive = False
        elif type(event) is h11.Data:
            self.they_are_waiting_for_100_continue = False
        return event

    def take_body(self) -> bytes | None:
        """The rest of the body being received, if all of it and its end have arrived: those
        events are consumed as ``next_event`` would have handed them out one by one. ``None``
        (nothing consumed) if the end has not arrived, or anything else came first."""
        events = self._events
        if self.their_state is not SEND_BODY or not events:
            return None
        parts = []
        for event in events:
            if event is _END:
                break
            if type(event) is not h11.Data:
                return None
            parts.append(event.data)
        else:
            return None
        for _ in range(len(parts) + 1):
            events.popleft()
        self.they_are_waiting_for_100_continue = False
        self.their_state = DONE
        self._settle()
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _receive_head(self, head, keep_alive: bool, expect_continue: bool) -> None:
        if not keep_alive:
            self._keep_alive = False
        self.their_state = SEND_BODY
        if self.our_role is SERVER:
            self._request_method = head.method
            self._peer_is_10 = head.http_version == b"1.0"
            self.our_state = SEND_RESPONSE
            self.they_are_waiting_for_100_continue = expect_continue and head.http_version == b"1.1"

    def _settle(self) -> None:
        """Both sides done and either asked to close: both MUST_CLOSE, as h11 does."""
        if not self._keep_alive:
            if self.our_state is DONE:
                self.our_state = MUST_CLOSE
            if self.their_state is DONE:
                self.their_state = MUST_CLOSE

    def start_next_cycle(self) -> None:
        if self.our_state is not DONE or self.their_state is not DONE:
            raise h11.LocalProtocolError("not in a reusable state")
        self.our_state = IDLE
        self.their_state = IDLE
        self._request_method = None
        self._sent_framing = None
        self.they_are_waiting_for_100_continue = False

    # --- sending --------------------------------------------------------------------------

    def send(self, event) -> bytes:
        kind = type(event)
        if kind is h11.Data:
            return self._send_data(event.data)
        if event is _END:
            return self._send_end()
        if kind is RequestHead:
            return self._send_request(event)
        if kind is ResponseHead:
            return self._send_response(event)
        return self._send_other(event)

    def send_message(self, head, body: bytes) -> bytes:
        """``send(head) + send(Data(body)) + send(END)`` without building the events."""
        out = self.send(head)
        if body:
            out += self._send_data(body)
        return out + self._send_end()

    def _send_other(self, event) -> bytes:
        """:meth:`send` for anything but the four events of every exchange (h11's own types)."""
        if isinstance(event, h11.Data):
            return self._send_data(event.data)
        if event is _END or isinstance(event, h11.EndOfMessage):
            return self._send_end()
        if isinstance(event, h11.Request):
            return self._send_request(event)
        if isinstance(event, h11.InformationalResponse):
            if self.our_role is not SERVER or self.our_state is not SEND_RESPONSE:
                raise h11.LocalProtocolError("no request to answer")
            self.they_are_waiting_for_100_continue = False
            return _head(b"HTTP/1.1 %d %s" % (event.status_code, event.reason), event.headers)
        if isinstance(event, h11.Response):
            return self._send_response(event)
        if isinstance(event, h11.ConnectionClosed):
            self.our_state = CLOSED
            return b""
        raise h11.LocalProtocolError(f"cannot send {type(event).__name__}")

    def _send_request(self, event) -> bytes:
        if self.our_role is not CLIENT or self.our_state is not IDLE:
            raise h11.LocalProtocolError("a request is already under way")
        if _UNSAFE_TARGET.search(event.target) or not _TOKEN.fullmatch(event.method):
            raise h11.LocalProtocolError("unsafe method or target")
        headers = list(event.headers)
        self._sent_framing = _framing(headers) or 0
        self._request_method = event.method
        self._answered = False
        self.our_state = SEND_BODY
        self.their_state = SEND_RESPONSE
        return _head(b"%s %s HTTP/1.1" % (event.method, event.target), headers)

    def _send_response(self, event) -> bytes:
        if self.our_role is not SERVER or self.our_state not in (IDLE, SEND_RESPONSE):
            raise h11.LocalProtocolError("no request to answer")
        headers = list(event.headers)
        status = event.status_code
        if self.their_state is not DONE and self.their_state is not SEND_BODY:
            self._keep_alive = False  # answering a request we could not read: then close
        framing = None
        has_connection = False
        for name, value in headers:  # one walk: Connection, and the framing we send by
            if name == b"connection":
                has_connection = True
                if b"close" in value.lower():
                    self._keep_alive = False
            elif name == b"transfer-encoding":
                framing = "chunked"
            elif name == b"content-length" and framing is None:
                try:
                    framing = int(value)
                except ValueError:
                    raise h11.LocalProtocolError("bad Content-Length") from None
        if self._request_method == b"HEAD" or status in _BODYLESS_STATUS:
            framing = 0
        elif framing is None:
            if self._peer_is_10:
                framing = "close"
                self._keep_alive = False
            else:
                framing = "chunked"
                headers.append((b"transfer-encoding", b"chunked"))
        if self._peer_is_10:
            self._keep_alive = False
        if not self._keep_alive and not has_connection:
            headers.append((b"connection", b"close"))
        self._sent_framing = framing
        self.they_are_waiting_for_100_continue = False
        self.our_state = SEND_BODY
        reason = event.reason or b""
        return _head(b"HTTP/1.1 %d %s" % (status, reason), headers)

    def _send_data(self, data: bytes) -> bytes:
        if self.our_state is not SEND_BODY:
            raise h11.LocalProtocolError("no body is being sent")
        framing = self._sent_framing
        if framing == "chunked":
            return b"%x\r\n%s\r\n" % (len(data), data) if data else b""
        if framing == "close":
            return bytes(data)
        if len(data) > framing:
            raise h11.LocalProtocolError("body longer than its Content-Length")
        self._sent_framing = framing - len(data)
        return bytes(data)

    def _send_end(self) -> bytes:
        if self.our_state is not SEND_BODY:
            raise h11.LocalProtocolError("no body is being sent")
        framing = self._sent_framing
        out = b""
        if framing == "chunked":
            out = b"0\r\n\r\n"
        elif framing == "close":
            self._keep_alive = False
        elif framing:
            raise h11.LocalProtocolError("body shorter than its Content-Length")
        self.our_state = DONE
        self._settle()
        return out


class _HeadFacts:
    """What :meth:`Http1.on_header` notes of a head as its fields arrive, so that the checks
    when it is complete need not walk the fields again."""

    __slots__ = ("codings", "expect_continue", "hosts", "length")

    def __init__(self) -> None:
        self.codings: list[bytes] = []  # Transfer-Encoding values
        self.hosts = 0
        self.length = False  # a Content-Length was sent
        self.expect_continue = False


_NOTED = frozenset({b"transfer-encoding", b"host", b"content-length", b"expect"})


class _SkipRest(Exception):
    """Raised from a callback to stop llhttp after the head of a response to HEAD."""


def _framing(headers: Headers) -> int | str | None:
    """How a body we send is framed: bytes left (Content-Length), "chunked", or None."""
    for name, _ in headers:
        if name == b"transfer-encoding":
            return "chunked"
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                raise h11.LocalProtocolError("bad Content-Length") from None
    return None


def _check_framing(codings: list[bytes], version: bytes) -> None:
    """Refuse a ``Transfer-Encoding`` (its values, as received) we will not frame by."""
    if not codings:
        return
    if version == b"1.0":
        raise _refusal("Transfer-Encoding is not defined for HTTP/1.0")
    if len(codings) > 1 or codings[0].strip().lower() != b"chunked":
        raise _refusal("Only Transfer-Encoding: chunked is supported", 501)


def _parser_refusal(message: str) -> h11.RemoteProtocolError:
    if "Content-Length" in message and "Transfer-Encoding" in message:
        return _refusal("Content-Length together with Transfer-Encoding is ambiguous")
    if "Transfer-Encoding" in message:
        return _refusal(f"Only Transfer-Encoding: chunked is supported ({message})", 501)
    if "whitespace after header value" in message:
        return _refusal(f"obsolete line folding or stray whitespace in a header ({message})")
    return _refusal(message)


def _head(start: bytes, headers) -> bytes:
    """The serialised head. Names and values are checked together, two regex passes over the
    joined fields rather than two per field: every name a token (joined by ``:``, which is not
    a token character, so counting the joints catches one inside a name), no CR, LF or NUL in
    any value."""
    if not headers:
        return start + b"\r\n\r\n"
    names = b":".join(map(_NAME, headers))
    values = b"".join(map(_VALUE, headers))
    if (
        not _TOKEN_LIST.fullmatch(names)
        or names.count(b":") != len(headers) - 1  # a ":" inside a name would pass as a joint
        or _UNSAFE_VALUE.search(values)
    ):
        for name, value in headers:
            if not _TOKEN.fullmatch(name) or _UNSAFE_VALUE.search(value):
                raise h11.LocalProtocolError(f"unsafe header {name!r}")
        raise h11.LocalProtocolError("unsafe header")  # pragma: no cover - found above
    return b"\r\n".join([start, *map(_FIELD.join, headers), b"\r\n"])
