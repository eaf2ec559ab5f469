"""Job envelopes, payloads and sealed tokens against any input (hypothesis): whatever sits in
Redis under a job key becomes a request or a rejection that names the problem, never another
exception and never an echo of a secret."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import assume, given
from hypothesis import strategies as st

from jobs.errors import Reason
from jobs.request import RequestError, parse_request
from tests.strategies import SECRET_MARK, any_json, hostile_text, secrets
from worker.messages import envelope, payload
from worker.messages.sealing import Sealer, SecretKeyError, generate_key

SEALER = Sealer(generate_key())
OTHER_SEALER = Sealer(generate_key())
BASE_REQUEST = {
    "inbox_id": "inbox-1",
    "inbox_type": "CUSTOM_SMTP",
    "email": "ann@corp.example",
    "smtp_host": "mail.corp.example",
    "smtp_port": 587,
    "imap_host": "mail.corp.example",
    "imap_port": 993,
}


def decoded(body: Any, sealer: Sealer | None = SEALER, allow_plaintext: bool = False) -> Any:
    try:
        return payload.decode(body, sealer, allow_plaintext=allow_plaintext)
    except payload.PayloadRejected as exc:
        shown = str(exc) + exc.message + repr(exc.problems) + str(exc.inbox_id)
        assert SECRET_MARK not in shown
        assert exc.message
        return exc


def sealed_payload(password: str) -> dict[str, Any]:
    request = parse_request({**BASE_REQUEST, "smtp_password": password})
    return payload.encode(request, SEALER)


@given(any_json(), st.booleans(), st.sampled_from([SEALER, None]))
def test_any_payload_is_a_request_or_a_rejection(
    body: Any, allow_plaintext: bool, sealer: Sealer | None
) -> None:
    decoded(body, sealer, allow_plaintext)


@given(secrets(), st.booleans())
def test_any_password_survives_sealing_and_never_shows_in_the_job(password: str, plaintext: bool) -> None:
    try:
        request = parse_request({**BASE_REQUEST, "smtp_password": password})
    except RequestError as exc:
        assert password not in str(exc)  # refused (control characters), and not echoed
        return
    body = payload.encode(request, None if plaintext else SEALER, allow_plaintext=plaintext)
    job = envelope.job_bytes(body, 1)
    if not plaintext:
        assert password.encode() not in job and json.dumps(password).encode() not in job
    back = payload.decode(envelope.deserialize_job(job)["a"][0], SEALER, allow_plaintext=plaintext)
    assert back.password("smtp") == password


@given(secrets(), st.sampled_from(sorted(BASE_REQUEST)) | hostile_text(max_size=20), any_json())
def test_a_tampered_request_is_refused_or_still_the_sealed_one(password: str, field: str, value: Any) -> None:
    body = sealed_payload("pw-" + str(len(password)))
    body["request"] = {**body["request"], field: value}
    found = decoded(body)
    if not isinstance(found, payload.PayloadRejected):
        # Only what does not decide where the password goes may differ (nothing of it here).
        assert (found.smtp.host, found.smtp.port, found.imap.host, found.imap.port) == (
            "mail.corp.example",
            587,
            "mail.corp.example",
            993,
        )


@given(st.one_of(hostile_text(max_size=300), st.just("")), st.integers(0, 200), st.booleans())
def test_a_forged_or_damaged_token_is_refused_naming_the_credentials(
    text: str, flip_at: int, other_key: bool
) -> None:
    body = sealed_payload(SECRET_MARK + "password")
    token = body["credentials"]["sealed"]
    if text:
        token = text
    elif flip_at < len(token):
        token = token[:flip_at] + ("A" if token[flip_at] != "A" else "B") + token[flip_at + 1 :]
    else:
        assume(other_key)
    body["credentials"] = {"sealed": token}
    found = decoded(body, OTHER_SEALER if other_key else SEALER)
    assert isinstance(found, payload.PayloadRejected)
    assert found.reason in (Reason.SEALED_CREDENTIALS, Reason.MALFORMED_PAYLOAD)


@given(
    st.one_of(
        st.binary(max_size=3000),
        any_json().map(lambda value: json.dumps(value).encode()),
        st.dictionaries(st.sampled_from(["f", "a", "k", "t", "et"]), any_json(), max_size=5).map(
            lambda value: json.dumps(value).encode()
        ),
    )
)
def test_any_bytes_under_a_job_key_become_an_envelope(raw: bytes) -> None:
    job = envelope.deserialize_job(raw)
    assert job["f"] in (envelope.FUNCTION_NAME, envelope.RECHECK_CRON_FUNCTION)
    assert isinstance(job["et"], int) and job["et"] >= 0
    assert job == envelope.deserialize_job(raw)  # the same every time: the event id derives from it


@given(hostile_text(max_size=120))
def test_any_secret_key_text_is_a_key_or_an_error_that_does_not_echo_it(text: str) -> None:
    try:
        Sealer(text)
    except SecretKeyError as exc:
        assert "INBOXCHECK_SECRET_KEY" in str(exc)
        for part in (p.strip() for p in text.split(",")):
            assert len(part) < 8 or part not in str(exc)
