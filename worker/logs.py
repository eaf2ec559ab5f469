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


def configure_logging(log_format: str = "auto", level: str = "INFO") -> None:
    if log_format == "auto":
        log_format = "console" if sys.stderr.isatty() else "json"
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            drop_secrets,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # The protocol libraries log raw traffic at DEBUG, and raw traffic holds the AUTH exchange.
    for name in ("aioimaplib", "aiosmtplib", "arq"):
        logging.getLogger(name).setLevel(max(logging.getLevelName(level), logging.INFO))
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
