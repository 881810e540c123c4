"""The URL a caller used to reach an app, carried from its sidecar to the app's, for RFC 9728.

The MCP authorization spec has a client take the MCP server's URL as the resource it asks a
token for, and find the server's protected-resource metadata from the 401 challenge. Behind
trustmesh the client's URL is its own sidecar's outbound port —
``http://127.0.0.1:3500/v1.0/invoke/mcp-api/method/mcp`` — which the app's sidecar, judging the
request at the far end of the mTLS hop, never sees. So the calling sidecar states it, in the
standard ``X-Forwarded-Proto/Host/Prefix`` headers:

* **outbound** (``invoked_as_headers``): the ``Host`` the app sent (the outbound port refuses any
  but loopback names), ``http``, and the raw path up to and including ``/method`` (empty for the
  ``dapr-app-id`` header form). Whatever copies the app itself sent are dropped
  (``INVOKED_AS_HEADERS``): the caller's sidecar is the one that knows.
* **inbound** (``invoked_base``): read back only when each is present once and well-formed; the
  app's sidecar strips all ``X-Forwarded-*`` before the app (``CALLER_HEADERS``).

A peer sidecar that lied would only mislead its own app about where the metadata is: the
derived URL names no key, no issuer and no audience.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from ._urls import check_url

INVOKED_AS_HEADERS = frozenset({b"x-forwarded-proto", b"x-forwarded-host", b"x-forwarded-prefix"})

_RAW_INVOKE_PREFIX = re.compile(rb"/+v1\.0/+invoke/+[^/?#]+/+method(?=/|$)")
_HOST = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
_PREFIX = re.compile(r"(?:/[A-Za-z0-9._~%!$&'()*+,;=:@-]+)*")


def invoked_as_headers(
    target: bytes, headers: Iterable[tuple[bytes, bytes]]
) -> list[tuple[bytes, bytes]]:
    """What the calling sidecar adds: how its app addressed the target (nothing if unclear)."""
    hosts = []
    app_header = False
    for name, value in headers:
        if name == b"host":
            hosts.append(value)
        elif name == b"dapr-app-id":
            app_header = True
    if len(hosts) != 1:
        return []
    if app_header:
        prefix = b""
    else:
        match = _RAW_INVOKE_PREFIX.match(target.split(b"?", 1)[0])
        if match is None:
            return []
        prefix = match.group(0)
    return [
        (b"x-forwarded-proto", b"http"),
        (b"x-forwarded-host", hosts[0]),
        (b"x-forwarded-prefix", prefix),
    ]


def invoked_base(headers: Mapping[str, str]) -> str | None:
    """``proto://host/prefix`` as the caller's sidecar stated it, or None if absent or odd."""
    proto = headers.get("x-forwarded-proto")
    host = headers.get("x-forwarded-host")
    prefix = headers.get("x-forwarded-prefix")
    if proto not in ("http", "https") or host is None or prefix is None:
        return None
    if not _HOST.fullmatch(host) or not _PREFIX.fullmatch(prefix):
        return None  # repeated headers arrive joined with ", " and fail here too
    base = f"{proto}://{host}{prefix}"
    try:
        return check_url(base)
    except ValueError:
        return None  # e.g. plain http to a host that is not loopback
