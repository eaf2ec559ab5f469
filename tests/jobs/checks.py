"""Building requests and options for engine tests against the loopback servers, and reading
what comes back."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
from typing import Any

from jobs.destinations import DestinationPolicy, parse_networks
from jobs.options import CheckOptions
from jobs.request import ValidationRequest, parse_request

LOOPBACK = "127.0.0.1"
# Short enough for a quick suite, long enough that a loaded 2-core CI box never trips it falsely.
STEP_TIMEOUT_S = 2.0
# "TIMEOUT within the limit plus one second"
TIMEOUT_SLACK_S = 1.0
# A port that refuses connections: bound for the whole test run but never listening, so the
# kernel answers every SYN with a reset and no other process can take it meanwhile.
_REFUSER = socket.socket()
_REFUSER.bind((LOOPBACK, 0))
CLOSED_PORT: int = _REFUSER.getsockname()[1]
# Every test server is on loopback, which the default policy refuses: tests allow it explicitly,
# as an operator would for development.
LOOPBACK_NETWORKS = "127.0.0.0/8,::1/128"
ALLOW_LOOPBACK = DestinationPolicy(allowed_networks=parse_networks(LOOPBACK_NETWORKS))


def request(**fields: Any) -> ValidationRequest:
    """A CUSTOM_SMTP request on loopback; fields override, unset endpoints point nowhere."""
    raw: dict[str, Any] = {
        "inbox_type": "CUSTOM_SMTP",
        "email": "ann@inboxcheck.test",
        "smtp_password": "not-the-password",
        "smtp_host": LOOPBACK,
        "smtp_port": CLOSED_PORT,
        "imap_host": LOOPBACK,
        "imap_port": CLOSED_PORT,
    }
    raw.update(fields)
    return parse_request(raw)


def options(ca_file: str, step_timeout: float = STEP_TIMEOUT_S, **kwargs: Any) -> CheckOptions:
    kwargs.setdefault("destinations", ALLOW_LOOPBACK)
    return CheckOptions(
        step_timeout=step_timeout, ca_file=ca_file, ehlo_hostname="client.inboxcheck.test", **kwargs
    )


_CUT_MARKER = re.compile(r"… \[(\d+) more characters\]$")


def split_marker(text: str) -> tuple[str, int | None]:
    """A capped reply text's head, and how many characters its marker says were left off."""
    match = _CUT_MARKER.search(text)
    return (text[: match.start()], int(match.group(1))) if match else (text, None)


def leaked_part(text: str, secret: str) -> str | None:
    """The longest start of `secret` (four characters or more) found in `text`."""
    return next((secret[:n] for n in range(len(secret), 3, -1) if secret[:n] in text), None)


async def set_within(event: threading.Event, seconds: float) -> bool:
    """Whether a server thread sets `event` within `seconds`."""
    return await asyncio.to_thread(event.wait, seconds)


def cut_short(logs: list[dict[str, Any]]) -> list[tuple[str, bool, float]]:
    """The goodbyes ended by their bound: (protocol, whether the server had answered, bound)."""
    return [(e["protocol"], e["answered"], e["bound_s"]) for e in logs if e["event"] == "goodbye_cut_short"]
