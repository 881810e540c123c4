"""The audit log a sidecar writes: records chained in batches, written by a flush task.

``record`` is on the request path, so it only completes the fields and appends them, with the
time, to a list; a task wakes when the list stops being empty, waits up to ``flush_interval``
(100 ms) to gather a batch, encodes and chains the batch in one pass (a record's JSON, then the
SHA-256 the next one carries) and hands the bytes to the sink in a worker thread. ``close``
(shutdown, SIGTERM) writes whatever is left and a last checkpoint, so a drained sidecar loses
nothing; ``kill -9`` loses at most the unflushed batch and leaves a log that verifies up to its
last complete record.

When the disk fails the batch is kept and retried; when the buffer is full new records are
dropped and counted. Both show on ``/v1/status`` and ``/metrics``; with ``fail_closed`` the proxies
ask :meth:`refusal` first and answer 503 instead of serving a request they cannot record.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import trio

from identity import X509Svid

from ..policy.decision import Decision
from ..tracing import Tracing
from . import hop as hops
from .checkpoint import checkpoint_entry
from .record import GENESIS, as_text, decision_line, encode, line_hash
from .sinks import FileSink, StdoutSink

log = structlog.get_logger("trustmesh.audit")

STDOUT = "stdout"
ENCODE_SLICE = 128  # records encoded by the flush between two chances for requests to run


@dataclass
class AuditSettings:
    destination: Path | str | None  # a file path, "stdout", or None (records not kept)
    fail_closed: bool = False
    max_buffer: int = 10_000  # records waiting for the disk
    flush_interval: float = 0.1
    checkpoint_every: int = 1000  # records
    checkpoint_seconds: float = 60.0
    max_file_bytes: int = 64 * 1024 * 1024


class AuditLog:
    def __init__(
        self,
        settings: AuditSettings | Path | None,
        *,
        signer: Callable[[], X509Svid | None] = lambda: None,
        tracing: Tracing | None = None,
    ) -> None:
        if not isinstance(settings, AuditSettings):
            settings = AuditSettings(settings)
        self.settings = settings
        self.signer = signer
        self.tracing = tracing or Tracing()
        destination = settings.destination
        if destination is None:
            self.sink = None
        elif destination == STDOUT:
            self.sink = StdoutSink()
        else:
            self.sink = FileSink(Path(destination), settings.max_file_bytes)
        self.enabled = self.sink is not None
        self._seq, self._prev = self.sink.resume() if self.sink else (0, GENESIS)
        self.written_seq, self.written_hash = self._seq, self._prev
        # Two stages: records taken but not yet encoded — (time, fields), or (time, records)
        # where the N-th record asked for a checkpoint — and encoded, chained lines not yet
        # written; (_seq, _prev) is the head of the encoded ones.
        self._pending: list[tuple[float, dict[str, Any] | int]] = []
        self._lines: list[bytes] = []
        self._line_count = 0  # lines in _lines (a batch kept after a failed write is one item)
        self._lines_first_seq = self._seq + 1
        self._since_checkpoint = 0  # records taken since the last checkpoint was asked for
        self._signed_records = 0  # the `records` the last signed checkpoint vouched for
        self._last_checkpoint = time.monotonic()
        self._wake: trio.Event | None = None
        self.records = 0
        self.checkpoints = 0
        self.dropped = 0
        self.write_errors = 0
        self.last_error: str | None = None
        self._failing = False

    # --- the request path ---------------------------------------------------------------

    def begin(self, direction: str, headers: Iterable[tuple[bytes, bytes]], verb: bytes):
        """Open the hop of one request (the trace context it carries, its start time)."""
        hop = hops.Hop(direction, headers, verb, self.tracing)
        hops.enter(hop)
        return hop

    def refusal(self) -> Decision | None:
        """With ``fail_closed``: the denial to answer while records cannot be kept."""
        if not self.settings.fail_closed or self.healthy:
            return None
        why = "its buffer is full" if self.buffer_full else f"writing failed: {self.last_error}"
        return Decision.deny(
            "audit",
            "ERR_AUDIT_UNAVAILABLE",
            f"request refused: the audit log cannot record it ({why})",
            503,
        )

    def record(self, hop: hops.Hop | None = None, **fields: Any) -> None:
        """One decision. ``hop`` fills in what the proxy did not: MCP method, names, argument
        keys, trace id and duration; its span (if any) ends here."""
        if hop is not None:
            hops.leave()
            if hop.span is None and hop.tracing.enabled:
                hop.ensure_span()
            if "mcp_method" not in fields:
                summary = hop.summary()
                if summary is not hops.EMPTY:  # no MCP body: the three stay null
                    fields["mcp_method"] = summary.method
                    fields["names"] = list(summary.names) or None
                    fields["arg_keys"] = list(summary.arg_keys) or None
            if "trace_id" not in fields:
                fields["trace_id"] = hop.trace_id()
            if "duration_ms" not in fields:
                fields["duration_ms"] = round(hop.elapsed() * 1000, 3)
            if hop.span is not None:
                hop.tracing.finish(hop.span, hop, fields)
        if fields.get("decision") == "deny":
            log.warning("request denied", **{k: v for k, v in fields.items() if v is not None})
        if self.sink is None:
            return
        pending = self._pending
        if len(pending) + self._line_count >= self.settings.max_buffer:
            self.dropped += 1
            return
        if not pending and not self._lines and self._wake is not None:
            self._wake.set()
        now = time.time()
        pending.append((now, fields))
        self.records += 1
        self._since_checkpoint += 1
        if self._since_checkpoint >= self.settings.checkpoint_every:
            # Signed in the flush, right after this record: the request that happens to be the
            # N-th does not pay for encoding N records and a signature.
            pending.append((now, self.records))
            self._since_checkpoint = 0

    def _encode_pending(self, limit: int | None = None) -> None:
        """Encode and chain the records taken since the last call (at most ``limit``), in the
        order taken (and the checkpoints asked for among them, each where it was asked)."""
        pending = self._pending
        if not pending:
            return
        if limit is not None and len(pending) > limit:
            pending, self._pending = pending[:limit], pending[limit:]
        else:
            self._pending = []
        seq, prev = self._seq, self._prev
        if not self._lines:
            self._lines_first_seq = seq + 1
        lines = self._lines
        sha256 = hashlib.sha256
        count = 0
        for ts, fields in pending:
            if type(fields) is int:  # a checkpoint over everything before it
                self._seq, self._prev = seq, prev
                self._line_count += count
                count = 0
                self._sign(fields)
                seq, prev = self._seq, self._prev
                continue
            seq += 1
            try:
                line = decision_line(seq, ts, fields, prev)
            except (TypeError, ValueError):  # a value json cannot write: recorded as its text
                line = decision_line(seq, ts, as_text(fields), prev)
            prev = sha256(line).hexdigest()
            lines.append(line + b"\n")
            count += 1
        self._line_count += count
        self._seq, self._prev = seq, prev

    def _append(self, entry: dict[str, Any]) -> None:
        """A line after the encoded head (callers encode what comes before it first)."""
        line = encode(entry)
        if not self._lines:
            self._lines_first_seq = entry["seq"]
            if self._wake is not None:
                self._wake.set()
        self._lines.append(line + b"\n")
        self._line_count += 1
        self._seq, self._prev = entry["seq"], line_hash(line)

    def checkpoint(self) -> bool:
        """Sign the current head (the last record taken) with the SVID, now; False when there
        is no SVID yet (the next try is a period or N records later)."""
        if self.sink is None:
            return False
        self._encode_pending()
        self._since_checkpoint = 0
        return self._sign(self.records)

    def _sign(self, records: int) -> bool:
        """Append a checkpoint over the encoded head, which covers ``records`` records."""
        self._last_checkpoint = time.monotonic()
        svid = self.signer()
        if svid is None:
            return False
        self._append(checkpoint_entry(self._seq + 1, time.time(), self._prev, records, svid))
        self.checkpoints += 1
        self._signed_records = records
        return True

    def _checkpoint_unsigned(self) -> None:
        """A checkpoint over the head unless one already covers every record taken."""
        self._encode_pending()  # signs the checkpoints the N-th records asked for
        if self._unsigned:
            self.checkpoint()

    @property
    def _unsigned(self) -> bool:
        """Records were taken since the last signed checkpoint."""
        return self.records > self._signed_records

    # --- health -------------------------------------------------------------------------

    @property
    def buffer_full(self) -> bool:
        return self.buffered >= self.settings.max_buffer

    @property
    def healthy(self) -> bool:
        return not self._failing and not self.buffer_full

    @property
    def buffered(self) -> int:
        return len(self._pending) + self._line_count

    def status(self) -> dict[str, Any]:
        return {
            "destination": None if self.sink is None else self.sink.describe,
            "head": {"seq": self.written_seq, "hash": self.written_hash},
            "buffered": self.buffered,
            "records": self.records,
            "checkpoints": self.checkpoints,
            "dropped": self.dropped,
            "write_errors": self.write_errors,
            "healthy": self.healthy,
            "last_error": self.last_error,
            "fail_closed": self.settings.fail_closed,
        }

    # --- the flush task -----------------------------------------------------------------

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        if self.sink is None:
            return
        while True:
            self._wake = trio.Event()
            if self._pending or self._lines:
                self._wake.set()
            due = self._last_checkpoint + self.settings.checkpoint_seconds - time.monotonic()
            with trio.move_on_after(max(0.0, due) if self._unsigned else math.inf):
                await self._wake.wait()
                await trio.sleep(self.settings.flush_interval)
            if self._unsigned and (
                time.monotonic() - self._last_checkpoint >= self.settings.checkpoint_seconds
            ):
                self._checkpoint_unsigned()
            await self.flush()
            if self._failing:
                await trio.sleep(self.settings.flush_interval)  # retry, not spin

    async def flush(self) -> None:
        while len(self._pending) > ENCODE_SLICE:
            # A large batch is encoded a slice at a time, letting requests run in between.
            self._encode_pending(ENCODE_SLICE)
            await trio.lowlevel.checkpoint()
        batch = self._take()
        if batch is None:
            return
        data, first_seq, _, head = batch
        try:
            await trio.to_thread.run_sync(self.sink.write, data, first_seq)
        except OSError as exc:
            self._failed(batch, exc)
            return
        self._written(head)

    def _take(self) -> tuple[bytes, int, int, tuple[int, str]] | None:
        """Everything taken so far, encoded and chained: (bytes, first seq, records, head)."""
        if self.sink is None:
            return None
        self._encode_pending()
        if not self._lines:
            return None
        batch = (b"".join(self._lines), self._lines_first_seq, self._line_count)
        self._lines, self._line_count = [], 0
        return (*batch, (self._seq, self._prev))

    def _failed(self, batch: tuple[bytes, int, int, tuple[int, str]], exc: OSError) -> None:
        self.write_errors += 1
        if not self._failing:
            log.error("audit log write failed", error=str(exc))
        self._failing = True
        self.last_error = exc.strerror or str(exc)
        # Kept, in order, ahead of anything encoded meanwhile: the chain must not skip them.
        data, first_seq, count, _ = batch
        self._lines.insert(0, data)
        self._line_count += count
        self._lines_first_seq = first_seq

    def _written(self, head: tuple[int, str]) -> None:
        if self._failing:
            log.info("audit log writable again")
        self._failing = False
        self.written_seq, self.written_hash = head

    def close(self) -> None:
        """Shutdown: a last checkpoint, everything buffered written (synchronously), file closed."""
        if self.sink is None:
            return
        self._checkpoint_unsigned()
        batch = self._take()
        if batch is not None:
            data, first_seq, _, head = batch
            try:
                self.sink.write(data, first_seq)
            except OSError as exc:
                self._failed(batch, exc)
                log.error("audit records lost at shutdown", records=self.buffered, error=str(exc))
            else:
                self._written(head)
        self.sink.close()
        self.sink = None
