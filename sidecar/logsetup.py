"""structlog configuration: JSON lines when not on a terminal, readable lines when on one.

A process whose output is relayed by another (a sidecar under ``trustmesh run``) writes to a
pipe even when the user watches a terminal; the relaying process says which format the user
sees with ``TRUSTMESH_LOG_FORMAT=console|json`` (readable lines are then uncoloured: the
relay colours its own prefixes).
"""

from __future__ import annotations

import logging
import os
import sys

import structlog

FORMAT_ENV = "TRUSTMESH_LOG_FORMAT"


def plain_values(_logger, _method, event: dict) -> dict:
    """For readable lines: lists as ``a,b`` and mappings as ``k:v,…`` instead of Python reprs
    (``names=['add']``), so a line reads as text and copies into a shell without quotes."""

    def plain(value):
        if isinstance(value, list | tuple | set | frozenset):
            return ",".join(str(plain(v)) for v in value) or "-"
        if isinstance(value, dict):
            return ",".join(f"{k}:{plain(v)}" for k, v in value.items()) or "-"
        return value

    return {key: plain(value) for key, value in event.items()}


def configure_logging(level: str = "info", *, json_output: bool | None = None, stream=None) -> None:
    stream = stream or sys.stderr
    chosen = os.environ.get(FORMAT_ENV, "").lower()
    if json_output is None and chosen in ("json", "console"):
        json_output = chosen == "json"
    if json_output is None:
        json_output = not stream.isatty()
    renderers = (
        [structlog.processors.JSONRenderer()]
        if json_output
        else [plain_values, structlog.dev.ConsoleRenderer(colors=stream.isatty())]
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            *renderers,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=True,
    )
