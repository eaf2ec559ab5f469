"""Which secrets a payload seals, how they come back into the request, and the job id they give:
as a producer in another language writes them (README: enqueueing from another language)."""

from __future__ import annotations

import hashlib

import pytest

from tests.worker.support import KEY, PASSWORD, request, request_fields
from worker.messages import payload
from worker.messages.sealing import USE_JOB, Sealer, destination_digest, generate_key

TOKEN = "ya29.hand-written-" + "t" * 100


def _sealed_secrets(body: dict[str, object], sealer: Sealer) -> dict[str, str]:
    fields = body["request"]
    assert isinstance(fields, dict)
    credentials = body["credentials"]
    assert isinstance(credentials, dict)
    return sealer.open(credentials["sealed"], fields["inbox_id"], destination_digest(fields), use=USE_JOB)


def test_the_imap_password_is_sealed_only_when_the_producer_gave_its_own() -> None:
    sealer = Sealer(KEY)
    shared = payload.encode(request("one-password", 25), sealer)
    assert _sealed_secrets(shared, sealer) == {"smtp_password": PASSWORD}
    assert payload.decode(shared, sealer, allow_plaintext=False).password("imap") == PASSWORD
    own = payload.encode(request("two-passwords", 25, imap_password="imap-only"), sealer)
    assert _sealed_secrets(own, sealer) == {"smtp_password": PASSWORD, "imap_password": "imap-only"}
    assert payload.decode(own, sealer, allow_plaintext=False).password("imap") == "imap-only"


@pytest.mark.parametrize("oauth2", [None, {}], ids=["no-oauth2-object", "empty-oauth2-object"])
def test_a_hand_written_oauth2_payload_gets_its_sealed_token_back(oauth2: dict[str, str] | None) -> None:
    sealer = Sealer(KEY)
    fields = {k: v for k, v in request_fields("by-hand", 25).items() if k != "smtp_password"}
    fields["auth"] = "oauth2"
    if oauth2 is not None:
        fields["oauth2"] = oauth2
    token = sealer.seal({"oauth2_access_token": TOKEN}, "by-hand", destination_digest(fields))
    body = {"v": 1, "request": fields, "credentials": {"sealed": token}}
    assert payload.decode(body, sealer, allow_plaintext=False).access_token == TOKEN


def test_the_imap_password_is_part_of_the_job_id_as_the_check_uses_it() -> None:
    sealer = Sealer(KEY)
    defaulted = payload.job_id_for(request("ids", 25), sealer)
    assert payload.job_id_for(request("ids", 25, imap_password="other"), sealer) != defaulted
    # Given, but the same as the SMTP password it would default to: the same check, the same job.
    assert payload.job_id_for(request("ids", 25, imap_password=PASSWORD), sealer) == defaulted


def test_writing_credentials_without_a_key_says_how_to_proceed() -> None:
    with pytest.raises(payload.PlaintextRefused) as refused:
        payload.require_sealing(None, allow_plaintext=False)
    assert str(refused.value) == (
        "INBOXCHECK_SECRET_KEY is not set: credentials are only written to Redis sealed with it "
        "(or set INBOXCHECK_ALLOW_PLAINTEXT_CREDENTIALS=true in development)"
    )


def test_a_payload_off_the_schema_names_each_problem() -> None:
    with pytest.raises(payload.PayloadRejected) as rejected:
        payload.decode({"v": 2, "request": [], "credentials": {"sealed": ""}}, None, allow_plaintext=False)
    assert rejected.value.message == "the job payload does not match the payload schema"
    assert rejected.value.problems == [
        "v: Input should be 1",
        "request: Input should be a valid dictionary",
        "credentials.SealedCredentials.sealed: String should have at least 1 character",
        "credentials.PlainCredentials.plain: Field required",
        "credentials.PlainCredentials.sealed: Extra inputs are not permitted",
    ]


def test_the_sealers_repr_never_shows_the_key() -> None:
    assert repr(Sealer(KEY)) == "Sealer(***)"


def test_a_requests_destination_is_the_one_its_payload_is_sealed_for() -> None:
    sealer = Sealer(KEY)
    sent = request("bound", 25)
    body = payload.encode(sent, sealer)
    token = body["credentials"]["sealed"]
    assert sealer.open(token, "bound", payload.request_destination(sent)) == {"smtp_password": PASSWORD}
    assert payload.request_destination(sent) != payload.request_destination(request("bound", 26))


def test_a_secret_digest_is_keyed_and_names_equal_secrets_alike() -> None:
    sealer = Sealer(KEY)
    digest = sealer.secret_digest(b"refresh-token-1")
    assert digest == Sealer(KEY).secret_digest(b"refresh-token-1")
    assert digest != sealer.secret_digest(b"refresh-token-2")
    assert digest != Sealer(generate_key()).secret_digest(b"refresh-token-1")
    assert digest != hashlib.sha256(b"refresh-token-1").hexdigest()
    assert len(digest) == 64 and set(digest) <= set("0123456789abcdef")
