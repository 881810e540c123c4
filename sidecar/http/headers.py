"""Header hygiene for both hops, kept pure so it is tested with plain lists.

On the way in, the app must be able to trust every ``dapr-caller-*`` header it sees, so any copy a
client sent — in any letter case — is removed before the sidecar sets its own. Hop-by-hop headers
(RFC 9110 §7.6.1) and those a ``Connection`` header nominates are never forwarded; h11 re-frames
the body itself. Names arrive lower-cased from h11, which makes the case-insensitive part exact.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from operator import itemgetter

Headers = list[tuple[bytes, bytes]]

# RFC 9110 §7.6.1 plus the legacy names Dapr also drops (pkg/messaging/v1/util.go).
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"upgrade",
        b"te",
        b"trailer",
        b"proxy-authorization",
        b"proxy-authenticate",
        b"http2-settings",
        b"expect",  # we stream bodies ourselves; 100-continue is answered locally
    }
)

CALLER_HEADERS = frozenset(
    {
        b"dapr-caller-app-id",
        b"dapr-caller-namespace",
        b"dapr-callee-app-id",
        b"x-forwarded-for",
        b"x-forwarded-host",
        b"x-forwarded-proto",
        b"x-forwarded-port",
        b"x-forwarded-prefix",
        b"x-real-ip",
        b"forwarded",
        # The ACL judged the request line's method; an app honouring these would run another.
        b"x-http-method-override",
        b"x-http-method",
        b"x-method-override",
    }
)

# Never leaves the host it was meant for: the token guarding the outbound port, the app id used
# to address the target, the Host of the previous hop.
LOCAL_ONLY = frozenset({b"dapr-api-token", b"dapr-app-id", b"host"})


def connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    tokens: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return frozenset(tokens)


def forwardable(headers: Iterable[tuple[bytes, bytes]], drop: frozenset[bytes]) -> Headers:
    """Headers minus hop-by-hop ones, ``Connection``-nominated ones, framing and ``drop``.

    ``Content-Length`` is left out too: the framing of the next hop is decided once, by
    :func:`framing_for`, so a message never leaves with two lengths or a length beside chunked.
    """
    if not isinstance(headers, list):
        headers = list(headers)
    skip = _skipped(drop)
    names = list(map(_NAME, headers))
    if b"_" not in b"".join(names):
        present = skip.intersection(names)
        if not present:
            return headers.copy()  # nothing to drop (no Connection header, so none nominated)
        if present == _LENGTH_ONLY:
            # What nearly every message with a body looks like: only its length to drop.
            return [pair for pair in headers if pair[0] != b"content-length"]
    nominated = connection_tokens(headers)
    kept = []
    for name, value in headers:
        # CGI-style servers fold '_' and '-' into one variable: judge both spellings alike.
        canon = name.replace(b"_", b"-") if b"_" in name else name
        if canon in skip or (nominated and canon in nominated):
            continue
        kept.append((name, value))
    return kept


_SKIPPED: dict[frozenset[bytes], frozenset[bytes]] = {}
_LENGTH_ONLY = {b"content-length"}
_NAME = itemgetter(0)


def _skipped(drop: frozenset[bytes]) -> frozenset[bytes]:
    """Every name :func:`forwardable` leaves out besides nominated ones, one set per ``drop``
    (a few per policy), so each header costs one lookup."""
    found = _SKIPPED.get(drop)
    if found is None:
        if len(_SKIPPED) >= 64:
            _SKIPPED.clear()
        found = _SKIPPED[drop] = HOP_BY_HOP | drop | {b"content-length"}
    return found


def get_header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The single value of ``name``; several values are joined as RFC 9110 §5.3 allows."""
    found = None
    for n, v in headers:
        if n == name:
            found = v if found is None else found + b", " + v
    return found


def is_chunked(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    value = get_header(headers, b"transfer-encoding")
    return value is not None and value.lower().rsplit(b",", 1)[-1].strip() == b"chunked"


def has_body_framing(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    return any(n in (b"content-length", b"transfer-encoding") for n, _ in headers)


def framing_for(incoming: Iterable[tuple[bytes, bytes]]) -> Headers:
    """The framing header to send onward for a body that arrived with ``incoming`` headers.

    Chunked wins over a ``Content-Length`` sent beside it (RFC 9112 §6.1: h11 framed the body
    by the chunks, and a proxy must drop the length); otherwise the length is kept.
    """
    if not isinstance(incoming, list):
        incoming = list(incoming)
    if is_chunked(incoming):
        return [(b"transfer-encoding", b"chunked")]
    length = get_header(incoming, b"content-length")
    if length is not None:
        return [(b"content-length", length.split(b",")[0].strip())]
    return []


class FieldView(Mapping[str, str]):
    """A request's header fields as received — the one header type from the edge to the app.

    ``pairs`` are the raw (lower-case name, value) byte pairs, which is what is forwarded; the
    read-only ``str`` mapping over them (repeated fields joined with ``", "``, RFC 9110 §5.3) is
    what the policy layers read. The mapping is built on first lookup only.
    """

    __slots__ = ("_map", "pairs")

    def __init__(self, pairs: Iterable[tuple[bytes, bytes]]) -> None:
        self.pairs = pairs if isinstance(pairs, list | tuple) else list(pairs)
        self._map: dict[str, str] | None = None

    def _mapping(self) -> dict[str, str]:
        if self._map is None:
            out: dict[str, str] = {}
            for name, value in self.pairs:
                key = name.decode("latin-1")
                text = value.decode("latin-1")
                out[key] = f"{out[key]}, {text}" if key in out else text
            self._map = out
        return self._map

    def __getitem__(self, name: str) -> str:
        return self._mapping()[name]

    # Mapping's own get/__contains__ go through __getitem__ and a caught KeyError per miss.
    def get(self, name: str, default=None):
        return self._mapping().get(name, default)

    def __contains__(self, name: object) -> bool:
        return name in self._mapping()

    def __iter__(self):
        return iter(self._mapping())

    def __len__(self) -> int:
        return len(self._mapping())

    def __repr__(self) -> str:
        return f"FieldView({self._mapping()!r})"


# Methods whose content has no defined meaning (RFC 9110 §9.3): many apps never read such a body,
# so a body forwarded with one would be parsed by the app as the next request on the connection —
# a request no policy judged. Refused at both doors instead.
BODILESS_METHODS = frozenset({b"GET", b"HEAD", b"DELETE", b"OPTIONS", b"TRACE"})


def unexpected_body(method: bytes, headers) -> str | None:
    """Why a request of ``method`` with these framing headers is refused (None: no body)."""
    if method not in BODILESS_METHODS:
        return None
    for name, value in headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip(b" 0")):
            return (
                f"a {method.decode()} request must not carry a body: an app that does not read it "
                "would take it for another request that no policy judged"
            )
    return None
