"""OAuth2 bearer tokens over SASL: what a client sends (XOAUTH2, OAUTHBEARER) and what a server
that rejects a token says first (a base64 JSON "error challenge", before its final failure).

Both mechanisms carry the token in the clear inside base64, so the encoded response is as secret
as the token itself: callers add it to the secrets scrubbed from every reply (`responses`).
"""

from __future__ import annotations

import base64
import binascii
import json
from enum import StrEnum

from jobs.errors import Reason, check_error

# RFC 4954 section 4: an SMTP AUTH command line, CRLF included, stays within 512 octets; a longer
# initial response goes on its own line after the server's empty 334 challenge. Real access tokens
# are 1.5-3 KB, so in practice it always does (Postfix refuses them inline).
SMTP_COMMAND_LIMIT = 512
# A server's error challenge is a small JSON object (Gmail's is under 100 bytes): anything larger
# is not decoded.
MAX_CHALLENGE_CHARS = 2048


class Mechanism(StrEnum):
    """In order of preference: XOAUTH2 is what Google and Microsoft both speak; OAUTHBEARER
    (RFC 7628) only where it is all a server offers."""

    XOAUTH2 = "XOAUTH2"
    OAUTHBEARER = "OAUTHBEARER"


def choose(offered: set[str]) -> Mechanism | None:
    """The first mechanism of Mechanism's order the server offers (names upper-case)."""
    return next((m for m in Mechanism if m.value in offered), None)


def required(offered: set[str], where: str) -> Mechanism:
    """The mechanism to use (choose), or AUTH_MECHANISM_UNSUPPORTED naming what was offered."""
    mechanism = choose(offered)
    if mechanism is None:
        raise check_error(
            Reason.AUTH_MECHANISM_UNSUPPORTED,
            f"{where} offers no OAuth2 mechanism (offered: {' '.join(sorted(offered)) or 'none'})",
        )
    return mechanism


def initial_response(mechanism: Mechanism, user: str, token: str, host: str, port: int) -> str:
    """The client's first (and only) SASL message, base64."""
    if mechanism is Mechanism.XOAUTH2:
        raw = f"user={user}\x01auth=Bearer {token}\x01\x01"
    else:
        # RFC 7628 3.1: the GS2 header names the user; host and port let the server check the
        # token was meant for it.
        raw = f"n,a={_saslname(user)},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01"
    return base64.b64encode(raw.encode()).decode("ascii")


def _saslname(user: str) -> str:
    # RFC 5801: ',' and '=' in an authorization identity are written =2C and =3D.
    return user.replace("=", "=3D").replace(",", "=2C")


def responses(user: str, token: str, host: str, port: int) -> tuple[str, ...]:
    """Every encoded response this token could travel in: secrets to scrub from replies."""
    return tuple(initial_response(m, user, token, host, port) for m in Mechanism)


def abort_response(mechanism: Mechanism) -> str:
    """What answers an error challenge, so the server sends its final verdict: XOAUTH2 an empty
    line, OAUTHBEARER a single 0x01 (RFC 7628 3.2.3), base64."""
    return "" if mechanism is Mechanism.XOAUTH2 else base64.b64encode(b"\x01").decode("ascii")


def decode_challenge(text: str) -> dict[str, str] | None:
    """A server's error challenge (base64 JSON, e.g. {"status":"401","schemes":"bearer",
    "scope":"https://mail.google.com/"}) as a flat dict of strings, or None when it is not one.
    It never holds the token; it says why the token was refused."""
    text = text.strip()
    if not text or len(text) > MAX_CHALLENGE_CHARS:
        return None
    try:
        value = json.loads(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError, RecursionError):
        return None
    if not isinstance(value, dict):
        return None
    return {str(k): str(v) for k, v in value.items() if isinstance(v, str | int | float | bool)}


def describe(challenge: dict[str, str] | None) -> str:
    """The challenge in words for a result's detail, e.g. "status 401, scope https://..."."""
    if not challenge:
        return ""
    return ", ".join(f"{key} {challenge[key]}" for key in ("status", "scope", "schemes") if key in challenge)


def token_refused(where: str, challenge: dict[str, str] | None, reason: Reason) -> str:
    """The detail of a refused token: what the server's challenge said, and the usual cause."""
    said = describe(challenge)
    detail = f"{where} refused the OAuth2 access token" + (f" ({said})" if said else "")
    if reason is Reason.INVALID_CREDENTIALS:
        detail += "; usually the token is for another scope or another user, or has expired"
    return detail
