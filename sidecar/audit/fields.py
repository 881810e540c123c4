"""The outbound sidecar's record fields, from what its proxy already has at the end of a request.

Kept here rather than in the proxy so the proxy's change stays one call: the outbound side
decides little itself (API token, target resolution, the peer's identity), and every refusal it
makes is a ``SidecarError`` or a ``Decision`` whose code is the record's reason.
"""

from __future__ import annotations

from typing import Any

from identity import AppIdentity

HEALTH_PATHS = (b"/v1.0/healthz", b"/v1.0/healthz/outbound")
MAX_PATH = 2048


def outbound_fields(
    me: AppIdentity, request, target_label: str, refused: Any, result
) -> dict[str, Any] | None:
    """``refused`` is the error or denial the sidecar answered with (None: the request was sent).
    Returns None for a health probe the sidecar answered itself."""
    if refused is None and request.method == b"GET" and request.target in HEALTH_PATHS:
        return None
    callee = None
    if target_label != "-":
        namespace, _, app_id = target_label.partition("/")
        callee = f"spiffe://{me.trust_domain}/ns/{namespace}/{app_id}"
    # The query string may carry secrets; the path is what an operator filters by.
    path = request.target.split(b"?", 1)[0][:MAX_PATH].decode("latin-1")
    fields: dict[str, Any] = {
        "direction": "outbound",
        "caller": str(me),
        "callee": callee,
        "verb": request.method.decode("ascii", "replace"),
        "path": path,
        "status": result.status,
        "response_bytes": result.bytes_down,
        "layer": "outbound",
        "cut": result.cut,
    }
    if refused is None:
        fields.update(decision="allow", reason="sent")
    else:
        fields.update(
            decision="deny",
            reason=getattr(refused, "reason", None) or getattr(refused, "code", "ERR_REFUSED"),
            message=getattr(refused, "message", None) or str(refused),
            layer=getattr(refused, "layer", "outbound"),
        )
    return fields
