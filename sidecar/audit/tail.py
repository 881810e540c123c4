"""Reading decisions back: filters and the one-line form ``trustmesh audit tail`` prints.

Pure functions over decoded records, so "who was denied what, and why" is a tested filter rather
than a ``jq`` recipe: ``--denied``, ``--caller`` (App ID or SPIFFE ID), ``--tool`` (a
``tools/call`` naming it) and ``--since`` (a duration back from now).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from .record import DECISION

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``90s``, ``10m``, ``2h``, ``1d`` → seconds; ValueError names the accepted form."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a duration: use a number and s, m, h or d, e.g. 10m")
    return float(match.group(1)) * _UNITS[match.group(2)]


def record_time(record: dict[str, Any]) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(str(record.get("time")).replace("Z", "+00:00"))
    except ValueError:
        return None


_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _printable(text: str) -> str:
    """Callers choose tool names and paths: never let one drive the operator's terminal
    (escape sequences) or fake a line (newlines, bidi overrides)."""
    return _UNPRINTABLE.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _app_id(spiffe_id: str | None) -> str:
    return (spiffe_id or "-").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Filter:
    denied: bool = False
    caller: str | None = None
    tool: str | None = None
    since: dt.datetime | None = None

    def matches(self, record: dict[str, Any]) -> bool:
        if record.get("kind") != DECISION:
            return False
        if self.denied and record.get("decision") != "deny":
            return False
        if self.caller is not None and self.caller not in (
            record.get("caller"),
            _app_id(record.get("caller")),
        ):
            return False
        if self.tool is not None and not (
            "tools/call" in (record.get("mcp_method") or "").split(",")
            and self.tool in (record.get("names") or ())
        ):
            return False
        if self.since is not None:
            at = record_time(record)
            if at is None or at < self.since:
                return False
        return True


def format_line(record: dict[str, Any]) -> str:
    """One readable line: when, verdict, who → whom, what, which layer/reason, status, latency."""
    when = str(record.get("time", "?"))[:23] + "Z"
    verdict = "DENY " if record.get("decision") == "deny" else "allow"
    who = f"{_app_id(record.get('caller'))} → {_app_id(record.get('callee'))}"
    what = f"{record.get('verb') or '?'} /{(record.get('path') or '').lstrip('/')}"
    if record.get("mcp_method"):
        what += f" {record['mcp_method']}"
        if record.get("names"):
            what += " " + ",".join(record["names"])
    why = f"{record.get('layer') or '-'}:{record.get('reason') or '-'}"
    if record.get("rule"):
        why += f" ({record['rule']})"
    status = record.get("status") or "-"
    took = record.get("duration_ms")
    took_text = f"{took:.1f}ms" if isinstance(took, int | float) else "-"
    direction = "in " if record.get("direction") == "inbound" else "out"
    line = f"{when} {verdict} {direction} {who}  {what}  {why}  {status} {took_text}"
    if record.get("cut"):
        line += f"  CUT {record['cut']}"
    return _printable(line)
