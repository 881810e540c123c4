"""Playbooks for the outbound judge: what the app asks its sidecar → the verdict and the head
the target's sidecar would receive. No sockets."""

from __future__ import annotations

import json

import h11
import pytest

from identity import AppIdentity
from sidecar.judge import Answer, Forward, OutboundJudge, OutboundSite

ME = AppIdentity("public", "default", "client")
TOKEN = b"s3cret-api-token"
ADDRESS = ("127.0.0.1", 45001)


def resolve(app_id: str, namespace: str):
    return ADDRESS if (app_id, namespace) in {("server", "default"), ("db", "prod")} else None


def judge(token: bytes | None = TOKEN) -> OutboundJudge:
    return OutboundJudge(OutboundSite(ME, token), resolve)


def request(target: bytes, headers=(), method: bytes = b"GET") -> h11.Request:
    return h11.Request(method=method, target=target, headers=[(b"host", b"127.0.0.1"), *headers])


def with_token(*extra):
    return [(b"dapr-api-token", TOKEN), *extra]


def test_call_without_the_api_token_is_refused_401_naming_the_header():
    verdict = judge().head(request(b"/v1.0/invoke/server/method/echo"))
    assert isinstance(verdict, Answer) and verdict.status == 401
    body = json.loads(verdict.body)
    assert body["errorCode"] == "ERR_API_TOKEN"
    assert "dapr-api-token" in body["message"]


@pytest.mark.parametrize(
    "sent", [b"", b"s3cret-api-toke", b"s3cret-api-token2", b"S3CRET-API-TOKEN"]
)
def test_call_with_a_wrong_api_token_is_refused(sent):
    verdict = judge().head(request(b"/v1.0/invoke/server/method/echo", [(b"dapr-api-token", sent)]))
    assert isinstance(verdict, Answer) and verdict.status == 401


def test_call_with_the_api_token_is_forwarded_without_it():
    verdict = judge().head(request(b"/v1.0/invoke/server/method/echo", with_token()))
    assert isinstance(verdict, Forward)
    sent = verdict.plan.head
    assert sent.target == b"/echo"
    assert (b"dapr-api-token", TOKEN) not in sent.headers
    assert dict(sent.headers)[b"host"] == b"server.default"
    assert verdict.plan.upstream == (ADDRESS, AppIdentity("public", "default", "server"))


def test_no_token_needed_when_the_sidecar_has_none():
    verdict = judge(None).head(request(b"/v1.0/invoke/server/method/echo"))
    assert isinstance(verdict, Forward)


def test_health_needs_no_token_but_only_on_the_exact_path():
    assert judge().head(request(b"/v1.0/healthz")).status == 204
    assert judge().head(request(b"/v1.0/healthz/../invoke/server/method/x")).status == 401


def test_dapr_app_id_header_addresses_another_namespace_and_stays_local():
    headers = with_token((b"dapr-app-id", b"db.prod"), (b"x-kept", b"1"))
    verdict = judge().head(request(b"/query", headers))
    assert isinstance(verdict, Forward)
    assert verdict.plan.upstream[1] == AppIdentity("public", "prod", "db")
    names = [n for n, _ in verdict.plan.head.headers]
    assert b"dapr-app-id" not in names and b"x-kept" in names
    assert verdict.facts.callee == AppIdentity("public", "prod", "db")


def test_unknown_app_id_is_answered_404():
    verdict = judge().head(request(b"/v1.0/invoke/ghost/method/x", with_token()))
    assert isinstance(verdict, Answer) and verdict.status == 404


def test_non_loopback_host_is_refused_even_with_the_token():
    bad = h11.Request(
        method=b"GET",
        target=b"/v1.0/invoke/server/method/x",
        headers=[(b"host", b"evil.example"), (b"dapr-api-token", TOKEN)],
    )
    verdict = judge().head(bad)
    assert isinstance(verdict, Answer) and verdict.status == 403
