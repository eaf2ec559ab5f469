"""The job's payload and envelope: keyed job ids, sealing rules, and bytes that cannot be a job."""

from __future__ import annotations

import json
from typing import Any

import pytest

from jobs.request import parse_request
from tests.worker.support import (
    KEY,
    PASSWORD,
    make_settings,
    request,
    request_fields,
)
from worker.messages import envelope, payload
from worker.messages.producer import enqueue_validation
from worker.messages.sealing import Sealer, generate_key


def test_job_id_is_keyed_and_ignores_nothing() -> None:
    sealer = Sealer(KEY)
    one = request(port=1)
    assert payload.job_id_for(one, sealer) != payload.job_id_for(
        request(port=1, smtp_password="other"), sealer
    )
    assert payload.job_id_for(one, sealer) != payload.job_id_for(one, Sealer(generate_key()))
    assert payload.job_id_for(one, None) == payload.job_id_for(request(port=1, smtp_password="x"), None)
    assert payload.job_id_for(one, sealer) != payload.job_id_for(request("inbox-2", port=1), sealer)
    assert payload.job_id_for(one, sealer, "queue-a") != payload.job_id_for(one, sealer, "queue-b")


async def test_producer_without_key_refuses_plaintext(shared_redis, aredis) -> None:
    settings = make_settings(shared_redis, secret_key=None)
    with pytest.raises(payload.PlaintextRefused, match="INBOXCHECK_SECRET_KEY"):
        await enqueue_validation(aredis, request("refused"), settings=settings)
    assert not await aredis.zcard(settings.queue_name)
    assert PASSWORD.encode() not in b"".join(
        [
            await aredis.get(k) or b""
            async for k in aredis.scan_iter("arq:job:*")
            if await aredis.type(k) == b"string"
        ]
    )


def test_deserializer_never_raises() -> None:
    for raw in (b"", b"null", b"[]", b'"x"', b"{", b"\xff" * 10, b"1e999999", b'{"f":1}'):
        job = envelope.deserialize_job(raw)
        assert job["f"] == envelope.FUNCTION_NAME and "unreadable" in job["k"]


@pytest.mark.parametrize("body", [b"[1, 2]", b'"text"', b"3", b"null"])
def test_a_sealed_body_that_is_not_an_object_is_a_seal_error(body: bytes) -> None:
    from cryptography.fernet import Fernet

    from worker.messages.sealing import SealError, destination_digest

    token = Fernet(KEY).encrypt(body).decode()  # right key, wrong shape: a buggy producer
    with pytest.raises(SealError):
        Sealer(KEY).open(token, "inbox-1", destination_digest(request_fields("inbox-1", 25)))
    fields = {k: v for k, v in request_fields("inbox-1", 25).items() if k != "smtp_password"}
    with pytest.raises(payload.PayloadRejected) as rejected:  # a rejected event, not a crash
        payload.decode(
            {"v": payload.PAYLOAD_VERSION, "request": fields, "credentials": {"sealed": token}},
            Sealer(KEY),
            allow_plaintext=False,
        )
    assert rejected.value.reason.value == "SEALED_CREDENTIALS"


@pytest.mark.parametrize(
    "raw",
    [
        b"\x00\xffgarbage",
        b"[1]",
        b'{"f": "validate_inbox", "a": [], "et": 123}',
        b'{"f": "nope", "et": 1700000000000}',
        b"x" * (envelope.MAX_JOB_BYTES + 1),
    ],
)
def test_an_unreadable_job_gets_the_same_event_id_every_time_it_is_read(raw: bytes) -> None:
    from worker.runtime.job import event_id

    first, later = envelope.deserialize_job(raw), envelope.deserialize_job(raw)
    assert "unreadable" in first["k"]
    assert event_id("job-1", first["et"]) == event_id("job-1", later["et"])
    assert first["et"] != envelope.deserialize_job(raw + b" ")["et"] or b"et" in raw


