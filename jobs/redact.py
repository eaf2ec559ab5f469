"""Removing secrets from text a server or library produced before anyone sees it."""

from __future__ import annotations

import base64
from collections.abc import Iterable

MASK = "***"


def _forms(secret: str) -> set[str]:
    raw = secret.encode()
    encoded = base64.b64encode(raw).decode()
    # Servers echo what they were sent: an SMTP AUTH line base64-encoded, an IMAP LOGIN argument
    # as an IMAP quoted string (RFC 3501: a backslash before each '"' and '\\').
    quoted = secret.replace("\\", "\\\\").replace('"', '\\"')
    return {secret, encoded, encoded.rstrip("="), quoted}


def secret_forms(secrets: Iterable[str]) -> set[str]:
    """Every form of every secret that scrub() masks."""
    return {form for secret in secrets if secret for form in _forms(secret)}


def scrub(text: str, secrets: Iterable[str]) -> str:
    # Longest first across all secrets: when one password begins another (Secret1, Secret1-b),
    # masking the shorter first would leave the longer one's tail behind.
    for form in sorted(secret_forms(secrets), key=len, reverse=True):
        text = text.replace(form, MASK)
    return text


# What is kept of an answer that is not the protocol at all (an SSH banner, a database's
# handshake): enough for a person to recognise what answered, too little to carry away anything
# the service happened to reach.
EXCERPT_CHARS = 64
_ELLIPSIS = "..."


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """At most `limit` characters of `text`, each printable ASCII: anything else (control bytes,
    terminal escapes, binary, non-ASCII) becomes "?"."""
    printable = "".join(ch if " " <= ch <= "~" else "?" for ch in text.strip()[: limit + 1])
    if len(printable) <= limit:
        return printable
    return printable[: limit - len(_ELLIPSIS)] + _ELLIPSIS
