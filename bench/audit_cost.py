"""What auditing costs per request: CPU time of ``AuditLog.record`` for one realistic record.

The inbound sidecar writes one record per request. This branch has no switch to turn the
audit log off in a running sidecar, so its cost is measured in-process instead, the same
record written N times with the log on tmpfs (/dev/shm: the write syscall without a disk), on
the bench's own temp dir (a disk here), and with no file at all (JSON encoding and the hash
chain only). CPU time, not wall time, so a busy machine blurs it less.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from sidecar.audit import AuditLog
from sidecar.logsetup import configure_logging

RECORDS = 20_000
FIELDS = {
    "callee": "spiffe://public/ns/default/bench-mcp-server",
    "caller": "spiffe://public/ns/default/bench-mcp-client",
    "verb": "POST",
    "method": "mcp",
    "decision": "allow",
    "layer": "mcp",
    "reason": "granted",
    "rule": "tool get_forecast",
    "message": None,
    "status": 200,
    "policy_version": "v12",
    "duration_ms": 0.812,
}


def _per_record(path: Path | None) -> float:
    log = AuditLog(path)
    try:
        started = time.process_time()
        for _ in range(RECORDS):
            log.record(**FIELDS)
        return (time.process_time() - started) / RECORDS * 1e6
    finally:
        log.close()


def audit_cost(workdir: Path) -> dict[str, float]:
    """µs of CPU per audit record, by where the log lives."""
    configure_logging("info")  # as a sidecar runs: the allow path's debug line is filtered
    out = {}
    shm = Path("/dev/shm")  # noqa: S108 - tmpfs on purpose; a private temp dir inside it
    if shm.is_dir():
        with tempfile.TemporaryDirectory(dir=shm) as tmp:
            out["tmpfs"] = _per_record(Path(tmp) / "audit.jsonl")
    out["disk"] = _per_record(workdir / "audit-cost" / "audit.jsonl")
    out["no file"] = _per_record(None)
    return out
