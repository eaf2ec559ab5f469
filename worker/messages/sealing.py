"""Sealed credentials: producers encrypt the passwords with the shared key, only workers open them.

Fernet (AES-128-CBC + HMAC-SHA256) authenticates as well as encrypts, so a token that was
tampered with, or sealed with another key, fails to open instead of yielding garbage. Several
comma-separated keys may be configured to rotate: the first seals, any of them opens.
"""

from __future__ import annotations

import hashlib
import hmac
import json

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import SecretStr

from jobs.errors import InboxcheckError

# Separates the job-id HMAC key from the encryption key, though both come from one setting.
_JOB_ID_CONTEXT = b"inboxcheck job id v1"


class SecretKeyError(InboxcheckError, ValueError):
    """INBOXCHECK_SECRET_KEY cannot be used. Never carries the key."""


class SealError(InboxcheckError):
    """A sealed value that cannot be opened. Never carries the token or the key."""


def generate_key() -> str:
    return Fernet.generate_key().decode("ascii")


class Sealer:
    """Seals and opens the credentials of one request, bound to its inbox id."""

    def __init__(self, secret: SecretStr | str) -> None:
        text = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
        keys = [part.strip() for part in text.split(",") if part.strip()]
        if not keys:
            raise SecretKeyError("INBOXCHECK_SECRET_KEY: is empty")
        try:
            self._fernet = MultiFernet([Fernet(key) for key in keys])
        except (ValueError, TypeError):
            # The message never includes the key itself.
            raise SecretKeyError(
                "INBOXCHECK_SECRET_KEY: is not a Fernet key (32 url-safe base64 bytes); "
                "make one with `inboxcheck keygen`"
            ) from None
        self._job_id_key = hmac.new(keys[0].encode(), _JOB_ID_CONTEXT, hashlib.sha256).digest()

    def __repr__(self) -> str:
        return "Sealer(***)"

    def seal(self, secrets: dict[str, str], inbox_id: str) -> str:
        # The inbox id goes inside the token so a token copied onto another job fails to open.
        plain = json.dumps({"inbox_id": inbox_id, "secrets": secrets}, separators=(",", ":"))
        return self._fernet.encrypt(plain.encode()).decode("ascii")

    def open(self, token: str, inbox_id: str) -> dict[str, str]:
        try:
            plain = json.loads(self._fernet.decrypt(token.encode("ascii")))
        except (InvalidToken, UnicodeError, ValueError, TypeError):
            raise SealError("the sealed credentials cannot be opened with this worker's key") from None
        if not isinstance(plain, dict):
            raise SealError("the sealed credentials are not a JSON object")
        secrets = plain.get("secrets")
        if plain.get("inbox_id") != inbox_id or not isinstance(secrets, dict):
            raise SealError("the sealed credentials were sealed for another inbox")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in secrets.items()):
            raise SealError("the sealed credentials are not name/password pairs")
        return secrets

    def job_id(self, canonical: bytes) -> str:
        return hmac.new(self._job_id_key, canonical, hashlib.sha256).hexdigest()


def sealer_for(secret: SecretStr | None) -> Sealer | None:
    return Sealer(secret) if secret is not None and secret.get_secret_value().strip() else None
