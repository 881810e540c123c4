"""What auditing costs per request: the calls the proxies make, timed in-process.

    .venv/bin/python bench/audit_cost.py [N]

For each audit destination (``none``, a file) and with or without an MCP body to describe, it
runs N requests' worth of ``begin`` → ``note_body`` → ``record`` → ``observe_request`` (flushes
included, in their worker thread) and prints the process CPU per request. ``--audit-log none``
on a sidecar is the same switch, for measuring the difference under ``make bench`` load.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import trio

from sidecar.audit import AuditLog, AuditSettings, note_body
from sidecar.metrics import SidecarMetrics

BODY = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "add", "arguments": {"a": 1, "b": 2}},
    }
).encode()
HEADERS = [(b"host", b"x"), (b"content-type", b"application/json")]
FIELDS = {
    "direction": "inbound",
    "callee": "spiffe://public/ns/default/server",
    "caller": "spiffe://public/ns/default/client",
    "verb": "POST",
    "path": "mcp",
    "decision": "allow",
    "layer": "mcp",
    "reason": "granted",
    "rule": "rules[0] callers=client",
    "status": 200,
    "response_bytes": 180,
    "policy_version": "v12",
}


async def per_request_us(audit: AuditLog, n: int, mcp: bool) -> float:
    metrics = SidecarMetrics()
    metrics.set_granted_tools({"add"})
    start = time.process_time()
    for _ in range(n):
        hop = audit.begin("inbound", HEADERS, b"POST")
        if mcp:
            note_body(BODY)
        audit.record(hop, **FIELDS)
        metrics.observe_request(
            "inbound",
            caller="client",
            callee="server",
            decision="allow",
            layer="mcp",
            reason="granted",
            mcp_method=hop.mcp_method,
            tool=hop.tool,
            status=200,
            seconds=hop.elapsed(),
        )
        if audit.buffered >= 1000:
            await audit.flush()
    await audit.flush()
    return (time.process_time() - start) / n * 1e6


def audit_cost(workdir: Path, n: int = 20_000) -> dict[str, float]:
    """CPU per record for ``make bench``'s report: no file (encoding, hash chain, metrics) and a
    file in the bench's work directory (plus the buffered writes)."""

    async def measure() -> dict[str, float]:
        out = {}
        for label, destination in (("no file", None), ("file", workdir / "audit-cost.jsonl")):
            audit = AuditLog(AuditSettings(destination))
            out[label] = await per_request_us(audit, n, mcp=False)
            audit.close()
        return out

    return trio.run(measure)


async def main(n: int) -> None:
    directory = Path(tempfile.mkdtemp(prefix="audit-cost-"))
    for label, destination in (("none", None), ("file", directory / "default.server.jsonl")):
        for mcp in (False, True):
            audit = AuditLog(AuditSettings(destination))
            us = await per_request_us(audit, n, mcp)
            audit.close()
            body = "yes" if mcp else "no"
            print(f"--audit-log {label:<4}  mcp body: {body:<3}  {us:6.1f} µs CPU per request")


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 20_000)
