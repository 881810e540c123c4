"""Where audit lines go: a size-rotated file set, or standard output.

Sinks run in a worker thread (the flush task hands them a batch), so a slow or failing disk never
stalls the event loop. A file sink's current file is ``<stem>.jsonl``; when it reaches the size
limit it is renamed ``<stem>.<first seq, 12 digits>.jsonl`` and a new one starts, and the chain
simply continues into it. :func:`log_files` lists a log's files in chain order.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path

import structlog

from ..errors import SidecarError
from .record import GENESIS, line_hash

log = structlog.get_logger("trustmesh.audit")

SEGMENT_DIGITS = 12


class AuditLogUnusable(SidecarError):
    code = "ERR_AUDIT_LOG"
    http_status = 500


def log_files(current: Path) -> list[Path]:
    """Rotated segments oldest first, then the current file (if present)."""
    stem = current.name.removesuffix(".jsonl")
    pattern = re.compile(re.escape(stem) + rf"\.(\d{{{SEGMENT_DIGITS}}})\.jsonl")
    segments = []
    if current.parent.is_dir():
        for path in current.parent.iterdir():
            match = pattern.fullmatch(path.name)
            if match:
                segments.append((int(match.group(1)), path))
    files = [path for _, path in sorted(segments)]
    if current.exists():
        files.append(current)
    return files


class StdoutSink:
    describe = "stdout"

    def resume(self) -> tuple[int, str]:
        return 0, GENESIS

    def write(self, data: bytes, first_seq: int) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(1, view) :]

    def close(self) -> None:
        pass


class FileSink:
    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.describe = str(path)
        self.max_bytes = max_bytes
        self._fd: int | None = None
        self._size = 0
        self._first_seq: int | None = None  # seq of the current file's first record

    def resume(self) -> tuple[int, str]:
        """Open for appending; return the (seq, hash) of the last complete record on disk.

        A last line without its newline is a write a crash cut short: it is cut off (and
        logged), so the chain continues from the last complete record."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            self._size = os.fstat(self._fd).st_size
            if self._size:
                self._cut_torn_tail()
        except OSError as exc:
            raise AuditLogUnusable(f"cannot open audit log {self.path}: {exc.strerror}") from exc
        if self._size:
            self._first_seq = _seq_of(_first_line(self.path), self.path)
            return _last_record(self.path)
        files = log_files(self.path)[:-1] if self.path.exists() else log_files(self.path)
        return _last_record(files[-1]) if files else (0, GENESIS)

    def _cut_torn_tail(self) -> None:
        assert self._fd is not None
        start = max(0, self._size - (1 << 20))
        tail = os.pread(self._fd, self._size - start, start)
        if tail.endswith(b"\n"):
            return
        keep = start + tail.rfind(b"\n") + 1
        log.warning("audit log ended mid-record; cutting the torn write", file=str(self.path),
                    bytes=self._size - keep)  # fmt: skip
        os.ftruncate(self._fd, keep)
        self._size = keep

    def write(self, data: bytes, first_seq: int) -> None:
        if self._fd is None:
            raise OSError(f"audit log {self.path} is closed")
        if self._size and self._size + len(data) > self.max_bytes:
            self._rotate()
        if not self._size:
            self._first_seq = first_seq
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            self._size += written
            view = view[written:]

    def _rotate(self) -> None:
        assert self._fd is not None
        stem = self.path.name.removesuffix(".jsonl")
        segment = self.path.with_name(f"{stem}.{self._first_seq or 0:0{SEGMENT_DIGITS}d}.jsonl")
        os.fsync(self._fd)
        os.rename(self.path, segment)
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._size = 0
        log.info("audit log rotated", segment=str(segment))

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None


def _first_line(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.readline().rstrip(b"\n")


def _last_record(path: Path) -> tuple[int, str]:
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - (1 << 20)))
        tail = handle.read().rstrip(b"\n")
    last = tail.rsplit(b"\n", 1)[-1]
    return _seq_of(last, path), line_hash(last)


def _seq_of(line: bytes, path: Path) -> int:
    try:
        seq = json.loads(line)["seq"]
    except (ValueError, KeyError, TypeError):
        seq = None
    if not isinstance(seq, int):
        raise AuditLogUnusable(
            f"audit log {path} ends with a line that is not an audit record; move the file "
            "aside (and verify it with 'trustmesh audit verify') before starting the sidecar"
        )
    return seq
