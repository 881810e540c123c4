"""The audit log: one JSON line per inbound decision, hash-chained.

Every decision the inbound sidecar makes (allowed or denied, and by which layer and rule) is
appended to ``<home>/audit/<namespace>.<app-id>.jsonl`` and logged. Each record carries the
SHA-256 of the previous line (``prev``), so deleting or editing a line breaks the chain that
:func:`verify_chain` walks — tamper-evident, not tamper-proof: whoever can rewrite the whole file
can rewrite the chain, so ship the log off the host for that.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger("trustmesh.audit")

GENESIS = "0" * 64


def _last_line_hash(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 65536))
            tail = handle.read().rstrip(b"\n")
    except FileNotFoundError:
        return GENESIS
    if not tail:
        return GENESIS
    last = tail.rsplit(b"\n", 1)[-1]
    return hashlib.sha256(last).hexdigest()


class AuditLog:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._handle = None
        self._prev = GENESIS
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._prev = _last_line_hash(path)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            self._handle = os.fdopen(fd, "ab", buffering=0)

    def record(self, **fields: Any) -> None:
        entry = {"ts": round(time.time(), 6), **fields, "prev": self._prev}
        line = json.dumps(entry, separators=(",", ":"), sort_keys=False).encode()
        self._prev = hashlib.sha256(line).hexdigest()
        if self._handle is not None:
            self._handle.write(line + b"\n")
        if fields.get("decision") == "deny":
            log.warning("request denied", **fields)
        else:
            log.debug("request allowed", **fields)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def verify_chain(path: Path) -> int:
    """Walk the chain; return the number of records, or raise ``ValueError`` at the first break."""
    prev = GENESIS
    count = 0
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            line = line.rstrip(b"\n")
            if json.loads(line).get("prev") != prev:
                raise ValueError(f"audit chain broken at line {number} of {path}")
            prev = hashlib.sha256(line).hexdigest()
            count += 1
    return count
