"""structlog set-up: JSON lines in production, readable lines on a terminal, never a secret."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

# Keys whose values are never written, whoever passes them.
SECRET_KEY_PARTS = ("password", "secret", "token", "credential")


def drop_secrets(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        if any(part in key.lower() for part in SECRET_KEY_PARTS):
            event_dict[key] = "***"
    return event_dict


def _safe_exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    # asyncio's default handler logs the exception's text and traceback; a library's error text
    # may quote what it was sending (an IMAP LOGIN, say). Keep asyncio's own words and the type.
    exc = context.get("exception")
    structlog.get_logger("inboxcheck.asyncio").error(
        "event_loop_error", message=context.get("message"), error=type(exc).__name__ if exc else None
    )


def install_safe_exception_handler() -> None:
    """Make the running loop report unhandled errors by type only."""
    asyncio.get_running_loop().set_exception_handler(_safe_exception_handler)


# Libraries that log what a server sent (aioimaplib: every line it does not expect, at INFO) or
# what was sent to it (raw traffic at DEBUG, the AUTH exchange included): a hostile server must not
# be able to fill the log, and nothing of a conversation belongs there. httpx and httpcore: the
# OAuth2 token requests (every request at INFO, its exchange at DEBUG).
WIRE_LOGGERS = ("aioimaplib", "aiosmtplib", "httpx", "httpcore")


def configure_logging(log_format: str = "auto", level: str = "INFO") -> None:
    """structlog for inboxcheck's own lines, and the standard library's records (arq, redis-py)
    rendered by the same processors, so every line of the process has one format."""
    if log_format == "auto":
        log_format = "console" if sys.stderr.isatty() else "json"
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        drop_secrets,
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    for name in WIRE_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("arq").setLevel(max(logging.getLevelName(level), logging.INFO))
