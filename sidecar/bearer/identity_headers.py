"""What the app learns about a bearer-authenticated caller, and what it must never receive.

MCP authorization (2025-06-18, "Token Passthrough") forbids forwarding the client's token: the
app would then hold a credential minted for the sidecar's audience and could replay it upstream
(confused deputy). So the sidecar strips ``Authorization`` and tells the app who called with its
own headers instead — after removing any copy of those a client sent, in any letter case, so
the app can trust every ``x-trustmesh-*`` header it sees. The whole ``x-trustmesh-`` prefix is
reserved to the sidecar for the same reason.
"""

from __future__ import annotations

from collections.abc import Iterable

from .validate import VerifiedToken

SUBJECT_HEADER = "x-trustmesh-subject"
SCOPES_HEADER = "x-trustmesh-scopes"
ISSUER_HEADER = "x-trustmesh-issuer"
RESERVED_PREFIX = "x-trustmesh-"

# Removed from every inbound request when the bearer layer is on, before the sidecar adds its own.
STRIPPED_REQUEST_HEADERS = frozenset(
    {"authorization", SUBJECT_HEADER, SCOPES_HEADER, ISSUER_HEADER}
)


def app_identity_headers(verified: VerifiedToken) -> list[tuple[str, str]]:
    """Headers telling the app what the token proved. Values are header-safe by construction:
    subject and scopes were checked to be visible ASCII when the token was validated."""
    return [
        (SUBJECT_HEADER, verified.subject),
        (SCOPES_HEADER, " ".join(sorted(verified.scopes))),
        (ISSUER_HEADER, verified.issuer),
    ]


def must_strip(name: str | bytes) -> bool:
    """True for a client-sent header the app must not see (any letter case)."""
    text = name.decode("latin-1") if isinstance(name, bytes) else name
    lowered = text.strip().lower()
    return lowered in STRIPPED_REQUEST_HEADERS or lowered.startswith(RESERVED_PREFIX)


def strip_client_credentials(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """``headers`` without the token and without any client-sent identity header."""
    return [(name, value) for name, value in headers if not must_strip(name)]
