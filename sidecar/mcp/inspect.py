"""Classify one POSTed body against the tool policy: allow, deny, or allow-and-filter.

The order of checks is fixed and each step refuses rather than guesses:

1. the protocol version (argument, else ``MCP-Protocol-Version``, else 2025-03-26 per spec);
2. a caller holding no grant at all is refused every message (403, "session refused") before
   its body is even parsed;
3. strict JSON (``jsonstrict``): 400 / -32700 on failure;
4. JSON-RPC shape of each message: 400 / -32600 (-32602 for the params a gated method needs);
5. batches (top-level arrays): only for 2025-03-26; never empty; every element judged and the
   whole batch refused if any element is denied (notes §5.3, batch smuggling);
6. 2026-07-28 mirrored headers (``headers``): 400 / -32020;
7. the method table (``methods``) and the policy (``policy``): 403 with a JSON-RPC error naming
   the caller and the item (-32003), or the method (-32601).

List requests are allowed and reported in ``RequestVerdict.pending`` so the response path
filters the matching response. Everything is decided on the body; headers are only checked.

Where the spec is silent (documented decisions):

* ``tasks/*`` carry only a task id; only ``tools/call`` can be task-augmented on a server
  (2025-11-25 ``tasks.requests.tools.call``), and creating the task was gated by tool name. So
  ``tasks/*`` is allowed here only to callers holding some ``tools`` grant; the proxy
  (:func:`sidecar.proxy.mcp_route.judge_body`) then refuses a task that is not the caller's, or
  whose creating tool the caller is no longer granted (the sessions remember both).
* ``subscriptions/listen`` (2026-07-28) is allowed to any caller with a grant, but every URI in
  ``params.notifications.resourceSubscriptions`` must be granted like ``resources/read``.
* A method the spec defines but not in the negotiated version (``ping`` under 2026-07-28) is
  denied like an unknown method; so is a server→client method sent by a client.
* Client JSON-RPC responses are allowed before 2026-07-28 (answers to sampling, elicitation,
  roots); 2026-07-28 forbids clients to send them, so they are refused (400).
* Request ids must be strings or integers (no floats, no null); members beyond those JSON-RPC
  defines are refused; a request method sent without an id (``tools/call`` as a "notification")
  is refused, since some servers would still run it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sidecar.policy.decision import Decision

from . import jsonrpc, methods
from .errors import JsonRejected, McpRequestRejected
from .headers import check_mirrored_headers
from .jsonrpc import RequestId, is_request_id
from .jsonstrict import check_envelope, loads_strict
from .pending import PendingFilter
from .policy import Caller, CallerGrants, MCPServerAccessPolicy, grants_for

DEFAULT_MAX_BODY = 4 * 1024 * 1024
_LAYER = "mcp"
_REQUEST_MEMBERS = frozenset({"jsonrpc", "id", "method", "params"})
_RESPONSE_MEMBERS = frozenset({"jsonrpc", "id", "result", "error"})


@dataclass(frozen=True, slots=True)
class RequestVerdict:
    """What the sidecar does with one POST body.

    ``decision`` allows or denies (a denial carries status and JSON-RPC body); ``pending`` lists
    the list requests whose responses must be filtered; ``request_ids`` are the ids that expect a
    response (empty ⇒ notifications/responses only, the upstream answers 202).
    """

    decision: Decision
    protocol_version: str
    pending: tuple[PendingFilter, ...] = ()
    methods: tuple[str, ...] = ()  # per message, in order; "" for a client response
    request_ids: tuple[RequestId, ...] = ()
    is_batch: bool = False
    # Every (capability, name) the policy was asked about and granted: what later layers (OAuth
    # scopes) must check too, taken from the one place that reads items out of messages.
    items: tuple[tuple[str, str], ...] = ()
    # For audit, allowed or denied alike: the tool / resource / prompt names the messages name,
    # and the keys (never the values) of their arguments.
    names: tuple[str, ...] = ()
    arg_keys: tuple[str, ...] = ()
    # The task ids ``tasks/*`` requests name: the sidecar lets them through only for the caller
    # that created the task (sidecar.mcp.sessions).
    task_ids: tuple[str, ...] = ()

    @property
    def mcp_methods(self) -> tuple[str, ...]:
        """The JSON-RPC methods of the body, in order, without the client responses."""
        methods = self.methods
        return methods if "" not in methods else tuple(m for m in methods if m)

    @property
    def allowed(self) -> bool:
        return self.decision.allowed

    @property
    def expects_response(self) -> bool:
        return bool(self.request_ids)


class _Refused(Exception):
    """One message refused: carries everything its JSON-RPC error needs."""

    def __init__(
        self, status: int, code: int, reason: str, message: str, *, rule: str | None = None
    ):
        super().__init__(message)
        self.status, self.code, self.reason, self.message, self.rule = (
            status,
            code,
            reason,
            message,
            rule,
        )


@dataclass(frozen=True, slots=True)
class _Judged:
    method: str
    request_id: RequestId | None
    is_request: bool
    pending: PendingFilter | None
    decision: Decision


@dataclass(frozen=True, slots=True)
class _Context:
    caller: Caller
    policy: MCPServerAccessPolicy
    version: str
    headers: Mapping[str, str]
    grants: CallerGrants  # what the policy grants this caller, looked up once per request
    granted: list[tuple[str, str]] = field(default_factory=list)


def _invalid(message: str, code: int = jsonrpc.INVALID_REQUEST) -> _Refused:
    return _Refused(400, code, "invalid_request", message)


def _denied(decision: Decision) -> _Refused:
    return _Refused(
        403, jsonrpc.ACCESS_DENIED, decision.reason, decision.message, rule=decision.rule
    )


def _unknown(method: str, why: str) -> _Refused:
    return _Refused(403, jsonrpc.METHOD_NOT_FOUND, "method_not_allowed", f"method {method!r} {why}")


# --- version ------------------------------------------------------------------------------------


_WELL_FORMED_VERSIONS: set[str] = set()  # versions that matched the pattern (a handful)


def effective_version(negotiated_version: str | None, headers: Mapping[str, str]) -> str:
    version = negotiated_version or headers.get("mcp-protocol-version") or methods.DEFAULT_VERSION
    if version in _WELL_FORMED_VERSIONS:
        return version
    if not methods.VERSION_PATTERN.fullmatch(version):
        raise McpRequestRejected(f"malformed protocol version {version[:40]!r}")
    if len(_WELL_FORMED_VERSIONS) >= 64:
        _WELL_FORMED_VERSIONS.clear()
    _WELL_FORMED_VERSIONS.add(version)
    return version


# --- shape --------------------------------------------------------------------------------------


def _validate_shape(message: Any) -> None:
    if not isinstance(message, dict):
        raise _invalid("a JSON-RPC message must be a JSON object")
    if message.get("jsonrpc") != "2.0":
        raise _invalid('member "jsonrpc" must be exactly "2.0"')
    try:
        check_envelope(message)
    except McpRequestRejected as exc:
        raise _invalid(str(exc)) from exc
    if "method" in message:
        extra = message.keys() - _REQUEST_MEMBERS
        if extra:
            raise _invalid(f"unexpected member {min(extra)!r} in a request")
        if not isinstance(message["method"], str) or not message["method"]:
            raise _invalid('member "method" must be a non-empty string')
        if "id" in message and not is_request_id(message["id"]):
            raise _invalid('member "id" must be a string or an integer')
        if "params" in message and not isinstance(message["params"], dict):
            raise _invalid('member "params" must be an object')
        return
    extra = message.keys() - _RESPONSE_MEMBERS
    if extra:
        raise _invalid(f"unexpected member {min(extra)!r} in a response")
    if ("result" in message) == ("error" in message):
        raise _invalid('a message needs "method", or exactly one of "result" and "error"')
    if "id" not in message:
        raise _invalid('a response needs member "id"')
    if "result" in message:
        if not is_request_id(message["id"]) or not isinstance(message["result"], dict):
            raise _invalid("a result response needs a string or integer id and an object result")
        return
    error = message["error"]
    if not (message["id"] is None or is_request_id(message["id"])):
        raise _invalid('member "id" must be a string, an integer or null')
    if (
        not isinstance(error, dict)
        or not isinstance(error.get("code"), int)
        or isinstance(error.get("code"), bool)
        or not isinstance(error.get("message"), str)
    ):
        raise _invalid("an error response needs an error object with an integer code and a message")


# --- policy -------------------------------------------------------------------------------------


def _string_param(params: Mapping[str, Any], member: str, method: str) -> str:
    value = params.get(member)
    if not isinstance(value, str):
        raise _invalid(f"{method} needs params.{member} as a string", jsonrpc.INVALID_PARAMS)
    return value


def _gate(ctx: _Context, capability: str, name: str) -> Decision:
    decision = ctx.grants.authorize(capability, name)
    if not decision.allowed:
        raise _denied(decision)
    ctx.granted.append((capability, name))
    return decision


def _authorize_request(ctx: _Context, spec: methods.MethodSpec, message: dict) -> Decision:
    params = message.get("params") or {}
    method = spec.name
    if spec.list_member:
        return Decision.allow(_LAYER, "list_filtered", f"{method} filtered for {_who(ctx)!r}")
    if spec.item_field in ("name", "uri"):
        assert spec.capability is not None
        return _gate(ctx, spec.capability, _string_param(params, spec.item_field, method))
    if spec.item_field == "ref":
        ref = params.get("ref")
        kind = ref.get("type") if isinstance(ref, dict) else None
        if kind == "ref/prompt":
            return _gate(ctx, "prompts", _string_param(ref, "name", f"{method} ref"))
        if kind == "ref/resource":
            return _gate(ctx, "resources", _string_param(ref, "uri", f"{method} ref"))
        raise _invalid(
            f"{method} needs params.ref of type ref/prompt or ref/resource", jsonrpc.INVALID_PARAMS
        )
    if spec.item_field == "resourceSubscriptions":
        wanted = params.get("notifications", {})
        uris = wanted.get("resourceSubscriptions", []) if isinstance(wanted, dict) else None
        if not isinstance(uris, list) or not all(isinstance(u, str) for u in uris):
            raise _invalid(
                f"{method} needs params.notifications.resourceSubscriptions as a list of URIs",
                jsonrpc.INVALID_PARAMS,
            )
        for uri in uris:
            _gate(ctx, "resources", uri)
    if spec.category == "tasks" and "tools" not in ctx.grants.capabilities:
        raise _Refused(
            403,
            jsonrpc.ACCESS_DENIED,
            "tasks_not_granted",
            f"{method} is only available to callers holding a tools grant; "
            f"caller {_who(ctx)!r} holds none",
        )
    return Decision.allow(_LAYER, "utility_allowed", f"{method} allowed for {_who(ctx)!r}")


def _who(ctx: _Context) -> str:
    return ctx.grants.label


def _judge(ctx: _Context, message: Any, *, check_headers: bool) -> _Judged:
    _validate_shape(message)
    is_request = "method" in message and "id" in message
    if check_headers:
        try:
            check_mirrored_headers(
                message, is_request=is_request, version=ctx.version, headers=ctx.headers
            )
        except McpRequestRejected as exc:
            raise _Refused(400, exc.jsonrpc_code, "header_mismatch", str(exc)) from exc

    if "method" not in message:  # a client's JSON-RPC response
        if ctx.version >= methods.HEADERS_REQUIRED_FROM:
            raise _invalid(f"clients must not send JSON-RPC responses in protocol {ctx.version}")
        allow = Decision.allow(_LAYER, "client_response", f"response from {_who(ctx)!r}")
        return _Judged("", None, False, None, allow)

    method = message["method"]
    request_id = message.get("id")
    spec = methods.lookup(method)
    if not is_request:
        if methods.is_notification_namespace(method):
            allow = Decision.allow(_LAYER, "notification", f"{method} from {_who(ctx)!r}")
            return _Judged(method, None, False, None, allow)
        if spec is not None:
            raise _invalid(f"{method!r} is a request and needs an id")
        raise _unknown(method, "is not defined by MCP")
    if spec is None:
        raise _unknown(method, "is not defined by MCP")
    if spec.kind == "notification":
        raise _invalid(f"{method!r} is a notification and must not carry an id")
    if spec.direction == "server":
        raise _unknown(method, "is sent by servers, not clients")
    if not spec.defined_in(ctx.version):
        raise _unknown(method, f"is not defined in protocol version {ctx.version}")
    decision = _authorize_request(ctx, spec, message)
    pending = None
    if spec.list_member:
        pending = PendingFilter(request_id, method, ctx.caller, ctx.policy, ctx.version)
    return _Judged(method, request_id, True, pending, decision)


# --- the entry point ----------------------------------------------------------------------------


def _deny(refusal: _Refused, body: bytes, version: str, **fields: Any) -> RequestVerdict:
    decision = Decision.deny(
        _LAYER, refusal.reason, refusal.message, refusal.status, rule=refusal.rule, body=body
    )
    return RequestVerdict(decision, version, **fields)


def _id_of(message: Any) -> RequestId | None:
    if isinstance(message, dict) and is_request_id(message.get("id")):
        return message["id"]
    return None


MAX_AUDITED = 64  # names / argument keys reported per body (a batch could name thousands)
MAX_AUDITED_CHARS = 256


def _audited(values: list[str]) -> tuple[str, ...]:
    if values and max(map(len, values)) > MAX_AUDITED_CHARS:
        values = [v[:MAX_AUDITED_CHARS] for v in values]
    return tuple(dict.fromkeys(values))[:MAX_AUDITED]


_IS_STR = str.__instancecheck__


def _named(message: Any, names: list[str], arg_keys: list[str], task_ids: list[str]) -> None:
    """What one message names, read without judging it (denied messages are audited too)."""
    if not isinstance(message, dict) or not isinstance(message.get("params"), dict):
        return
    params = message["params"]
    spec = methods.lookup(message.get("method")) if isinstance(message.get("method"), str) else None
    field_name = spec.item_field if spec is not None else None
    if field_name in ("name", "uri") and isinstance(params.get(field_name), str):
        names.append(params[field_name])
    elif field_name == "ref" and isinstance(params.get("ref"), dict):
        ref = params["ref"]
        for member in ("name", "uri"):
            if isinstance(ref.get(member), str):
                names.append(ref[member])
    elif field_name == "resourceSubscriptions":
        wanted = params.get("notifications")
        uris = wanted.get("resourceSubscriptions") if isinstance(wanted, dict) else None
        if isinstance(uris, list):
            names.extend(u for u in uris if isinstance(u, str))
    arguments = params.get("arguments")
    if isinstance(arguments, dict):
        arg_keys.extend(filter(_IS_STR, arguments))
    if spec is not None and spec.category == "tasks" and "taskId" in params:
        task_ids.append(params["taskId"] if isinstance(params["taskId"], str) else "")


def inspect_request(
    body: bytes,
    *,
    caller: Any,
    policy: MCPServerAccessPolicy,
    headers: Mapping[str, str],
    negotiated_version: str | None,
    max_body_bytes: int = DEFAULT_MAX_BODY,
) -> RequestVerdict:
    """Judge one POST body for ``caller`` (its ``AppIdentity``: namespace + App ID);
    ``headers`` has lower-case names. The verdict also carries what the body names (methods,
    item names, argument keys) for audit, whichever way it went."""
    verdict, document = _inspect(
        body,
        caller=caller,
        policy=policy,
        headers=headers,
        negotiated_version=negotiated_version,
        max_body_bytes=max_body_bytes,
    )
    if document is _UNREAD:
        return verdict
    messages = document if isinstance(document, list) else (document,)
    names: list[str] = []
    arg_keys: list[str] = []
    task_ids: list[str] = []
    for message in messages:
        _named(message, names, arg_keys, task_ids)
    return RequestVerdict(
        verdict.decision,
        verdict.protocol_version,
        verdict.pending,
        verdict.methods or tuple(_method_of(m) for m in messages),
        verdict.request_ids,
        verdict.is_batch,
        verdict.items,
        _audited(names) if names else (),
        _audited(arg_keys) if arg_keys else (),
        tuple(dict.fromkeys(task_ids)) if task_ids else (),  # every one is checked: never cut
    )


_UNREAD: Any = object()  # the body was refused before it was parsed


def _inspect(
    body: bytes,
    *,
    caller: Any,
    policy: MCPServerAccessPolicy,
    headers: Mapping[str, str],
    negotiated_version: str | None,
    max_body_bytes: int,
) -> tuple[RequestVerdict, Any]:
    """The verdict, and the parsed document (``_UNREAD`` if the body was not parsed)."""
    grants = grants_for(policy, caller)
    try:
        version = effective_version(negotiated_version, headers)
    except McpRequestRejected as exc:
        refusal = _invalid(str(exc))
        return _deny(refusal, jsonrpc.error_body(None, refusal.code, refusal.message), ""), _UNREAD

    if not grants.any_grant:
        message = (
            f"session refused: caller {grants.label!r} holds no grant on MCP server "
            f"{policy.server_ref!r}"
        )
        refusal = _Refused(403, jsonrpc.ACCESS_DENIED, "session_refused", message)
        refusal.rule = f"policy {policy.name}: no rule grants this caller anything"
        body_out = jsonrpc.error_body(None, refusal.code, message)
        return _deny(refusal, body_out, version), _UNREAD

    try:
        document = loads_strict(body, max_bytes=max_body_bytes)
    except JsonRejected as exc:
        refusal = _Refused(exc.http_status, jsonrpc.PARSE_ERROR, "parse_error", str(exc))
        body_out = jsonrpc.error_body(None, refusal.code, refusal.message)
        return _deny(refusal, body_out, version), _UNREAD

    ctx = _Context(grants.caller, policy, version, headers, grants)
    if isinstance(document, list):
        return _inspect_batch(ctx, document), document
    try:
        judged = _judge(ctx, document, check_headers=True)
    except _Refused as refusal:
        body_out = jsonrpc.error_body(_id_of(document), refusal.code, refusal.message)
        return _deny(refusal, body_out, version, methods=(_method_of(document),)), document
    verdict = RequestVerdict(
        judged.decision,
        version,
        (judged.pending,) if judged.pending else (),
        (judged.method,),
        (judged.request_id,) if judged.is_request else (),
        False,
        tuple(ctx.granted),
    )
    return verdict, document


def _method_of(message: Any) -> str:
    method = message.get("method") if isinstance(message, dict) else None
    return method if isinstance(method, str) else ""


def _inspect_batch(ctx: _Context, batch: list) -> RequestVerdict:
    version = ctx.version
    fields: dict[str, Any] = {"is_batch": True, "methods": tuple(_method_of(m) for m in batch)}
    if not batch:
        refusal = _invalid("an empty JSON-RPC batch is not a valid request")
    elif version > methods.LAST_BATCH_VERSION:
        refusal = _invalid(f"JSON-RPC batches are not allowed in protocol version {version}")
    elif "mcp-method" in ctx.headers or "mcp-name" in ctx.headers:
        refusal = _Refused(
            400, jsonrpc.HEADER_MISMATCH, "header_mismatch",
            "Header mismatch: Mcp-Method/Mcp-Name cannot describe a batch",
        )  # fmt: skip
    else:
        refusal = None
    if refusal is not None:
        return _deny(
            refusal, jsonrpc.error_body(None, refusal.code, refusal.message), version, **fields
        )

    judged: list[_Judged | _Refused] = []
    for message in batch:
        try:
            judged.append(_judge(ctx, message, check_headers=False))
        except _Refused as exc:
            judged.append(exc)
    ids = [j.request_id for j in judged if isinstance(j, _Judged) and j.is_request]
    keys = [jsonrpc.id_key(i) for i in ids]
    refusals = [(i, j) for i, j in enumerate(judged) if isinstance(j, _Refused)]
    if not refusals and len(set(keys)) != len(keys):
        refusal = _invalid("a JSON-RPC batch must not repeat a request id")
        return _deny(
            refusal, jsonrpc.error_body(None, refusal.code, refusal.message), version, **fields
        )
    if refusals:
        index, first = refusals[0]
        errors = []
        for message, outcome in zip(batch, judged, strict=True):
            if isinstance(outcome, _Refused):
                errors.append(jsonrpc.error_object(_id_of(message), outcome.code, outcome.message))
            elif outcome.is_request:
                errors.append(
                    jsonrpc.error_object(
                        outcome.request_id,
                        first.code,
                        f"batch refused: element {index} was refused ({first.message})",
                    )
                )
        # A malformed element makes the batch malformed (400); otherwise it is a denial (403).
        status = 400 if any(r.status == 400 for _, r in refusals) else 403
        summary = _Refused(
            status, first.code, first.reason, f"batch element {index}: {first.message}",
            rule=first.rule,
        )  # fmt: skip
        return _deny(summary, jsonrpc.dumps(errors), version, **fields)

    allowed = [j for j in judged if isinstance(j, _Judged)]
    decision = Decision.allow(
        _LAYER, "batch_allowed", f"batch of {len(batch)} messages allowed for {_who(ctx)!r}"
    )
    return RequestVerdict(
        decision,
        version,
        pending=tuple(j.pending for j in allowed if j.pending),
        request_ids=tuple(j.request_id for j in allowed if j.is_request),
        items=tuple(ctx.granted),
        **fields,
    )
