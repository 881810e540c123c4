"""Walking an audit log: sequence, chain, checkpoints, and the head it must reach.

The verifier names the first line that is wrong, not merely the first place the chain stops
matching: when a record's successor no longer matches it but the successor still matches *its*
successor, the record itself was edited, and that is the line reported. A record deleted or
two records swapped show as a ``seq`` out of order at the line where it happens. Truncating the
newest records leaves a chain that is intact as far as it goes, so it is caught only against a
head seen elsewhere: the running sidecar's (``/v1/status``) or a checkpoint copied off the host.

A last line without its newline is what a crash (``kill -9``) mid-write leaves: it is reported
as a warning and the log verifies up to the last complete record.
"""

from __future__ import annotations

import collections
import itertools
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from identity import AppIdentity, IdentityError, IdentityMap, SpiffeId, TrustBundle

from .checkpoint import CheckpointInvalid, verify_checkpoint
from .record import CHECKPOINT, DECISION, GENESIS, encode, line_hash


@dataclass(frozen=True)
class Break:
    file: Path | None
    line: int | None
    message: str

    def __str__(self) -> str:
        where = (
            ""
            if self.file is None
            else f"{self.file}:{self.line}: "
            if self.line
            else f"{self.file}: "
        )
        return where + self.message


@dataclass
class Line:
    file: Path
    number: int
    raw: bytes
    entry: dict[str, Any] | None  # None: not a JSON object


@dataclass
class Report:
    records: int = 0
    checkpoints: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS
    owner: str | None = None
    warnings: list[str] = field(default_factory=list)
    error: Break | None = None
    seen: dict[int, tuple[str, Line]] = field(default_factory=dict)  # watched seq → hash, line
    last: Line | None = None

    @property
    def intact(self) -> bool:
        return self.error is None


def iter_lines(files: Sequence[Path], report: Report) -> Iterator[Line]:
    """Lines one at a time (a log may be many rotated files of 64 MiB: never all in memory)."""
    for index, path in enumerate(files):
        with path.open("rb") as handle:
            for number, raw in enumerate(handle, 1):
                if raw.endswith(b"\n"):
                    yield Line(path, number, raw[:-1], _parse(raw[:-1]))
                elif index == len(files) - 1:
                    report.warnings.append(
                        f"{path}:{number}: incomplete last record ignored (a write cut short, "
                        "as a crash leaves it)"
                    )
                else:
                    yield Line(path, number, raw, None)


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        entry = json.loads(raw)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) else None


def _owner_of(entry: dict[str, Any]) -> str | None:
    if entry.get("kind") == CHECKPOINT:
        return entry.get("spiffe_id")
    return entry.get("callee") if entry.get("direction") == "inbound" else entry.get("caller")


def _owner_and_lines(lines: Iterator[Line]) -> tuple[str | None, Iterator[Line]]:
    """Whose log this is, as its first decision says (a forger's checkpoint does not decide);
    reads ahead only as far as that first decision."""
    seen: list[Line] = []
    owner = None
    for line in lines:
        seen.append(line)
        if line.entry is not None and line.entry.get("kind") == DECISION:
            owner = _owner_of(line.entry)
            break
    else:
        checkpoints = [x for x in seen if x.entry is not None and x.entry.get("kind") == CHECKPOINT]
        owner = _owner_of(checkpoints[0].entry) if checkpoints else None  # type: ignore[arg-type]
    return owner, itertools.chain(seen, lines)


@dataclass(frozen=True)
class AppOwner:
    """Whose log it must be: App ``app_id`` in ``namespace``, which only the SPIFFE IDs the
    mesh's identity map derives for it may sign (its binding alone, or its Dapr and default
    ServiceAccount forms when unbound). Any other ServiceAccount of the namespace is not it."""

    namespace: str
    app_id: str
    identity_map: IdentityMap

    def holds(self, owner: str) -> bool:
        try:
            sid = SpiffeId.parse(owner)
            app = AppIdentity(sid.trust_domain, self.namespace, self.app_id)
        except IdentityError:
            return False
        return self.identity_map.holds(sid, app)

    def holders(self, owner: str) -> str:
        """The SPIFFE IDs that hold the App, in the trust domain ``owner`` names."""
        try:
            domain = SpiffeId.parse(owner).trust_domain
            app = AppIdentity(domain, self.namespace, self.app_id)
        except IdentityError:
            return "a SPIFFE ID of its trust domain"
        return " or ".join(str(sid) for sid in self.identity_map.spiffe_ids_for(app))

    def __str__(self) -> str:
        return f"{self.namespace}/{self.app_id}"


def _windows(lines: Iterator[Line]) -> Iterator[tuple[Line, Line | None, Line | None]]:
    """Each line with the two after it (what naming an edited record needs)."""
    window: collections.deque[Line] = collections.deque()
    for line in lines:
        window.append(line)
        if len(window) == 3:
            yield window[0], window[1], window[2]
            window.popleft()
    while window:
        yield window[0], window[1] if len(window) > 1 else None, None
        window.popleft()


