"""What being on the record costs per request: the calls each proxy makes, timed in-process.

    .venv/bin/python bench/audit_cost.py [N]

For each sidecar side it runs N requests' worth of exactly what its proxy does for the record —
``begin`` (the hop), ``refusal`` (fail-closed check), ``note_body`` (inbound MCP body), the
proxy's own ``_record`` (the audit record and the metrics count) — with the flush task's work
(encoding, hash chain, the write in its worker thread) included, and prints the process CPU per
request: ``time.process_time()``, so other load on the machine does not inflate it. The inbound
request is a 202-byte ``tools/call`` as ``make bench`` sends. ``--audit-log none`` on a sidecar
is the "no file" row, for comparing under ``make bench`` load.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import tempfile
import time
from functools import cache
from pathlib import Path
from types import SimpleNamespace

import trio

from ca import CertificateAuthority
from identity import AppIdentity
from sidecar.audit import AuditLog, AuditSettings, note_body
from sidecar.http.relay import ExchangeResult
from sidecar.judge.verdict import Facts
from sidecar.metrics import SidecarMetrics
from sidecar.policy import Decision
from sidecar.proxy.inbound import InboundProxy
from sidecar.proxy.outbound import OutboundProxy

BODY = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "add", "arguments": {"a": 1, "b": 2}},
    }
).encode()
SERVER = AppIdentity("public", "default", "server")
CLIENT = AppIdentity("public", "default", "client")
IN_HEADERS = [
    (b"host", b"server"),
    (b"content-type", b"application/json"),
    (b"accept", b"application/json, text/event-stream"),
    (b"content-length", str(len(BODY)).encode()),
]
OUT_REQUEST = SimpleNamespace(
    method=b"POST",
    target=b"/v1.0/invoke/server/method/mcp",
    headers=[(b"host", b"localhost"), (b"content-type", b"application/json")],
)
FACTS = Facts(
    verb="POST",
    path="mcp",
    caller=CLIENT,
    policy_version="v12",
    mcp_methods=("tools/call",),
    names=("add",),
    arg_keys=("a", "b"),
)
GRANTED = Decision.allow("mcp", "granted", "rules[0] callers=client")
SENT = Decision.allow("outbound", "sent")


@cache
def _svid():
    """The SVID that signs a checkpoint every 1000 records, as on a running sidecar."""
    now = dt.datetime.now(dt.UTC)
    authority = CertificateAuthority.create("public", now=now)
    return authority.issue(SERVER, now=now, ttl=dt.timedelta(hours=1))


def new_log(destination) -> AuditLog:
    return AuditLog(AuditSettings(destination), signer=_svid)


def _proxy(cls, audit: AuditLog, metrics: SidecarMetrics, me: AppIdentity):
    """A proxy with only what its ``_record`` reads: the audit log, the metrics, who it is."""
    proxy = object.__new__(cls)
    proxy.audit, proxy.metrics, proxy.config = audit, metrics, SimpleNamespace(me=me)
    proxy._callee = str(me)  # what InboundProxy.__init__ makes once for every record
    return proxy


async def inbound_us(audit: AuditLog, n: int, mcp: bool = True) -> float:
    metrics = SidecarMetrics()
    metrics.set_granted_tools({"add"})
    proxy = _proxy(InboundProxy, audit, metrics, SERVER)
    facts = FACTS if mcp else FACTS.but(mcp_methods=(), names=(), arg_keys=())
    start = time.process_time()
    for _ in range(n):
        hop = audit.begin("inbound", IN_HEADERS, b"POST")
        audit.refusal()
        if mcp:
            note_body(BODY)
        result = ExchangeResult(status=200, bytes_down=180)
        proxy._record(facts, GRANTED, result, hop)
        if audit.buffered >= 1000:
            await audit.flush()
    await audit.flush()
    return (time.process_time() - start) / n * 1e6


async def outbound_us(audit: AuditLog, n: int) -> float:
    proxy = _proxy(OutboundProxy, audit, SidecarMetrics(), CLIENT)
    start = time.process_time()
    for _ in range(n):
        hop = audit.begin("outbound", OUT_REQUEST.headers, b"POST")
        audit.refusal()
        result = ExchangeResult(status=200, bytes_down=180)
        proxy._record(OUT_REQUEST, "default/server", SENT, result, hop)
        if audit.buffered >= 1000:
            await audit.flush()
    await audit.flush()
    return (time.process_time() - start) / n * 1e6


def audit_cost(workdir: Path, n: int = 20_000) -> dict[str, float]:
    """CPU per request for ``make bench``'s report (inbound MCP request): no file (hop, fields,
    metrics) and a file in the bench's work directory (plus encoding, chain and writes)."""

    async def measure() -> dict[str, float]:
        out = {}
        for label, destination in (("no file", None), ("file", workdir / "audit-cost.jsonl")):
            audit = new_log(destination)
            out[label] = await inbound_us(audit, n)
            audit.close()
        return out

    return trio.run(measure)


async def main(n: int) -> None:
    directory = Path(tempfile.mkdtemp(prefix="audit-cost-"))
    for label, destination in (("none", None), ("file", directory / "default.server.jsonl")):
        rows = (
            ("inbound, MCP tools/call", lambda audit: inbound_us(audit, n)),
            ("inbound, plain HTTP", lambda audit: inbound_us(audit, n, mcp=False)),
            ("outbound", lambda audit: outbound_us(audit, n)),
        )
        for name, run in rows:
            audit = new_log(destination)
            us = await run(audit)
            audit.close()
            print(f"--audit-log {label:<4}  {name:<24} {us:6.1f} µs CPU per request")


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 20_000)
