"""What the judge returns: one frozen verdict per step, and the facts every audit record needs.

The proxies are thin I/O around the judge (mitmproxy's layers are the model: events in,
commands out). A verdict is one of three commands:

* :class:`Answer` — answer the caller ourselves (every denial, health checks, RFC 9728
  metadata); nothing reaches the app or the peer;
* :class:`ReadBody` — read the request body (up to ``limit``) and hand it back to the judge,
  which then decides again *with the policy in force when the body is complete*;
* :class:`Forward` — send ``plan.head`` (and ``plan.body``, if the judge read it) upstream and
  relay the answer through ``plan.response_plan``.

Each carries :class:`Facts`, what is known about the request for the audit record, so the
proxy records exactly once per request whatever the outcome.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from identity import AppIdentity

from ..policy import Decision

Headers = tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True, slots=True)
class Facts:
    """What the audit record and the metrics say about a request, filled in as it is judged."""

    verb: str = "?"
    path: str = "?"
    caller: AppIdentity | None = None
    callee: AppIdentity | None = None
    policy_version: str = "-"
    bearer_subject: str | None = None
    trace_id: str | None = None
    mcp_methods: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    arg_keys: tuple[str, ...] = ()

    def but(self, **changes: Any) -> Facts:
        """A copy with ``changes`` (what ``dataclasses.replace`` does, at half its cost: the
        judge calls it on every inspected request)."""
        if not changes.keys() <= _FACT_NAMES:
            raise TypeError(f"Facts has no field {sorted(changes.keys() - _FACT_NAMES)[0]!r}")
        new = object.__new__(Facts)
        for name in _FACT_NAMES_IN_ORDER:
            _set(new, name, changes[name] if name in changes else getattr(self, name))
        return new

    def with_mcp(
        self, mcp_methods: tuple[str, ...], names: tuple[str, ...], arg_keys: tuple[str, ...]
    ) -> Facts:
        """A copy with what the MCP policy read from the body (``but`` with these three, built
        directly: the judge does it once per inspected request)."""
        return Facts(
            self.verb,
            self.path,
            self.caller,
            self.callee,
            self.policy_version,
            self.bearer_subject,
            self.trace_id,
            mcp_methods,
            names,
            arg_keys,
        )


_FACT_NAMES_IN_ORDER = tuple(f.name for f in fields(Facts))
_FACT_NAMES = frozenset(_FACT_NAMES_IN_ORDER)
_set = object.__setattr__  # Facts is frozen: as its generated __init__ does


@dataclass(frozen=True, slots=True)
class Answer:
    """Answer the caller without contacting the app (or peer)."""

    decision: Decision  # what the audit records; allowed for health/metadata answers
    facts: Facts
    status: int
    body: bytes
    content_type: bytes = b"application/json"
    headers: Headers = ()

    @classmethod
    def deny(cls, decision: Decision, facts: Facts) -> Answer:
        return cls(
            decision,
            facts,
            decision.status,
            decision.response_body(),
            decision.content_type.encode(),
            tuple((n.encode("latin-1"), v.encode("latin-1")) for n, v in decision.headers),
        )


def judge_failed(exc: BaseException, facts: Facts) -> Answer:
    """The answer to a request the judge raised on (a bug, by definition): refused, recorded as
    a denial, and the connection closed, rather than dropped unanswered and unrecorded. The
    message names the exception's type, not its text (which may echo the request)."""
    decision = Decision.deny(
        "internal",
        "ERR_JUDGE_FAILED",
        f"the sidecar could not judge this request ({type(exc).__name__}); it was not forwarded",
        500,
        headers=(("connection", "close"),),
    )
    return Answer.deny(decision, facts)


@dataclass(frozen=True, slots=True)
class ReadBody:
    """Read the whole request body, at most ``limit`` bytes, then call the judge again."""

    limit: int
    facts: Facts
    state: Any  # the judge's own continuation; opaque to the proxy


@dataclass(frozen=True, slots=True)
class ForwardPlan:
    """Everything the relay needs to forward one request: the judge's one output to the wire."""

    head: Any  # the request head, built by sidecar.http.message.request_head
    body: bytes | None = None  # the body the judge read and judged; None streams the caller's
    response_plan: Any = None  # relay ResponsePlanner (MCP response filtering), or None
    upstream: Any = None  # pool key of the upstream (outbound: (address, expected identity))
    after: Any = None  # called with the response status once the exchange completed
    # Inbound: when the bearer token the request was judged with expires (POSIX seconds, its
    # ``exp`` plus the leeway the check forgave), or None. A streamed answer ends then.
    token_expires: float | None = None


@dataclass(frozen=True, slots=True)
class Forward:
    decision: Decision
    facts: Facts
    plan: ForwardPlan


Verdict = Answer | ReadBody | Forward
