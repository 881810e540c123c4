"""Re-emitting children's lines with Dapr-style prefixes, and the runner's own messages.

Each child gets a :class:`LineSink`: it splits bytes into lines, writes each to the console as
``== APP - <id> == line`` (coloured on a terminal, plain otherwise) and/or to a log file (ANSI
codes stripped), and keeps the last few lines so a start-up failure can quote them.
"""

from __future__ import annotations

import collections
import datetime as dt
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO

ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
MAX_LINE = 64 * 1024  # a longer "line" is emitted in pieces rather than buffered forever
TAIL_LINES = 5

_RESET = "\x1b[0m"
COLOURS = {"app": "\x1b[34m", "sidecar": "\x1b[36m", "ca": "\x1b[35m"}


def use_colour(stream: IO[str]) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Console:
    """Where every line goes; one instance per run so colour is decided once."""

    def __init__(self, stream: IO[str] | None = None, err: IO[str] | None = None) -> None:
        self.stream = stream or sys.stdout
        self.err = err or sys.stderr
        self.colour = use_colour(self.stream)
        try:
            self.is_terminal = self.stream.isatty()
        except (AttributeError, ValueError):
            self.is_terminal = False

    def _write(self, stream: IO[str], text: str) -> None:
        try:
            stream.write(text + "\n")
            stream.flush()
        except (OSError, ValueError):
            pass  # a closed terminal must not take the run down with it

    def emit(self, prefix: str, role: str, line: str) -> None:
        if self.colour:
            self._write(self.stream, f"{COLOURS.get(role, '')}{prefix}{_RESET}{line}")
        else:
            self._write(self.stream, prefix + ANSI_RE.sub("", line))

    def info(self, text: str) -> None:
        self._write(self.stream, text)

    def warn(self, text: str) -> None:
        self._write(self.err, f"warning: {text}")

    def note(self, text: str) -> None:
        self._write(self.err, f"note: {text}")


# The sidecar's own "sidecar ready" log event, as JSON or as a readable line: the runner says
# "Started sidecar with app id …" for it, so the user sees one ready line per sidecar.
_SIDECAR_READY = re.compile(r'"event": "sidecar ready"|^\S+ \[\w+\s*\] sidecar ready(\s|$)')


def is_sidecar_ready_log(line: str) -> bool:
    return _SIDECAR_READY.search(ANSI_RE.sub("", line)) is not None


def prefix_for(role: str, app_id: str | None) -> str:
    if role == "ca":
        return "== CA == "
    return f"== {role.upper()} - {app_id} == "


class LineSink:
    """One child stream's lines: console and/or file, plus a short tail for error messages."""

    def __init__(
        self,
        console: Console,
        role: str,
        app_id: str | None,
        *,
        to_console: bool = True,
        log: IO[str] | None = None,
        quiet: Callable[[str], bool] | None = None,
    ) -> None:
        self.console = console
        self.quiet = quiet  # lines for the log file only (e.g. a second "ready" line)
        self.role = role
        self.prefix = prefix_for(role, app_id)
        self.to_console = to_console
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._file = log  # shared by a child's stdout and stderr sinks; the runner closes it

    def line(self, text: str) -> None:
        text = text.rstrip("\r")
        self.tail.append(text)
        if self.to_console and not (self.quiet is not None and self.quiet(text)):
            self.console.emit(self.prefix, self.role, text)
        if self._file is not None:
            try:
                self._file.write(self.prefix + ANSI_RE.sub("", text) + "\n")
                self._file.flush()
            except (OSError, ValueError):
                self._file = None


class LineSplitter:
    """Bytes in, complete decoded lines out (the last partial line on :meth:`flush`)."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[str]:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        while len(self._buffer) > MAX_LINE:
            lines.append(self._buffer[:MAX_LINE])
            self._buffer = self._buffer[MAX_LINE:]
        return [line.decode("utf-8", "replace") for line in lines]

    def flush(self) -> list[str]:
        rest, self._buffer = self._buffer, b""
        return [rest.decode("utf-8", "replace")] if rest else []


LOGS_DIR = "logs"


def log_path(home: Path, app_id: str) -> Path:
    """``<home>/logs/<app-id>.log``: an app's and its sidecar's lines, every run appended.

    Under the mesh home, not the app's directory: a run leaves the source tree as it was, and
    the app (another user, under root) cannot rewrite what it logged.
    """
    return Path(home) / LOGS_DIR / f"{app_id}.log"


def open_log_file(home: Path, app_id: str) -> IO[str]:
    path = log_path(home, app_id)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    log = os.fdopen(fd, "a", encoding="utf-8")
    stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    log.write(f"== RUN == {stamp} {app_id} started\n")
    log.flush()
    return log


def tail_text(lines: collections.deque[str] | list[str], limit: int = 240) -> str:
    """The last lines as one line (for a one-line error)."""
    parts = [line.strip()[:limit] for line in lines if line.strip()]
    return " | ".join(parts)
