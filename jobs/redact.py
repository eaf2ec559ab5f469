"""Removing secrets from text a server or library produced before anyone sees it."""

from __future__ import annotations

import base64
from collections.abc import Iterable

MASK = "***"


def _forms(secret: str) -> set[str]:
    raw = secret.encode()
    # Servers that echo a bad AUTH line echo it base64-encoded, so those forms count too.
    return {secret, base64.b64encode(raw).decode(), base64.b64encode(raw).decode().rstrip("=")}


def scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if not secret:
            continue
        for form in sorted(_forms(secret), key=len, reverse=True):
            text = text.replace(form, MASK)
    return text
