"""The one place that decides which headers leave the sidecar, on either side.

Inbound, the app must be able to trust what it reads: every ``dapr-caller-*``/forwarding header,
``x-trustmesh-*`` (the bearer layer's), a caller's ``dapr-api-token`` and the policy's stripped
headers (``Authorization`` when the sidecar checked the token) are removed in any letter case and
in ``_`` spelling, then the sidecar sets its own: who called, who is called, where from, what the
token proved, and ``APP_API_TOKEN`` as ``dapr-api-token`` so the app can refuse anything that did
not come through its sidecar (Dapr does the same). Framing is decided here too: the length of a
body the judge read, or the framing the caller's body arrived with.

Outbound, the app's local headers (its API token, ``dapr-app-id``, ``Host``) stay on the host.
"""

from __future__ import annotations

from collections.abc import Iterable
from operator import itemgetter

from identity import AppIdentity

from ..bearer.invoked import INVOKED_AS_HEADERS, invoked_as_headers
from ..http.headers import CALLER_HEADERS, LOCAL_ONLY, forwardable, framing_for

Headers = list[tuple[bytes, bytes]]

APP_TOKEN_HEADER = b"dapr-api-token"
_SIDECAR_PREFIX = b"x-trustmesh-"  # only the sidecar speaks for a verified token
_NEVER_TO_APP = CALLER_HEADERS | LOCAL_ONLY
_NEVER_TO_PEER = LOCAL_ONLY | INVOKED_AS_HEADERS


def to_app(
    incoming: Iterable[tuple[bytes, bytes]],
    *,
    caller: AppIdentity,
    me: AppIdentity,
    app_address: str,
    peer_host: str,
    drop: frozenset[bytes] = frozenset(),
    token_headers: Iterable[tuple[bytes, bytes]] = (),
    app_api_token: bytes | None = None,
    body: bytes | None = None,
) -> Headers:
    """The headers the app receives for a request the judge allowed."""
    incoming = incoming if isinstance(incoming, list) else list(incoming)
    headers = forwardable(incoming, _never_to_app(drop))
    if b"trustmesh" in b"".join(map(_NAME, headers)):  # rare: a caller speaking for us
        headers = [(n, v) for n, v in headers if not _speaks_for_sidecar(n)]
    headers += _identity_headers(caller, me, app_address, peer_host)
    headers += token_headers
    if app_api_token is not None:
        headers.append((APP_TOKEN_HEADER, app_api_token))
    if body is not None:
        headers.append((b"content-length", str(len(body)).encode()))
    else:
        headers += framing_for(incoming)
    return headers


def _speaks_for_sidecar(name: bytes) -> bool:
    return name.replace(b"_", b"-").startswith(_SIDECAR_PREFIX)


_NAME = itemgetter(0)
_NEVER_TO_APP_WITH: dict[frozenset[bytes], frozenset[bytes]] = {}
_IDENTITY: dict[tuple, tuple[tuple[bytes, bytes], ...]] = {}


def _never_to_app(drop: frozenset[bytes]) -> frozenset[bytes]:
    """What never reaches the app plus a policy's ``drop``, built once per distinct ``drop``."""
    if not drop:
        return _NEVER_TO_APP
    found = _NEVER_TO_APP_WITH.get(drop)
    if found is None:
        if len(_NEVER_TO_APP_WITH) >= 64:
            _NEVER_TO_APP_WITH.clear()
        found = _NEVER_TO_APP_WITH[drop] = _NEVER_TO_APP | drop
    return found


def _identity_headers(caller: AppIdentity, me: AppIdentity, app_address: str, peer_host: str):
    """Who called, from where, and who is called: the same few pairs for every request of a
    caller, so encoded once per (caller, callee, address, peer host)."""
    key = (caller, me, app_address, peer_host)
    found = _IDENTITY.get(key)
    if found is None:
        if len(_IDENTITY) >= 1024:
            _IDENTITY.clear()
        found = _IDENTITY[key] = (
            (b"host", app_address.encode()),
            (b"dapr-caller-app-id", caller.app_id.encode()),
            (b"dapr-caller-namespace", caller.namespace.encode()),
            (b"dapr-callee-app-id", me.app_id.encode()),
            (b"x-forwarded-for", peer_host.encode()),
            (b"forwarded", f'for="{peer_host}";proto=https'.encode()),
        )
    return found


def to_peer(incoming: Iterable[tuple[bytes, bytes]], *, authority: str, target: bytes) -> Headers:
    """The headers the target's sidecar receives for an outbound call: the app's own, less its
    local ones and any ``X-Forwarded-*`` it sent, plus how the app addressed the target (RFC 9728
    metadata is derived from that on the other side)."""
    incoming = list(incoming)
    headers = forwardable(incoming, _NEVER_TO_PEER)
    headers += invoked_as_headers(target, incoming)
    headers.append((b"host", authority.encode()))
    headers += framing_for(incoming)
    return headers
