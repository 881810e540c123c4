"""The App ID access-control list: Dapr's ``Configuration.spec.accessControl``, evaluated.

Pure: :func:`.acl_parse.parse_access_control` turns a plain mapping (the YAML already loaded) into
the frozen :class:`AccessControl` defined here; :func:`evaluate_acl` takes it with a caller
identity, an operation and a verb, and returns a :class:`Decision`. Everything that can be worked
out once (the operation tries, the outcome of every verb of every rule, the allow decisions
themselves) is worked out when the value is built, so evaluating a request is a dict lookup, a
trie walk and one more dict lookup.

Reference: dapr/dapr ``pkg/acl/acl.go`` (``ParseAccessControlSpec``,
``isOperationAllowedByAccessControlPolicy``) and ``notes/dapr-compat.md`` §1.2, §1.5, §1.8.

Where Dapr surprises, and what we do
------------------------------------
We decide exactly as Dapr decides for every file we accept. Where Dapr silently does something the
author almost certainly did not mean, we *refuse the file* with an error naming the field and the
fix. Refusing can only turn "Dapr would allow" into "no new policy", never into an allow.

Reproduced as Dapr does it:

* No ``accessControl``, or one with no ``trustDomain``, no ``defaultAction`` and no policies,
  is no ACL at all: every call is allowed.
* ``accessControl: {trustDomain: x}`` alone denies everything: an empty global ``defaultAction``
  means deny when ``policies`` is absent or non-empty, and allow only when ``policies: []``.
* A policy's ``trustDomain`` is *not* inherited from the top level (the hosted product's docs say
  it defaults to ``public``; Dapr's runtime refuses to start). We refuse the file too, and the
  error says which line to add. ``trustmesh configuration create`` always writes it.
* Operation names get a leading ``/`` and are lower-cased, and so is the request operation (the
  callee speaks HTTP). Lower-casing follows Go's simple case mapping (``İ`` becomes ``i``, not
  ``i̇``), so no Unicode trick lowers differently here than in Dapr.
* For an HTTP callee, a matching operation only decides through its ``httpVerb`` list: a verb not
  listed (and no ``*``) falls back to the policy's ``defaultAction``, then the global one. An
  operation with no ``httpVerb`` at all is therefore decided by the defaults; a rule
  ``{name: /admin, action: deny}`` without verbs does *not* deny ``/admin``.
* The request verb is what Dapr's calling sidecar would send: upper-cased, and anything that is not
  one of the nine verb names becomes ``POST`` (``WithHTTPExtension``). The literal name ``NONE``
  is Dapr's "no verb": a matched operation then yields the policy's ``defaultAction`` alone, and
  deny when that is unset. The listener should refuse non-standard methods before the ACL, since
  the app would otherwise see a method the ACL judged as ``POST``.
* Matching quirks of the trie (first-inserted sibling wins, a shallower name wins, ``**`` in the
  middle is one segment) are in :mod:`.acl_trie`.

Refused, where Dapr would silently change meaning:

* unknown keys (``defaultaction`` is not ``defaultAction``; Dapr drops it and the default flips);
* wrong types (a string where a list belongs, a number where a string belongs);
* ``action``/``defaultAction`` other than ``allow``/``deny`` in any letter case (Dapr treats
  ``alow`` as deny); an operation without ``name`` or ``action`` (Dapr: deny);
* ``httpVerb`` entries other than the nine upper-case verb names or ``*``: ``post`` never matches;
* a policy without ``appId``, ``trustDomain`` or ``namespace``, or with a value no SPIFFE
  identity can carry (``trustDomain: myDomain`` can never match a caller);
* two policies for the same ``appId`` and ``namespace`` (Dapr keeps the later one) and two
  operations with the same name after normalisation (Dapr keeps the first one);
* operation names that can never match a normalised request path: an empty, ``.`` or ``..``
  segment, or a ``*`` segment before the end (Dapr matches it only against a literal ``*``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from identity import AppIdentity

from .acl_trie import OperationTrie
from .decision import Decision

ALLOW = "allow"
DENY = "deny"
ACTIONS = (ALLOW, DENY)
DEFAULT_TRUST_DOMAIN = "public"  # Dapr's config.DefaultTrustDomain
# The names of Dapr's HTTPExtension.Verb enum, which is what rules are compared against.
HTTP_VERBS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
ANY_VERB = "*"
NO_VERB = "NONE"
_REQUEST_VERBS = frozenset((*HTTP_VERBS, NO_VERB))
_UNKNOWN_VERB_BECOMES = "POST"  # Dapr's WithHTTPExtension fallback

LAYER = "acl"
DENY_REASON = "ERR_DIRECT_INVOKE"  # Dapr's code for this denial, not ERR_PERMISSION_DENIED
ALLOW_REASON = "acl_allowed"
DENY_STATUS = 403


# ---------------------------------------------------------------------------------------------
# Values


@dataclass(frozen=True, slots=True)
class AclOperation:
    """``policies[].operations[]``: one operation name with the verbs it rules on."""

    name: str  # normalised: "/"-prefixed and lower-cased
    http_verbs: tuple[str, ...]  # upper-case verb names and/or "*", as written
    action: str  # "allow" | "deny"


@dataclass(frozen=True, slots=True)
class AppPolicy:
    """``policies[]``: what one caller (App ID in a namespace and trust domain) may do."""

    app_id: str
    namespace: str
    trust_domain: str
    default_action: str | None = None  # None: fall back to the global defaultAction
    operations: tuple[AclOperation, ...] = ()

    @property
    def label(self) -> str:
        """How rules name this policy: ``policies[mcp-client]``."""
        return f"policies[{self.app_id}]"


@dataclass(frozen=True, slots=True)
class _Outcome:
    """One precomputed answer: allowed or not, the rule that says so, and the allow Decision."""

    allowed: bool
    rule: str
    allow_decision: Decision | None
    # Decided by an operation the policy names for this verb (or "*"), not by a default
    # action, and that operation is not a catch-all of wildcards only ("/**").
    explicit: bool = False

    @classmethod
    def of(cls, action: str | None, rule: str, *, explicit: bool = False) -> _Outcome:
        allowed = action == ALLOW  # Dapr: EqualFold(action, "allow"); "" and None deny
        decision = Decision.allow(LAYER, ALLOW_REASON, rule=rule) if allowed else None
        return cls(allowed, rule, decision, explicit)


@dataclass(frozen=True, slots=True)
class _CompiledPolicy:
    trust_domain: str
    wrong_trust_domain: _Outcome  # the caller's trust domain differs: global default
    no_rule: _Outcome  # no operation matched: policy default, else global default
    trie: OperationTrie[Mapping[str, _Outcome]]  # rule = outcome per request verb name


@dataclass(frozen=True, slots=True)
class AccessControl:
    """A parsed ``accessControl`` block. Build with :func:`parse_access_control`.

    ``default_action`` is already resolved (an empty one became allow or deny as Dapr decides),
    and ``trust_domain`` already defaulted to ``public``.
    """

    default_action: str
    trust_domain: str = DEFAULT_TRUST_DOMAIN
    policies: tuple[AppPolicy, ...] = ()
    _by_caller: Mapping[tuple[str, str], _CompiledPolicy] = field(
        init=False, repr=False, compare=False
    )
    _global: _Outcome = field(init=False, repr=False, compare=False)
    _anonymous: _Outcome = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.default_action not in ACTIONS:
            raise ValueError(f"default_action must be 'allow' or 'deny': {self.default_action!r}")
        global_rule = f"global defaultAction={self.default_action}"
        compiled: dict[tuple[str, str], _CompiledPolicy] = {}
        for policy in self.policies:
            key = (policy.app_id, policy.namespace)
            if key in compiled:
                raise ValueError(f"two policies for appId {key[0]!r} in namespace {key[1]!r}")
            compiled[key] = _compile_policy(policy, self.default_action, global_rule)
        object.__setattr__(self, "_by_caller", compiled)
        object.__setattr__(self, "_global", _Outcome.of(self.default_action, global_rule))
        object.__setattr__(
            self,
            "_anonymous",
            _Outcome.of(self.default_action, f"{global_rule} (caller has no SPIFFE identity)"),
        )

    def outcome(self, caller: AppIdentity | None, operation: str, verb: str) -> _Outcome:
        """Dapr's ``isOperationAllowedByAccessControlPolicy`` (HTTP callee), §1.5 of the note.

        ``verb`` must already be one of :data:`_REQUEST_VERBS` (see :func:`dapr_verb`).
        """
        if caller is None:
            return self._anonymous
        policy = self._by_caller.get((caller.app_id, caller.namespace))
        if policy is None:
            return self._global
        if policy.trust_domain != caller.trust_domain:
            return policy.wrong_trust_domain
        rule = policy.trie.search(match_form(operation))
        if rule is None:
            return policy.no_rule
        return rule[verb]


def _compile_policy(policy: AppPolicy, global_action: str, global_rule: str) -> _CompiledPolicy:
    """Work out, once, the answer for every verb of every operation of ``policy``."""
    label = policy.label
    if policy.default_action is None:
        no_rule = _Outcome.of(global_action, f"{global_rule} ({label} sets no defaultAction)")
        no_verb_rule = f"{label} defaultAction unset=deny"
    else:
        no_rule = _Outcome.of(
            policy.default_action, f"{label} defaultAction={policy.default_action}"
        )
        no_verb_rule = f"{label} defaultAction={policy.default_action}"

    entries = []
    for operation in policy.operations:
        where = f"{label} operations[{operation.name}]"
        names_a_path = _names_a_path(operation.name)
        by_verb: dict[str, _Outcome] = {}
        if ANY_VERB in operation.http_verbs:
            unlisted = _Outcome.of(
                operation.action, f"{where} {ANY_VERB}={operation.action}", explicit=names_a_path
            )
        else:
            unlisted = _Outcome.of(
                global_action if policy.default_action is None else policy.default_action,
                f"{no_verb_rule} (operations[{operation.name}] has no rule for this verb)"
                if policy.default_action is not None
                else f"{global_rule} ({where} has no rule for this verb and {label} sets no "
                "defaultAction)",
            )
        for verb in HTTP_VERBS:
            if verb in operation.http_verbs:
                by_verb[verb] = _Outcome.of(
                    operation.action, f"{where} {verb}={operation.action}", explicit=names_a_path
                )
            else:
                by_verb[verb] = unlisted
        # Dapr, verb NONE on an HTTP callee: action = the policy's defaultAction, "" => deny.
        by_verb[NO_VERB] = _Outcome.of(
            policy.default_action, f"{no_verb_rule} ({where} matched a request without a verb)"
        )
        entries.append((operation.name, by_verb))

    wrong_td = _Outcome.of(
        global_action, f"{global_rule} ({label} is for trust domain {policy.trust_domain})"
    )
    return _CompiledPolicy(policy.trust_domain, wrong_td, no_rule, OperationTrie.build(entries))


# ---------------------------------------------------------------------------------------------
# Evaluation

_NO_ACL = Decision.allow(LAYER, ALLOW_REASON, rule="no access control configured")


def evaluate_acl(
    acl: AccessControl | None, caller: AppIdentity | None, operation: str, verb: str
) -> Decision:
    """Decide whether ``caller`` may invoke ``operation`` with HTTP method ``verb``.

    ``operation`` is the request's normalised method (``mcp``, ``v1/items``); ``caller`` is None
    when the peer presented no SPIFFE identity (the global default applies). Never raises.
    """
    if acl is None:
        return _NO_ACL
    request_verb = dapr_verb(verb)
    outcome = acl.outcome(caller, operation, request_verb)
    if outcome.allow_decision is not None:
        return outcome.allow_decision
    return Decision.deny(
        LAYER, DENY_REASON, deny_message(caller, operation, request_verb), DENY_STATUS,
        rule=outcome.rule,
    )  # fmt: skip


def operation_allows(
    acl: AccessControl | None, caller: AppIdentity | None, operation: str, verb: str
) -> bool:
    """True only if an operation written for ``caller`` names ``operation`` and allows ``verb``.

    Stricter than :func:`evaluate_acl`: a default action (global or per caller) never counts,
    nor does an operation made only of wildcards (``/**``, ``/*``). This is what opens a path
    the sidecar cannot inspect (an MCP server's non-MCP paths): on purpose, for one caller.
    """
    if acl is None or caller is None:
        return False
    policy = acl._by_caller.get((caller.app_id, caller.namespace))
    if policy is None or policy.trust_domain != caller.trust_domain:
        return False
    rule = policy.trie.search(match_form(operation))
    if rule is None:
        return False
    outcome = rule[dapr_verb(verb)]
    return outcome.allowed and outcome.explicit


def _names_a_path(name: str) -> bool:
    return any(part not in ("", "*", "**") for part in name.split("/"))


def deny_message(caller: AppIdentity | None, operation: str, verb: str) -> str:
    """Dapr's PermissionDenied text, byte for byte (an empty id when there is no identity)."""
    who = "" if caller is None else str(caller)
    return (
        f"access control policy has denied access to id: {who} operation: {operation} verb: {verb}"
    )


def dapr_verb(method: str) -> str:
    """The verb name Dapr's calling sidecar would put in the request (``WithHTTPExtension``)."""
    name = method.upper() if method.isascii() else _go_upper(method)
    return name if name in _REQUEST_VERBS else _UNKNOWN_VERB_BECOMES


def match_form(operation: str) -> str:
    """The operation as the trie sees it: ``/``-prefixed, lower-cased like Go's ToLower."""
    if not operation.startswith("/"):
        operation = "/" + operation
    return operation.lower() if operation.isascii() else _go_lower(operation)


def _go_lower(text: str) -> str:
    # Go's strings.ToLower maps rune by rune (simple case mapping). Python's str.lower uses the
    # full mapping and context (U+0130 becomes two code points, a final sigma becomes ς), which
    # would let "/ADMİN" dodge a rule Dapr applies to "/admin". Per character, first code point.
    return "".join(ch.lower()[:1] or ch for ch in text)


def _go_upper(text: str) -> str:
    # As _go_lower: keep characters whose upper case is not a single code point (ß stays ß).
    out = []
    for ch in text:
        upper = ch.upper()
        out.append(upper if len(upper) == 1 else ch)
    return "".join(out)
