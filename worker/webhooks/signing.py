"""Standard Webhooks signatures (https://www.standardwebhooks.com): what a receiver verifies.

A secret is random bytes, shown to people as `whsec_` + base64. Each attempt is signed afresh
(the timestamp is the attempt's, so a receiver's freshness window holds on a retry): HMAC-SHA256
of `<webhook-id>.<webhook-timestamp>.<body>`, sent as `v1,<base64>`; while a rotated secret's
previous value is still honoured, both signatures go, space-separated, and either verifies.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable

SECRET_PREFIX = "whsec_"
# 32 bytes: HMAC-SHA256's block-size advice is met, as the Standard Webhooks libraries make them.
SECRET_BYTES = 32
SIGNATURE_VERSION = "v1"

HEADER_ID = "webhook-id"
HEADER_TIMESTAMP = "webhook-timestamp"
HEADER_SIGNATURE = "webhook-signature"


class SigningSecret:
    """A signing secret's bytes; its repr and str never show them."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if not key:
            raise ValueError("a webhook secret may not be empty")
        self._key = key

    @classmethod
    def generate(cls) -> SigningSecret:
        return cls(secrets.token_bytes(SECRET_BYTES))

    @classmethod
    def parse(cls, text: str) -> SigningSecret:
        """From the `whsec_<base64>` form."""
        body = text.removeprefix(SECRET_PREFIX)
        try:
            return cls(base64.b64decode(body, validate=True))
        except ValueError:
            raise ValueError("a webhook secret is whsec_ followed by base64") from None

    def reveal(self) -> str:
        """The `whsec_<base64>` form, for the one time it is shown and for sealing."""
        return SECRET_PREFIX + base64.b64encode(self._key).decode("ascii")

    def sign(self, message: bytes) -> str:
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"

    def __repr__(self) -> str:
        return "SigningSecret(***)"

    __str__ = __repr__


def signed_content(msg_id: str, timestamp: int, body: bytes) -> bytes:
    return f"{msg_id}.{timestamp}.".encode() + body


def headers(msg_id: str, timestamp: int, body: bytes, keys: Iterable[SigningSecret]) -> dict[str, str]:
    """The three Standard Webhooks headers of one attempt, signed with every key given."""
    content = signed_content(msg_id, timestamp, body)
    return {
        HEADER_ID: msg_id,
        HEADER_TIMESTAMP: str(timestamp),
        HEADER_SIGNATURE: " ".join(key.sign(content) for key in keys),
    }
