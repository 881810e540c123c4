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


def configure_logging(level: str = "info", *, json_output: bool | None = None, stream=None) -> None:
    stream = stream or sys.stderr
    chosen = os.environ.get(FORMAT_ENV, "").lower()
    if json_output is None and chosen in ("json", "console"):
        json_output = chosen == "json"
    if json_output is None:
        json_output = not stream.isatty()
    renderer = (
        structlog.processors.JSONRenderer()
        if json_output
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=True,
    )
