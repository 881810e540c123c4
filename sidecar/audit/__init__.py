"""The audit trail: one hash-chained record per decision, signed checkpoints, and their verifier.

Every decision a sidecar makes — the inbound sidecar's allow or deny, the outbound sidecar's
send or refusal — is one JSON line in ``<home>/audit/<namespace>.<app-id>.jsonl`` (or standard
output). Each line carries the SHA-256 of the line before it, and every N records or T seconds a
checkpoint signed with the sidecar's SVID key vouches for the head, so editing, deleting,
reordering or truncating records, or writing a new chain, is detected by
``trustmesh audit verify``. Tamper-evident, not tamper-proof: ship the log (or at least its
checkpoints) off the host to keep the evidence.
"""

from .checkpoint import CheckpointInvalid, checkpoint_entry, verify_checkpoint
from .fields import outbound_fields
from .hop import Hop, note_body, propagate
from .log import STDOUT, AuditLog, AuditSettings
from .mcp_fields import McpSummary, summarize
from .record import CHECKPOINT, DECISION, DECISION_FIELDS, GENESIS, line_hash, rfc3339
from .sinks import AuditLogUnusable, log_files
from .verify import AppOwner, Break, Report, verify_chain, verify_files

__all__ = [
    "CHECKPOINT",
    "DECISION",
    "DECISION_FIELDS",
    "GENESIS",
    "STDOUT",
    "AppOwner",
    "AuditLog",
    "AuditLogUnusable",
    "AuditSettings",
    "Break",
    "CheckpointInvalid",
    "Hop",
    "McpSummary",
    "Report",
    "checkpoint_entry",
    "line_hash",
    "log_files",
    "note_body",
    "outbound_fields",
    "propagate",
    "rfc3339",
    "summarize",
    "verify_chain",
    "verify_checkpoint",
    "verify_files",
]