def verify_lines(
    lines: Iterable[Line],
    report: Report,
    bundle: TrustBundle | None,
    expected_owner: AppOwner | None = None,
    watch: Iterable[int] = (),
) -> Report:
    """Walk the chain. ``expected_owner``: the App whose sidecar must own the log; ``watch``:
    seqs whose hash and place to remember (heads to compare with afterwards)."""
    watched = set(watch)
    report.owner, stream = _owner_and_lines(iter(lines))
    prev, expected_seq = GENESIS, 1
    for line, after, beyond in _windows(stream):
        report.last = line
        if expected_owner and report.owner and not expected_owner.holds(report.owner):
            report.error = Break(
                line.file,
                line.number,
                f"log of {report.owner}, not of {expected_owner} "
                f"(held only by {expected_owner.holders(report.owner)})",
            )
            return report
        error = _check_line(line, prev, expected_seq, report, bundle)
        if error is None and after is not None and _mismatch_is_this_line(line, after, beyond):
            error = (
                "record changed after it was written "
                "(its hash no longer matches the next record's prev)"
            )
        if error is not None:
            report.error = Break(line.file, line.number, error)
            return report
        entry = line.entry
        assert entry is not None
        prev, expected_seq = line_hash(line.raw), entry["seq"] + 1
        report.head_seq, report.head_hash = entry["seq"], prev
        if entry["seq"] in watched:
            report.seen[entry["seq"]] = (prev, line)
        if entry.get("kind") == CHECKPOINT:
            report.checkpoints += 1
        else:
            report.records += 1
    if bundle is None and report.checkpoints:
        report.warnings.append("checkpoint signatures not checked: no trust bundle given")
    return report


def _mismatch_is_this_line(this: Line, after: Line, beyond: Line | None) -> bool:
    """The next record does not chain to this one, but chains on to its own successor: the
    next record is genuine, so this one is what changed."""
    if after.entry is None or after.entry.get("prev") == line_hash(this.raw):
        return False
    in_sequence = after.entry.get("seq") == this.entry.get("seq", 0) + 1  # type: ignore[union-attr]
    if beyond is None:
        return in_sequence
    return (
        in_sequence
        and beyond.entry is not None
        and (beyond.entry.get("prev") == line_hash(after.raw))
    )


def _check_line(
    line: Line, prev: str, expected_seq: int, report: Report, bundle: TrustBundle | None
) -> str | None:
    entry = line.entry
    if entry is None:
        return "not a JSON record"
    seq = entry.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool):
        return "record has no integer seq"
    if seq != expected_seq:
        if expected_seq == 1:
            return f"log starts at seq {seq}: the records before it are missing"
        if seq > expected_seq:
            return f"seq {seq} where {expected_seq} was expected: records deleted or reordered"
        return f"seq {seq} where {expected_seq} was expected: records reordered or duplicated"
    if entry.get("prev") != prev:
        return "chain broken: prev is not the hash of the record before"
    kind = entry.get("kind")
    if kind not in (DECISION, CHECKPOINT):
        return f"unknown record kind {kind!r}"
    owner = _owner_of(entry)
    if report.owner is not None and owner != report.owner:
        return f"record belongs to {owner}, not to this log's sidecar {report.owner}"
    if kind == CHECKPOINT and bundle is not None:
        try:
            verify_checkpoint(entry, bundle)
        except CheckpointInvalid as exc:
            return f"forged checkpoint: {exc}"
    return None


def check_head(report: Report, seq: int, hash_: str, source: str) -> None:
    """The log must still hold the record ``seq`` with hash ``hash_`` (seen by ``source``);
    ``seq`` must have been among the walk's ``watch``."""
    if report.error is not None or seq == 0:  # seq 0: the sidecar has written nothing yet
        return
    seen = report.seen.get(seq)
    if seen is not None:
        found, line = seen
        if found != hash_:
            report.error = Break(
                line.file, line.number, f"record {seq} differs from the one {source} holds"
            )
        return
    report.error = Break(
        report.last.file if report.last else None,
        None,
        f"log ends at seq {report.head_seq} but {source} has seq {seq}: "
        "the newest records were removed",
    )


def verify_copied_checkpoint(
    report: Report, checkpoint: dict[str, Any], bundle: TrustBundle | None
) -> None:
    if report.error is not None:
        return
    if bundle is not None:
        try:
            verify_checkpoint(checkpoint, bundle)
        except CheckpointInvalid as exc:
            report.error = Break(None, None, f"the copied checkpoint is not genuine: {exc}")
            return
    if report.owner is not None and checkpoint.get("spiffe_id") != report.owner:
        report.error = Break(
            None,
            None,
            f"the copied checkpoint is from {checkpoint.get('spiffe_id')}, not {report.owner}",
        )
        return
    check_head(report, checkpoint["seq"], line_hash(encode(checkpoint)), "the copied checkpoint")


def verify_files(
    files: Sequence[Path],
    bundle: TrustBundle | None,
    *,
    expected_owner: AppOwner | None = None,
    watch: Iterable[int] = (),
) -> Report:
    report = Report()
    return verify_lines(iter_lines(files, report), report, bundle, expected_owner, watch)


def verify_chain(path: Path) -> int:
    """Walk one file's chain (no signatures); return its decision count or raise ``ValueError``
    naming the line of the first break."""
    report = verify_files([path], None)
    if report.error is not None:
        raise ValueError(
            f"audit chain broken at line {report.error.line} of {path}: {report.error.message}"
        )
    return report.records
