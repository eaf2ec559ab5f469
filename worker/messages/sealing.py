"""Sealed credentials: producers encrypt the passwords with the shared key, only workers open them.

Fernet (AES-128-CBC + HMAC-SHA256) authenticates as well as encrypts, so a token that was
tampered with, or sealed with another key, fails to open instead of yielding garbage. Several
comma-separated keys may be configured to rotate: the first seals, any of them opens.

Inside the token the secrets travel with what they may be used for: the inbox id and a digest of
every request field that decides where and how they are sent (`destination_digest`). Anyone who
can write to Redis can rewrite a job's request, never the token: a request pointed at another
host, port, TLS mode or user name no longer matches its token, and the worker refuses it before
connecting anywhere. Fernet's own timestamp dates the token, so a queued token can expire.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import SecretStr

from jobs.errors import InboxcheckError

# Separate the job-id and secret-digest HMAC keys from the encryption key, though all come from
# one setting.
_JOB_ID_CONTEXT = b"inboxcheck job id v1"
_SECRET_DIGEST_CONTEXT = b"inboxcheck secret digest v1"
# The sealed plaintext's format; 1 (no destination) is refused.
SEAL_VERSION = 2
# Every request field that decides where a secret goes and how: the endpoints and their TLS modes
# (presets follow from inbox_type), whether AUTH may go without TLS, the names logged in as
# (email is their default) and how (a password or an OAuth2 token). In this order, for producers
# in other languages (README).
DESTINATION_FIELDS = (
    "inbox_type",
    "email",
    "smtp_host",
    "smtp_port",
    "smtp_use_tls",
    "smtp_security",
    "allow_insecure_auth",
    "smtp_username",
    "imap_host",
    "imap_port",
    "imap_use_ssl",
    "imap_username",
    "auth",
    # Where an OAuth2 refresh token or client secret is sent, and for which app: a sealed refresh
    # token cannot be pointed at another token endpoint.
    "oauth2.grant",
    "oauth2.client_id",
    "oauth2.tenant",
    "oauth2.token_url",
)
# What a token may be used for. A queued job's token expires (INBOXCHECK_SEALED_MAX_AGE); a
# registered inbox's stored token does not, so it is never accepted as a job's: the registry
# seals a fresh job token from it for each recheck, and never turns a job token into one.
USE_JOB = "job"
USE_REGISTRY = "registry"
# A fetched OAuth2 access token kept by the worker, and a rotated refresh token handed back in an
# event: neither is ever accepted as a job's or a registered inbox's credentials.
USE_TOKEN_CACHE = "token-cache"
USE_ROTATED = "rotated"
# A webhook endpoint's signing secret (worker.webhooks.endpoints), bound to its URL.
USE_WEBHOOK = "webhook"
# A token stamped this far in the future still opens: producers' clocks drift a little.
CLOCK_SKEW_S = 300.0


def _line_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _field(request: Mapping[str, Any], name: str) -> Any:
    # "oauth2.token_url" is the token_url inside the request's oauth2 object.
    value: Any = request
    for part in name.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def destination_digest(request: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of `field=value` lines, one per DESTINATION_FIELDS entry the request gives
    (null or absent: no line), in that order, booleans as true/false: a form any language writes
    the same way, with no JSON canonicalisation to get wrong."""
    lines = "".join(
        f"{name}={_line_value(value)}\n"
        for name in DESTINATION_FIELDS
        if (value := _field(request, name)) is not None
    )
    return hashlib.sha256(lines.encode()).hexdigest()


class SecretKeyError(InboxcheckError, ValueError):
    """INBOXCHECK_SECRET_KEY cannot be used. Never carries the key."""


class SealError(InboxcheckError):
    """A sealed value that cannot be opened. Never carries the token or the key."""


def generate_key() -> str:
    return Fernet.generate_key().decode("ascii")


class Sealer:
    """Seals and opens the credentials of one request, bound to its inbox id and destination."""

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
        self._secret_digest_key = hmac.new(keys[0].encode(), _SECRET_DIGEST_CONTEXT, hashlib.sha256).digest()

    def __repr__(self) -> str:
        return "Sealer(***)"

    def seal(self, secrets: dict[str, str], inbox_id: str, destination: str, *, use: str = USE_JOB) -> str:
        """A token of `secrets` for `inbox_id`, usable only with the request whose
        destination_digest is `destination`, and only as `use` says (a queued job, or a
        registered inbox's stored copy)."""
        plain = json.dumps(
            {
                "v": SEAL_VERSION,
                "use": use,
                "inbox_id": inbox_id,
                "destination": destination,
                "secrets": secrets,
            },
            separators=(",", ":"),
        )
        return self._fernet.encrypt(plain.encode()).decode("ascii")

    def open(
        self,
        token: str,
        inbox_id: str,
        destination: str,
        *,
        use: str = USE_JOB,
        max_age_s: float | None = None,
    ) -> dict[str, str]:
        """The secrets in `token`, if it was sealed for this inbox and destination (and, with
        `max_age_s`, no longer ago than that); SealError saying which check failed otherwise."""
        try:
            raw = token.encode("ascii")
            plain = json.loads(self._fernet.decrypt(raw))
            sealed_at = self._fernet.extract_timestamp(raw)
        except (InvalidToken, UnicodeError, ValueError, TypeError):
            raise SealError("the sealed credentials cannot be opened with this worker's key") from None
        if not isinstance(plain, dict):
            raise SealError("the sealed credentials are not a JSON object")
        if plain.get("v") != SEAL_VERSION:
            raise SealError(
                "the credentials are sealed in an old format that does not name their destination; "
                "seal them again (README: enqueueing from another language)"
            )
        secrets = plain.get("secrets")
        if not isinstance(secrets, dict):
            raise SealError("the sealed credentials hold no secrets object (a producer's bug)")
        if plain.get("inbox_id") != inbox_id:
            raise SealError("the sealed credentials were sealed for another inbox")
        if not hmac.compare_digest(str(plain.get("destination", "")), destination):
            raise SealError(
                "the request's host, port, TLS mode, user name or OAuth2 app is not the one the "
                "credentials were sealed for; nothing was sent anywhere"
            )
        if plain.get("use") != use:
            raise SealError(f"the credentials were sealed for {plain.get('use')!s:.20}, not for {use}")
        age_s = time.time() - sealed_at
        if max_age_s is not None and age_s < -CLOCK_SKEW_S:
            raise SealError("the sealed credentials are dated in the future; check the producer's clock")
        if max_age_s is not None and age_s > max_age_s:
            raise SealError(
                f"the sealed credentials are {age_s:.0f} s old, more than the {max_age_s:g} s "
                "INBOXCHECK_SEALED_MAX_AGE allows for a queued job; enqueue the check again"
            )
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in secrets.items()):
            raise SealError("the sealed credentials are not name/password pairs")
        return secrets

    def job_id(self, canonical: bytes) -> str:
        return hmac.new(self._job_id_key, canonical, hashlib.sha256).hexdigest()

    def secret_digest(self, secrets: bytes) -> str:
        """A name for `secrets` (HMAC-SHA256, hex, under a key of its own): equal for equal
        secrets, and without the key nobody can test a guess against it, as they could a hash."""
        return hmac.new(self._secret_digest_key, secrets, hashlib.sha256).hexdigest()


def sealer_for(secret: SecretStr | None) -> Sealer | None:
    return Sealer(secret) if secret is not None and secret.get_secret_value().strip() else None
