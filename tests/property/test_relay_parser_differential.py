"""The hot-path parser (llhttp via :mod:`sidecar.http.wire`) against h11, the oracle (#11).

Heads are generated from the HTTP/1.1 grammar and then bent the ways smuggling attempts bend
them: extra or missing spaces, tabs, bare LF, folded lines, control and high bytes, odd versions,
duplicated or conflicting framing headers. Two properties, for requests and responses:

* every head h11 refuses, ours refuses too;
* every head both accept parses to the same method/target/status, version and header list.
"""

from __future__ import annotations

import h11
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sidecar.http.wire import CLIENT, SERVER, Http1

TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
NASTY = [" ", "  ", "\t", "\r", "\n", "\x00", "\x0b", "\x7f", "\x80", "\xff", ":", ",", ";", '"']

tokens = st.text(TOKEN_CHARS, min_size=1, max_size=8)
nasty_text = st.lists(st.one_of(tokens, st.sampled_from(NASTY)), max_size=5).map("".join)
# Mostly well-formed parts, so both parsers accept often enough to compare what they parse.
valid_methods = st.sampled_from(["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"])
methods = st.one_of(valid_methods, valid_methods, valid_methods, tokens, nasty_text)
good_targets = st.text(TOKEN_CHARS + "/?=&%", min_size=1, max_size=12).map(lambda t: "/" + t)
targets = st.one_of(
    st.sampled_from(["/", "/a?b=c", "/mcp", "*", "http://x/y", "/%0d%0a", "/a b"]),
    good_targets,
    good_targets,
    nasty_text.map(lambda t: "/" + t),
)
odd_versions = ["HTTP/2.0", "HTTP/1.2", "http/1.1", "HTTP/1", "HTTP/11"]
versions = st.sampled_from(["HTTP/1.1"] * 6 + ["HTTP/1.0"] * 2 + odd_versions)
separators = st.sampled_from([" "] * 12 + ["  ", "\t"])
framing = st.sampled_from(
    [
        [],
        [("content-length", "0")],
        [("Content-Length", "0"), ("content-length", "0")],
        [("content-length", "0, 0")],
        [("content-length", "+0")],
        [("transfer-encoding", "chunked")],
        [("Transfer-Encoding", "Chunked")],
        [("transfer-encoding", "chunked"), ("content-length", "0")],
        [("transfer-encoding", "gzip, chunked")],
        [("transfer-encoding", "chunked, chunked")],
        [("transfer-encoding", "identity")],
    ]
)
named = st.sampled_from(["host", "x-a", "expect", "connection", "Accept", "Content-Type"])
header_names = st.one_of(tokens, named, st.one_of(tokens, named, nasty_text))
good_values = st.text(TOKEN_CHARS + " /=;,\t\x80\xff", max_size=12)
header_values = st.one_of(good_values, st.one_of(good_values, nasty_text))
headers = st.lists(st.tuples(header_names, header_values), max_size=5)
colons = st.sampled_from([": "] * 8 + [":", " : ", ":\t", ":  "])
line_ends = st.sampled_from(["\r\n"] * 10 + ["\n"])
folds = st.sampled_from([""] * 12 + ["\r\n continued", "\r\n\tcontinued"])


def _bent(draw, good, bad):
    """Mostly ``good``; one draw in four from ``bad`` (so both parsers often accept)."""
    return draw(bad) if draw(st.integers(0, 3)) == 0 else draw(good)


@st.composite
def _fields(draw) -> list[str]:
    fields = draw(st.lists(st.tuples(header_names, header_values), max_size=3)) + draw(framing)
    return [
        f"{n}{_bent(draw, st.just(': '), colons)}{v}{_bent(draw, st.just(''), folds)}"
        for n, v in draw(st.permutations(fields))
    ]


@st.composite
def request_heads(draw) -> bytes:
    end = _bent(draw, st.just("\r\n"), line_ends)
    sep = _bent(draw, st.just(" "), separators)
    method = _bent(draw, valid_methods, methods)
    target = _bent(draw, good_targets, targets)
    version = _bent(draw, st.sampled_from(["HTTP/1.1", "HTTP/1.0"]), versions)
    host = ["host: example"] if draw(st.integers(0, 9)) else []
    lines = [f"{method}{sep}{target}{sep}{version}", *host, *draw(_fields())]
    return (end.join(lines) + end + end).encode("latin-1")


@st.composite
def response_heads(draw) -> bytes:
    end = _bent(draw, st.just("\r\n"), line_ends)
    good, odd = st.sampled_from(["200", "204", "404"]), st.sampled_from(["99", "1000", "20"])
    status = _bent(draw, good, odd)
    reason = draw(st.sampled_from(["OK", "", "Not Found", "a\tb"]))
    version = _bent(draw, st.sampled_from(["HTTP/1.1", "HTTP/1.0"]), versions)
    lines = [f"{version}{_bent(draw, st.just(' '), separators)}{status} {reason}", *draw(_fields())]
    return (end.join(lines) + end + end).encode("latin-1")


def parse(engine, role, raw: bytes):
    """The head ``engine`` makes of ``raw`` (after sending a GET, on the client side), or None
    if it refuses it."""
    conn = engine(role)
    if role is CLIENT:
        conn.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
        conn.send(h11.EndOfMessage())
    conn.receive_data(raw)
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError:
        return None
    return event if isinstance(event, h11.Request | h11.Response) else None


def h11_parse(role, raw: bytes):
    return parse(h11.Connection, role, raw)


def ours_parse(role, raw: bytes):
    return parse(Http1, role, raw)


def same_head(theirs, ours) -> None:
    if isinstance(theirs, h11.Request):
        assert (ours.method, ours.target) == (theirs.method, theirs.target)
    else:
        assert ours.status_code == theirs.status_code
    assert ours.http_version == theirs.http_version
    assert list(ours.headers) == list(theirs.headers)


SETTINGS = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(request_heads())
@example(b"GET  / HTTP/1.1\r\nhost: x\r\n\r\n")
@example(b"GET / HTTP/1.1\r\nhost: x\r\nx: a\r\n b\r\n\r\n")
@example(b"GET / HTTP/1.1\r\n\r\n")
def test_requests_h11_refuses_we_refuse_and_both_accepted_parse_alike(raw):
    theirs, ours = h11_parse(h11.SERVER, raw), ours_parse(SERVER, raw)
    if theirs is None:
        assert ours is None, (raw, ours)
    elif ours is not None:
        same_head(theirs, ours)


@SETTINGS
@given(response_heads())
def test_responses_h11_refuses_we_refuse_and_both_accepted_parse_alike(raw):
    theirs, ours = h11_parse(h11.CLIENT, raw), ours_parse(CLIENT, raw)
    if theirs is None:
        assert ours is None, (raw, ours)
    elif ours is not None:
        same_head(theirs, ours)


@given(request_heads())
@settings(max_examples=300, deadline=None)
def test_a_head_split_anywhere_parses_as_it_does_whole(raw):
    whole = ours_parse(SERVER, raw)
    for cut in (1, len(raw) // 2, len(raw) - 1):
        conn = Http1(SERVER)
        conn.receive_data(raw[:cut])
        conn.receive_data(raw[cut:])
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:
            event = None
        if not isinstance(event, h11.Request):
            event = None
        assert (event is None) == (whole is None), (raw, cut)
        if whole is not None:
            same_head(whole, event)
