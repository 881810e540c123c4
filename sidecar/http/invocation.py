"""What an app asks its sidecar for: the Dapr service-invocation forms, and the outbound guard.

Addressing (Dapr ``pkg/api/http/directmessaging.go``):

* ``/v1.0/invoke/<app-id>/method/<path…>`` — the target is the text before ``/method/``;
* any path with header ``dapr-app-id: <app-id>`` — the whole path is the method;
* ``<app-id>.<namespace>`` selects another namespace; more than one dot is an error.

The method is percent-decoded and normalised once (:mod:`.path`) before it leaves the host.

The outbound port is a door into the mesh that carries this app's identity, so it is guarded:
the ``Host`` must be a loopback name (a page on another origin that rebinds DNS to 127.0.0.1 still
sends its own host name), an ``Origin`` if present must be a loopback origin (browsers send it on
cross-origin requests), and with an API token configured every request must carry it in
``dapr-api-token`` — except exactly ``GET /v1.0/healthz`` and ``/v1.0/healthz/outbound``
(CVE-2023-37918 was a substring match on ``/healthz`` that let any URL through).
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import re
from dataclasses import dataclass

from ..errors import SidecarError
from .headers import get_header
from .path import RequestTarget, normalize_method, percent_decode, split_target

_INVOKE_RE = re.compile(r"/+v1\.0/+invoke/+([^/]+)/+method(?:/(.*))?", re.DOTALL)
HEALTH_PATHS = (b"/v1.0/healthz", b"/v1.0/healthz/outbound")


class InvocationError(SidecarError):
    code = "ERR_DIRECT_INVOKE"
    http_status = 400


class TargetNotFound(InvocationError):
    http_status = 404


class OutboundForbidden(SidecarError):
    code = "ERR_FORBIDDEN_ORIGIN"
    http_status = 403


class ApiTokenInvalid(SidecarError):
    code = "ERR_API_TOKEN"
    http_status = 401


@dataclass(frozen=True, slots=True)
class Invocation:
    app_id: str
    namespace: str
    target: RequestTarget


def parse_app_address(text: str, default_namespace: str) -> tuple[str, str]:
    """``app`` or ``app.namespace`` → (app_id, namespace)."""
    if text.startswith(("http://", "https://")):
        raise InvocationError(
            f"invalid app id {text!r}: calls to external HTTP endpoints are not supported"
        )
    parts = text.split(".")
    if len(parts) > 2:
        raise InvocationError(f"invalid app id {text!r}: at most one '.' (app-id.namespace)")
    if any(p == "" for p in parts):
        raise InvocationError(f"invalid app id {text!r}")
    return (parts[0], parts[1]) if len(parts) == 2 else (parts[0], default_namespace)


def parse_invocation(target: bytes, header_app: bytes | None, default_namespace: str) -> Invocation:
    """The invocation a request target names; ``header_app`` is its ``dapr-app-id`` value."""
    raw_path, query = split_target(target)
    path = percent_decode(raw_path)
    if header_app is not None:
        try:
            address = header_app.decode("ascii").strip()
        except UnicodeDecodeError:
            raise InvocationError("dapr-app-id header is not ASCII") from None
        method = path.lstrip("/")
    else:
        match = _INVOKE_RE.fullmatch(path)
        if match is None:
            raise TargetNotFound(
                "failed getting app id either from the URL path or the header dapr-app-id"
            )
        address, method = match.group(1), match.group(2) or ""
    app_id, namespace = parse_app_address(address, default_namespace)
    return Invocation(app_id, namespace, RequestTarget(normalize_method(method), query))


@functools.lru_cache(maxsize=256)  # the same few Host values every request: parse each once
def _is_loopback_host(host: str) -> bool:
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            return False
        name, rest = host[1:end], host[end + 1 :]
        if rest and not re.fullmatch(r":\d{1,5}", rest):
            return False
    else:
        name, _, port = host.partition(":")
        if port and not port.isdigit():
            return False
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_loopback_request(headers: list[tuple[bytes, bytes]], why: str) -> None:
    """Raise unless ``Host`` (and ``Origin``, if sent) name this host: a local-only port
    (outbound, admin) must not answer a page on another origin that rebinds DNS to us."""
    host = get_header(headers, b"host")
    if host is not None and not _is_loopback_host(host.decode("latin-1")):
        raise OutboundForbidden(f"Host {host.decode('latin-1')!r} is not a loopback address; {why}")
    origin = get_header(headers, b"origin")
    if origin is not None:
        text = origin.decode("latin-1")
        scheme, sep, rest = text.partition("://")
        if not sep or scheme not in ("http", "https") or not _is_loopback_host(rest):
            raise OutboundForbidden(f"Origin {text!r} is not a loopback origin; {why}")


def check_outbound_request(
    method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], api_token: bytes | None
) -> None:
    """Raise unless this request may use the outbound port (see the module docstring)."""
    check_loopback_request(headers, "the sidecar's outbound port only serves local apps")
    if api_token is None:
        return
    if method == b"GET" and target in HEALTH_PATHS:
        return
    sent = get_header(headers, b"dapr-api-token")
    if sent is None:
        raise ApiTokenInvalid(
            "missing api token: this sidecar requires the app's API token (DAPR_API_TOKEN) in "
            "the 'dapr-api-token' header"
        )
    if not hmac.compare_digest(sent, api_token):
        raise ApiTokenInvalid("invalid api token in the 'dapr-api-token' header")
