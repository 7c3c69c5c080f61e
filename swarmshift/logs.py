"""Logging, configured once at start-up: structlog JSON lines, or a console renderer on a TTY."""

from __future__ import annotations

import logging
import sys
from typing import Literal
from urllib.parse import urlsplit

import structlog

LogFormat = Literal["auto", "json", "console"]
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure(fmt: LogFormat = "auto", level: str = "info", stream=None) -> None:
    """Route structlog (and the stdlib loggers of our dependencies) to one stream.

    JSON is one object per line with `timestamp` (ISO 8601, UTC), `level` and `event`.
    """
    stream = stream or sys.stdout
    if hasattr(stream, "reconfigure"):
        # One event per line, written as it happens: a log collector (or a test) reading a pipe
        # must not wait for a block buffer to fill.
        stream.reconfigure(line_buffering=True)
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    renderer = (
        structlog.dev.ConsoleRenderer(colors=stream.isatty())
        if fmt == "console"
        else structlog.processors.JSONRenderer(sort_keys=False)
    )
    threshold = LEVELS.get(level.lower(), logging.INFO)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    # Libraries (urllib3, aiohttp.access) log through stdlib; keep them quiet and on the same stream.
    logging.basicConfig(stream=stream, level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")


def redact_url(url: str) -> str:
    """A URL as logs may show it: scheme and host only.

    Webhook URLs carry their secret in the path (Slack's `/services/T…/B…/<token>`) or the
    query, and any URL may carry `user:password@`; none of that may reach a log line.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<url redacted>"
    if not parts.scheme or not host:
        return "<url redacted>"
    hidden = parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password
    return f"{parts.scheme}://{host}{port}" + ("/<redacted>" if hidden else "")


def redact(text: str, *urls: str) -> str:
    """`text` (an error message, say) with every one of `urls` in it redacted."""
    for url in sorted((u for u in urls if u), key=len, reverse=True):
        text = text.replace(url, redact_url(url))
    return text


def get(name: str | None = None):
    return structlog.get_logger(name) if name else structlog.get_logger()