TOKEN = "ya29." + "t" * 2_500


def oauth_request(inbox_id: str = "oauth-1") -> Any:
    fields = {k: v for k, v in request_fields(inbox_id, 25).items() if k != "smtp_password"}
    return parse_request({**fields, "auth": "oauth2", "oauth2": {"access_token": TOKEN}})


@pytest.mark.parametrize("sealed", [True, False], ids=["sealed", "plaintext-development"])
def test_an_oauth2_token_travels_in_the_credentials_never_in_the_request(sealed: bool) -> None:
    sealer = Sealer(KEY) if sealed else None
    body = payload.encode(oauth_request(), sealer, allow_plaintext=not sealed)
    assert TOKEN not in json.dumps(body["request"]) and body["request"]["auth"] == "oauth2"
    if sealed:
        assert TOKEN not in json.dumps(body)
    opened = payload.decode(body, sealer, allow_plaintext=not sealed)
    assert opened.access_token == TOKEN and opened.smtp_password is None


def test_a_token_written_into_the_request_is_refused() -> None:
    body = payload.encode(oauth_request(), Sealer(KEY))
    leaked = {**body, "request": {**body["request"], "oauth2": {"access_token": TOKEN}}}
    with pytest.raises(payload.PayloadRejected, match="belong in credentials"):
        payload.decode(leaked, Sealer(KEY), allow_plaintext=False)


def test_switching_a_sealed_password_request_to_oauth2_is_refused() -> None:
    body = payload.encode(request("switch"), Sealer(KEY))
    switched = {**body, "request": {**body["request"], "auth": "oauth2"}}
    with pytest.raises(payload.PayloadRejected, match="not the one the credentials were sealed for"):
        payload.decode(switched, Sealer(KEY), allow_plaintext=False)


REFRESH = "1//0" + "r" * 100
CLIENT_SECRET = "client-secret-value"


def refresh_request(inbox_id: str = "oauth-2", **oauth2: Any) -> Any:
    fields = {k: v for k, v in request_fields(inbox_id, 25).items() if k != "smtp_password"}
    given = {
        "refresh_token": REFRESH,
        "client_id": "app-1",
        "client_secret": CLIENT_SECRET,
        "token_url": "https://login.example.test/token",
        **oauth2,
    }
    return parse_request({**fields, "auth": "oauth2", "oauth2": given})


def test_a_refresh_token_and_client_secret_are_sealed_and_come_back() -> None:
    body = payload.encode(refresh_request(), Sealer(KEY))
    assert REFRESH not in json.dumps(body) and CLIENT_SECRET not in json.dumps(body)
    assert body["request"]["oauth2"] == {
        "client_id": "app-1",
        "token_url": "https://login.example.test/token",
    }
    opened = payload.decode(body, Sealer(KEY), allow_plaintext=False)
    assert opened.oauth2 is not None and opened.oauth2.refresh_token is not None
    assert opened.oauth2.refresh_token.get_secret_value() == REFRESH


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("token_url", "https://attacker.example.test/token"),
        ("client_id", "another-app"),
        ("tenant", "other-tenant.example"),
        ("grant", "client_credentials"),
    ],
)
def test_a_sealed_refresh_token_cannot_be_sent_to_another_token_endpoint(field: str, value: str) -> None:
    body = payload.encode(refresh_request(), Sealer(KEY))
    retargeted = {
        **body,
        "request": {**body["request"], "oauth2": {**body["request"]["oauth2"], field: value}},
    }
    with pytest.raises(payload.PayloadRejected, match="not the one the credentials were sealed for"):
        payload.decode(retargeted, Sealer(KEY), allow_plaintext=False)


def test_the_client_id_is_part_of_the_job_id() -> None:
    sealer = Sealer(KEY)
    assert payload.job_id_for(refresh_request(), sealer) != payload.job_id_for(
        refresh_request(client_id="app-2"), sealer
    )
