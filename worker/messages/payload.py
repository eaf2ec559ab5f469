"""The job payload (what a producer writes) <-> ValidationRequest (what the check runs).

JSON only. The passwords travel apart from the other fields, sealed with the shared key, so the
job in Redis never holds them in clear. Anything unusable becomes a PayloadRejected that names
the field and the problem but never echoes a value.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from jobs.errors import InboxcheckError, Reason
from jobs.request import RequestError, ValidationRequest, parse_request
from worker.messages.sealing import USE_JOB, USE_REGISTRY, Sealer, SealError, destination_digest

PAYLOAD_VERSION: Final = 1
# The credentials, sealed apart from the request: its passwords, and each secret of its oauth2
# object under "oauth2_<name>".
PASSWORD_FIELDS = ("smtp_password", "imap_password")
OAUTH2_SECRETS = ("access_token", "refresh_token", "client_secret", "service_account_key")
SECRET_FIELDS = (*PASSWORD_FIELDS, *(f"oauth2_{name}" for name in OAUTH2_SECRETS))
# Inbox ids longer than the request allows are not worth repeating in a rejection.
MAX_INBOX_ID_CHARS = 256
# A Fernet token for two 1 KiB passwords is well under this.
MAX_SEALED_CHARS = 16_384


class SealedCredentials(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sealed: str = Field(
        min_length=1,
        max_length=MAX_SEALED_CHARS,
        description='Fernet token of {"v": 2, "inbox_id": ..., "destination": <the request\'s '
        'destination digest, see the README>, "secrets": {"smtp_password": ..., "imap_password"?: ...} '
        'or {"oauth2_<name>": ...} for each secret of oauth2}} made with INBOXCHECK_SECRET_KEY.',
    )


class PlainCredentials(BaseModel):
    model_config = ConfigDict(extra="forbid")
    plain: dict[
        Literal[
            "smtp_password",
            "imap_password",
            "oauth2_access_token",
            "oauth2_refresh_token",
            "oauth2_client_secret",
            "oauth2_service_account_key",
        ],
        str,
    ] = Field(description="Development only: accepted when INBOXCHECK_ALLOW_PLAINTEXT_CREDENTIALS=true.")


class JobPayload(BaseModel):
    """The one argument of an inboxcheck job."""

    model_config = ConfigDict(extra="forbid")
    v: Literal[1] = PAYLOAD_VERSION
    request: dict[str, Any] = Field(
        description="The request's fields (see `inboxcheck schema request`) without the passwords and tokens."
    )
    credentials: SealedCredentials | PlainCredentials


class PayloadRejected(InboxcheckError):
    """A payload that cannot become a request. The message is safe to log and to publish."""

    def __init__(
        self, reason: Reason, message: str, *, problems: list[str] | None = None, inbox_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.problems = problems or []
        self.inbox_id = inbox_id


def _secrets_of(request: ValidationRequest) -> dict[str, str]:
    secrets = {}
    for name in PASSWORD_FIELDS:
        value = getattr(request, name)
        # imap_password defaults to smtp_password: sealed only when the producer gave its own.
        if value is not None and (name == "smtp_password" or name in request.model_fields_set):
            secrets[name] = value.get_secret_value()
    if request.oauth2 is not None:
        for name in OAUTH2_SECRETS:
            value = getattr(request.oauth2, name)
            if value is not None:
                secrets[f"oauth2_{name}"] = value.get_secret_value()
    return secrets


def request_fields(request: ValidationRequest) -> dict[str, Any]:
    """The fields the producer gave, minus the passwords and tokens; inbox_id always present."""
    exclude: dict[str, Any] = {name: True for name in PASSWORD_FIELDS}
    exclude["oauth2"] = set(OAUTH2_SECRETS)
    fields = request.model_dump(mode="json", exclude_unset=True, exclude=exclude)
    fields["inbox_id"] = request.inbox_id
    return fields


def _secrets_in(request: dict[str, Any]) -> bool:
    oauth2 = request.get("oauth2")
    return any(name in request for name in PASSWORD_FIELDS) or (
        isinstance(oauth2, dict) and any(name in oauth2 for name in OAUTH2_SECRETS)
    )


def _with_secrets(request: dict[str, Any], secrets: dict[str, str]) -> dict[str, Any]:
    """The request as the producer wrote it, its sealed secrets back in place."""
    merged = {**request, **{name: secrets[name] for name in PASSWORD_FIELDS if name in secrets}}
    oauth2 = {name: secrets[f"oauth2_{name}"] for name in OAUTH2_SECRETS if f"oauth2_{name}" in secrets}
    if oauth2 or "oauth2" in request:
        base = request.get("oauth2")
        merged["oauth2"] = {**base, **oauth2} if isinstance(base, dict) else oauth2 or base
    return merged


class PlaintextRefused(InboxcheckError):
    """Credentials would go to Redis in plaintext, and plaintext was not explicitly allowed."""


def require_sealing(sealer: Sealer | None, *, allow_plaintext: bool) -> None:
    """The one rule for writing credentials to Redis (producer and registry): sealed, or
    plaintext only when settings.allow_plaintext_credentials says this is development."""
    if sealer is None and not allow_plaintext:
        raise PlaintextRefused(
            "INBOXCHECK_SECRET_KEY is not set: credentials are only written to Redis sealed with "
            "it (or set INBOXCHECK_ALLOW_PLAINTEXT_CREDENTIALS=true in development)"
        )


def encode(
    request: ValidationRequest, sealer: Sealer | None, *, allow_plaintext: bool = False, use: str = USE_JOB
) -> dict[str, Any]:
    """The payload for `request`: sealed with the key; plaintext only when allowed (development)."""
    assert request.inbox_id is not None  # the request model always fills it in
    require_sealing(sealer, allow_plaintext=allow_plaintext)
    secrets = _secrets_of(request)
    fields = request_fields(request)
    credentials: dict[str, Any] = (
        {"sealed": sealer.seal(secrets, request.inbox_id, destination_digest(fields), use=use)}
        if sealer
        else {"plain": secrets}
    )
    return {"v": PAYLOAD_VERSION, "request": fields, "credentials": credentials}


def reseal(body: Any, sealer: Sealer) -> Any:
    """`body` (a registered inbox's stored payload) with a job token sealed now from its stored
    one: the same secrets, checked against the same inbox and destination, with a fresh timestamp
    and the newest key.
    Anything that does not open for its request is returned as it is: the worker refuses it and
    says why, in a rejected event, rather than this writer guessing."""
    request = body.get("request") if isinstance(body, dict) else None
    credentials = body.get("credentials") if isinstance(body, dict) else None
    if not isinstance(request, dict) or not isinstance(credentials, dict):
        return body
    token, inbox_id = credentials.get("sealed"), request.get("inbox_id")
    if not isinstance(token, str) or not isinstance(inbox_id, str):
        return body
    destination = destination_digest(request)
    try:
        secrets = sealer.open(token, inbox_id, destination, use=USE_REGISTRY)
    except SealError:
        return body
    return {**body, "credentials": {"sealed": sealer.seal(secrets, inbox_id, destination, use=USE_JOB)}}


def replace_secret(body: Any, sealer: Sealer | None, name: str, expected: str, new: str) -> Any | None:
    """`body` (a registered inbox's stored payload) with secret `name` changed from `expected` to
    `new`, sealed again for the registry; None when it does not hold `expected` (re-registered
    meanwhile with other credentials) or does not open."""
    request = body.get("request") if isinstance(body, dict) else None
    credentials = body.get("credentials") if isinstance(body, dict) else None
    if not isinstance(request, dict) or not isinstance(credentials, dict):
        return None
    if "plain" in credentials:  # development without a key
        plain = credentials["plain"]
        if not isinstance(plain, dict) or plain.get(name) != expected:
            return None
        return {**body, "credentials": {"plain": {**plain, name: new}}}
    token, inbox_id = credentials.get("sealed"), request.get("inbox_id")
    if sealer is None or not isinstance(token, str) or not isinstance(inbox_id, str):
        return None
    destination = destination_digest(request)
    try:
        secrets = sealer.open(token, inbox_id, destination, use=USE_REGISTRY)
    except SealError:
        return None
    if secrets.get(name) != expected:
        return None
    resealed = sealer.seal({**secrets, name: new}, inbox_id, destination, use=USE_REGISTRY)
    return {**body, "credentials": {"sealed": resealed}}


def canonical(request: ValidationRequest, *, with_secrets: bool) -> bytes:
    """A stable byte form of the request (every field, presets filled in) to derive the job id."""
    data = request.model_dump(mode="json")
    if request.oauth2 is not None:  # its secrets are masked by the dump; added below as the others
        data["oauth2"] = request.oauth2.model_dump(mode="json", exclude=set(OAUTH2_SECRETS))
    for name in PASSWORD_FIELDS:
        data.pop(name, None)
    if with_secrets:
        data.update(_secrets_of(request))
        data["imap_password"] = request.imap_password.get_secret_value() if request.imap_password else None
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def job_id_for(request: ValidationRequest, sealer: Sealer | None, queue_name: str = "") -> str:
    """Same request to the same queue, same id. Keyed, because content with a password must not
    be hashed bare; without a key (plaintext development mode) the passwords are left out.

    arq's job and result keys are global, so the queue is part of the id: otherwise a request
    sent to a second queue would find the first queue's job and never run there."""
    scope = queue_name.encode() + b"\n"
    if sealer is not None:
        return sealer.job_id(scope + canonical(request, with_secrets=True))
    return hashlib.sha256(scope + canonical(request, with_secrets=False)).hexdigest()


def _inbox_id_hint(request: Any) -> str | None:
    if not isinstance(request, dict):
        return None
    for name in ("inbox_id", "email"):
        value = request.get(name)
        if isinstance(value, str) and 0 < len(value) <= MAX_INBOX_ID_CHARS:
            return value
    return None


def _schema_problems(error: ValidationError) -> list[str]:
    return [
        f"{'.'.join(str(p) for p in item['loc']) or 'payload'}: {item['msg']}"
        for item in error.errors(include_url=False, include_input=False)
    ]


def decode(
    payload: Any, sealer: Sealer | None, *, allow_plaintext: bool, max_age_s: float | None = None
) -> ValidationRequest:
    """Turn a job's payload back into a request, or raise PayloadRejected saying why not: sealed
    credentials must open for this request's inbox and destination, and be at most `max_age_s`
    old when given."""
    malformed = Reason.MALFORMED_PAYLOAD
    if not isinstance(payload, dict):
        raise PayloadRejected(malformed, "the job payload is not a JSON object")
    inbox_id = _inbox_id_hint(payload.get("request"))
    try:
        parsed = JobPayload.model_validate(payload)
    except ValidationError as exc:
        raise PayloadRejected(
            malformed,
            "the job payload does not match the payload schema",
            problems=_schema_problems(exc),
            inbox_id=inbox_id,
        ) from None
    if _secrets_in(parsed.request):
        raise PayloadRejected(
            Reason.SEALED_CREDENTIALS,
            "passwords and tokens belong in credentials, not in the request",
            inbox_id=inbox_id,
        )
    binding = inbox_id or ""
    if isinstance(parsed.credentials, SealedCredentials):
        if sealer is None:
            raise PayloadRejected(
                Reason.SEALED_CREDENTIALS,
                "the credentials are sealed but this worker has no INBOXCHECK_SECRET_KEY to open them",
                inbox_id=inbox_id,
            )
        try:
            secrets = sealer.open(
                parsed.credentials.sealed, binding, destination_digest(parsed.request), max_age_s=max_age_s
            )
        except SealError as exc:
            raise PayloadRejected(Reason.SEALED_CREDENTIALS, str(exc), inbox_id=inbox_id) from None
        unknown = sorted(set(secrets) - set(SECRET_FIELDS))
        if unknown:
            raise PayloadRejected(
                Reason.SEALED_CREDENTIALS,
                "the sealed credentials hold unknown fields",
                problems=[f"{name}: is not a known field" for name in unknown],
                inbox_id=inbox_id,
            )
    else:
        if not allow_plaintext:
            raise PayloadRejected(
                Reason.SEALED_CREDENTIALS,
                "plaintext credentials are refused; seal them with the shared key "
                "(or set INBOXCHECK_ALLOW_PLAINTEXT_CREDENTIALS=true in development)",
                inbox_id=inbox_id,
            )
        secrets = {name: value for name, value in parsed.credentials.plain.items()}
    try:
        return parse_request(_with_secrets(parsed.request, secrets))
    except RequestError as exc:
        raise PayloadRejected(
            malformed,
            "the request in the payload is invalid",
            problems=[str(p) for p in exc.problems],
            inbox_id=inbox_id,
        ) from None
