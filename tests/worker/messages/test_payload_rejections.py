"""Why a job's payload is refused, in the words its rejected event carries: one case per check
the worker makes before it connects anywhere. Tokens are built by hand where a producer in
another language could write them (Fernet over the README's JSON)."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import pytest
from cryptography.fernet import Fernet

from jobs.errors import Reason
from tests.worker.support import KEY, PASSWORD, request_fields
from worker.messages import payload
from worker.messages.sealing import Sealer, SecretKeyError, destination_digest, generate_key

INBOX = "inbox-7"
FIELDS = {k: v for k, v in request_fields(INBOX, 25).items() if k != "smtp_password"}
DESTINATION = destination_digest(FIELDS)
SEALED = Reason.SEALED_CREDENTIALS
MALFORMED = Reason.MALFORMED_PAYLOAD


def _token(plain: Any, key: str = KEY, at: int | None = None) -> str:
    data = json.dumps(plain).encode()
    return Fernet(key).encrypt_at_time(data, int(time.time()) if at is None else at).decode()


def _sealed(**changes: Any) -> dict[str, Any]:
    plain = {
        "v": 2,
        "use": "job",
        "inbox_id": INBOX,
        "destination": DESTINATION,
        "secrets": {"smtp_password": PASSWORD},
    }
    return _body(_token({**plain, **changes}))


def _body(token: str, fields: dict[str, Any] = FIELDS) -> dict[str, Any]:
    return {"v": 1, "request": fields, "credentials": {"sealed": token}}


def _rejected(body: Any, sealer: Sealer | None = None, **options: Any) -> payload.PayloadRejected:
    with pytest.raises(payload.PayloadRejected) as caught:
        payload.decode(body, sealer, allow_plaintext=options.pop("allow_plaintext", False), **options)
    return caught.value


@pytest.mark.parametrize(
    ("body", "reason", "message"),
    [
        ("job", MALFORMED, "the job payload is not a JSON object"),
        (
            {"v": 1, "request": {**FIELDS, "smtp_password": PASSWORD}, "credentials": {"plain": {}}},
            SEALED,
            "passwords and tokens belong in credentials, not in the request",
        ),
        (
            _body(_token({}, key=generate_key())),
            SEALED,
            "the sealed credentials cannot be opened with this worker's key",
        ),
        (_body(_token([1, 2])), SEALED, "the sealed credentials are not a JSON object"),
        (
            _sealed(v=1),
            SEALED,
            "the credentials are sealed in an old format that does not name their destination; "
            "seal them again (README: enqueueing from another language)",
        ),
        (_sealed(inbox_id="inbox-8"), SEALED, "the sealed credentials were sealed for another inbox"),
        (
            _sealed(secrets=[PASSWORD]),
            SEALED,
            "the sealed credentials hold no secrets object (a producer's bug)",
        ),
        (
            _sealed(destination=destination_digest({**FIELDS, "smtp_host": "203.0.113.9"})),
            SEALED,
            "the request's host, port, TLS mode, user name or OAuth2 app is not the one the credentials "
            "were sealed for; "
            "nothing was sent anywhere",
        ),
        (_sealed(use="registry"), SEALED, "the credentials were sealed for registry, not for job"),
        (_sealed(secrets={"smtp_password": 7}), SEALED, "the sealed credentials are not name/password pairs"),
        (
            _sealed(secrets={"smtp_password": PASSWORD, "colour": "x"}),
            SEALED,
            "the sealed credentials hold unknown fields",
        ),
        (
            {"v": 1, "request": FIELDS, "credentials": {"plain": {"smtp_password": PASSWORD}}},
            SEALED,
            "plaintext credentials are refused; seal them with the shared key "
            "(or set INBOXCHECK_ALLOW_PLAINTEXT_CREDENTIALS=true in development)",
        ),
    ],
)
def test_each_refusal_says_why(body: Any, reason: Reason, message: str) -> None:
    rejected = _rejected(body, Sealer(KEY))
    assert (rejected.reason, rejected.message, str(rejected)) == (reason, message, message)
    if isinstance(body, dict):
        assert rejected.inbox_id == INBOX


def test_unknown_sealed_fields_are_named() -> None:
    rejected = _rejected(_sealed(secrets={"smtp_password": PASSWORD, "colour": "x"}), Sealer(KEY))
    assert rejected.problems == ["colour: is not a known field"]


def test_sealed_credentials_need_a_worker_with_the_key() -> None:
    rejected = _rejected(_sealed(), None)
    assert (rejected.reason, rejected.message, rejected.inbox_id) == (
        SEALED,
        "the credentials are sealed but this worker has no INBOXCHECK_SECRET_KEY to open them",
        INBOX,
    )


def test_an_invalid_request_in_a_payload_names_its_problems() -> None:
    fields = {k: v for k, v in FIELDS.items() if k != "email"}
    rejected = _rejected(
        {"v": 1, "request": fields, "credentials": {"plain": {"smtp_password": PASSWORD}}},
        allow_plaintext=True,
    )
    assert (rejected.reason, rejected.message, rejected.problems, rejected.inbox_id) == (
        MALFORMED,
        "the request in the payload is invalid",
        ["email: is required"],
        INBOX,
    )


def test_a_payload_off_the_schema_still_names_its_inbox() -> None:
    rejected = _rejected({"v": 1, "request": FIELDS, "credentials": {}}, Sealer(KEY))
    assert (rejected.reason, rejected.inbox_id) == (MALFORMED, INBOX)


def test_credentials_are_refused_in_plaintext_unless_allowed() -> None:
    request = payload.decode(
        {"v": 1, "request": FIELDS, "credentials": {"plain": {"smtp_password": PASSWORD}}},
        None,
        allow_plaintext=True,
    )
    with pytest.raises(payload.PlaintextRefused):
        payload.encode(request, None)


def test_a_token_dated_in_the_future_is_refused_for_a_queued_job_only() -> None:
    body = _body(
        _token(
            {
                "v": 2,
                "use": "job",
                "inbox_id": INBOX,
                "destination": DESTINATION,
                "secrets": {"smtp_password": PASSWORD},
            },
            at=int(time.time()) + 3600,
        )
    )
    rejected = _rejected(body, Sealer(KEY), max_age_s=60.0)
    assert rejected.message == "the sealed credentials are dated in the future; check the producer's clock"
    assert payload.decode(body, Sealer(KEY), allow_plaintext=False).password("smtp") == PASSWORD


def test_a_token_older_than_the_maximum_age_is_refused() -> None:
    plain = {
        "v": 2,
        "use": "job",
        "inbox_id": INBOX,
        "destination": DESTINATION,
        "secrets": {"smtp_password": PASSWORD},
    }
    body = _body(_token(plain, at=int(time.time()) - 3600))
    rejected = _rejected(body, Sealer(KEY), max_age_s=60.0)
    assert rejected.message.startswith("the sealed credentials are 36")
    assert rejected.message.endswith(
        " s old, more than the 60 s INBOXCHECK_SEALED_MAX_AGE allows for a queued job; enqueue the check again"
    )
    assert payload.decode(body, Sealer(KEY), allow_plaintext=False, max_age_s=7200.0).inbox_id == INBOX


def test_a_request_without_inbox_id_or_email_is_told_by_its_own_problem() -> None:
    fields = {k: v for k, v in FIELDS.items() if k not in ("inbox_id", "email")}
    plain = {
        "v": 2,
        "use": "job",
        "inbox_id": "",
        "destination": destination_digest(fields),
        "secrets": {"smtp_password": PASSWORD},
    }
    rejected = _rejected(_body(_token(plain), fields), Sealer(KEY))
    assert (rejected.message, rejected.problems, rejected.inbox_id) == (
        "the request in the payload is invalid",
        ["email: is required"],
        None,
    )


@pytest.mark.parametrize(
    ("given", "told"),
    [
        ({"inbox_id": "i" * payload.MAX_INBOX_ID_CHARS}, "i" * payload.MAX_INBOX_ID_CHARS),
        ({"inbox_id": "i" * (payload.MAX_INBOX_ID_CHARS + 1)}, "u@example.com"),
        ({"inbox_id": ""}, "u@example.com"),
        ({"inbox_id": "x"}, "x"),
    ],
)
def test_a_refusal_names_the_inbox_by_its_id_or_else_its_email(given: dict[str, str], told: str) -> None:
    rejected = _rejected({"v": 1, "request": {**FIELDS, **given}, "credentials": {"plain": {}}}, Sealer(KEY))
    assert rejected.inbox_id == told


def test_a_destination_digest_as_the_readme_describes_it() -> None:
    request = {
        "inbox_type": "CUSTOM_SMTP",
        "email": "ann@corp.example",
        "smtp_host": "mail.corp.example",
        "smtp_port": 587,
        "smtp_use_tls": False,
        "smtp_security": None,
        "allow_insecure_auth": True,
        "auth": "oauth2",
        "oauth2": {"client_id": "app-1"},
        "account_age_days": 30,
    }
    lines = (
        "inbox_type=CUSTOM_SMTP\nemail=ann@corp.example\nsmtp_host=mail.corp.example\nsmtp_port=587\n"
        "smtp_use_tls=false\nallow_insecure_auth=true\nauth=oauth2\noauth2.client_id=app-1\n"
    )
    assert destination_digest(request) == hashlib.sha256(lines.encode()).hexdigest()


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("", "INBOXCHECK_SECRET_KEY: is empty"),
        (" , ", "INBOXCHECK_SECRET_KEY: is empty"),
        (
            "not-a-key",
            "INBOXCHECK_SECRET_KEY: is not a Fernet key (32 url-safe base64 bytes); make one with `inboxcheck keygen`",
        ),
    ],
)
def test_an_unusable_key_says_what_is_wrong(key: str, message: str) -> None:
    with pytest.raises(SecretKeyError) as caught:
        Sealer(key)
    assert str(caught.value) == message


def test_rotated_keys_seal_with_the_first_and_open_with_any() -> None:
    old, new = generate_key(), generate_key()
    sealed_before = Sealer(old).seal({"smtp_password": PASSWORD}, INBOX, DESTINATION)
    rotated = Sealer(f" {new} , {old} ")
    assert rotated.open(sealed_before, INBOX, DESTINATION) == {"smtp_password": PASSWORD}
    sealed_after = rotated.seal({"smtp_password": PASSWORD}, INBOX, DESTINATION)
    assert Sealer(new).open(sealed_after, INBOX, DESTINATION) == {"smtp_password": PASSWORD}
