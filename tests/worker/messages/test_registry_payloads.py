"""A registered inbox's stored payload: a fresh job token sealed from it for each recheck, and a
refresh token the provider rotated put in place of the one used, only when it still is the one
stored."""

from __future__ import annotations

from typing import Any

import pytest

from tests.worker.messages.test_payload import CLIENT_SECRET, REFRESH, refresh_request
from tests.worker.support import KEY
from worker.messages import payload
from worker.messages.sealing import USE_JOB, USE_REGISTRY, Sealer, SealError, destination_digest, generate_key

ROTATED = "1//0" + "n" * 100
NAME = "oauth2_refresh_token"


def _stored(sealer: Sealer | None, use: str = USE_REGISTRY) -> dict[str, Any]:
    return payload.encode(refresh_request(), sealer, allow_plaintext=sealer is None, use=use)


def _opened(body: dict[str, Any], sealer: Sealer, use: str) -> dict[str, str]:
    request = body["request"]
    return sealer.open(
        body["credentials"]["sealed"], request["inbox_id"], destination_digest(request), use=use
    )


def _not_opening(sealer: Sealer) -> list[Any]:
    body = _stored(sealer)
    return [
        None,
        "text",
        {"request": [], "credentials": body["credentials"]},
        {"request": body["request"], "credentials": "sealed"},
        {**body, "credentials": {"sealed": 7}},
        {**body, "request": {**body["request"], "inbox_id": None}},
        _stored(Sealer(generate_key())),  # another key
        _stored(sealer, use=USE_JOB),  # a job's token is never a registered inbox's
    ]


def test_a_rotated_refresh_token_replaces_the_one_used() -> None:
    sealer = Sealer(KEY)
    body = _stored(sealer)
    kept = payload.replace_secret(body, sealer, NAME, REFRESH, ROTATED)
    assert kept is not None and kept["request"] == body["request"]
    assert _opened(kept, sealer, USE_REGISTRY) == {NAME: ROTATED, "oauth2_client_secret": CLIENT_SECRET}


def test_a_token_other_than_the_stored_one_replaces_nothing() -> None:
    sealer = Sealer(KEY)
    assert payload.replace_secret(_stored(sealer), sealer, NAME, "1//0-registered-again", ROTATED) is None


def test_a_stored_payload_that_does_not_open_replaces_nothing() -> None:
    sealer = Sealer(KEY)
    for body in _not_opening(sealer):
        assert payload.replace_secret(body, sealer, NAME, REFRESH, ROTATED) is None
    assert payload.replace_secret(_stored(sealer), None, NAME, REFRESH, ROTATED) is None


def test_plaintext_development_credentials_are_replaced_in_place() -> None:
    body = _stored(None)
    kept = payload.replace_secret(body, None, NAME, REFRESH, ROTATED)
    assert kept == {**body, "credentials": {"plain": {**body["credentials"]["plain"], NAME: ROTATED}}}
    assert payload.replace_secret(body, None, NAME, "1//0-registered-again", ROTATED) is None
    assert (
        payload.replace_secret({**body, "credentials": {"plain": "x"}}, None, NAME, REFRESH, ROTATED) is None
    )


def test_a_recheck_gets_a_job_token_sealed_from_the_stored_one() -> None:
    sealer = Sealer(KEY)
    body = _stored(sealer)
    job = payload.reseal(body, sealer)
    assert job["request"] == body["request"]
    assert _opened(job, sealer, USE_JOB) == _opened(body, sealer, USE_REGISTRY)
    with pytest.raises(SealError):
        _opened(job, sealer, USE_REGISTRY)
    assert payload.decode(job, sealer, allow_plaintext=False).inbox_id == body["request"]["inbox_id"]


def test_a_stored_payload_that_does_not_open_is_left_for_the_worker_to_refuse() -> None:
    sealer = Sealer(KEY)
    for body in _not_opening(sealer):
        assert payload.reseal(body, sealer) is body
