"""What an OAuth2 sign-in sends (XOAUTH2, OAUTHBEARER) and how a server's error challenge reads
in a result's detail."""

from __future__ import annotations

import base64
import json

import pytest

from jobs import sasl
from jobs.errors import Reason
from jobs.sasl import Mechanism


def _decoded(response: str) -> str:
    return base64.b64decode(response, validate=True).decode()


def _encoded(value: object) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        ({"XOAUTH2", "OAUTHBEARER", "PLAIN"}, Mechanism.XOAUTH2),
        ({"OAUTHBEARER", "PLAIN"}, Mechanism.OAUTHBEARER),
        ({"PLAIN", "LOGIN"}, None),
        (set(), None),
    ],
)
def test_xoauth2_is_preferred_and_oauthbearer_is_the_fallback(
    offered: set[str], chosen: Mechanism | None
) -> None:
    assert sasl.choose(offered) is chosen


def test_the_xoauth2_response_carries_user_and_token() -> None:
    response = sasl.initial_response(Mechanism.XOAUTH2, "a@example.com", "tok", "smtp.example.com", 587)
    assert _decoded(response) == "user=a@example.com\x01auth=Bearer tok\x01\x01"


def test_the_oauthbearer_response_names_user_host_and_port_with_the_user_escaped() -> None:
    response = sasl.initial_response(
        Mechanism.OAUTHBEARER, "a=b,c@example.com", "tok", "imap.example.com", 993
    )
    assert _decoded(response) == (
        "n,a=a=3Db=2Cc@example.com,\x01host=imap.example.com\x01port=993\x01auth=Bearer tok\x01\x01"
    )


def test_every_response_a_token_can_travel_in_is_a_secret_to_scrub() -> None:
    responses = sasl.responses("a@example.com", "tok", "mail.example.com", 993)
    assert set(responses) == {
        sasl.initial_response(m, "a@example.com", "tok", "mail.example.com", 993) for m in Mechanism
    }
    assert len(set(responses)) == len(Mechanism)


def test_an_error_challenge_is_answered_so_the_server_gives_its_verdict() -> None:
    assert sasl.abort_response(Mechanism.XOAUTH2) == ""
    assert base64.b64decode(sasl.abort_response(Mechanism.OAUTHBEARER)) == b"\x01"


def test_an_error_challenge_decodes_to_flat_strings() -> None:
    challenge = {
        "status": "401",
        "schemes": "bearer",
        "code": 7,
        "ok": False,
        "nested": {"a": 1},
        "list": [1],
    }
    assert sasl.decode_challenge(f"  {_encoded(challenge)}\r\n") == {
        "status": "401",
        "schemes": "bearer",
        "code": "7",
        "ok": "False",
    }


def test_a_challenge_of_the_largest_size_is_read_and_a_larger_one_is_not() -> None:
    def of_length(length: int) -> str:
        # base64 of n bytes is 4 * n / 3 characters; the padding string makes up the JSON's size.
        raw_size = length * 3 // 4
        text = _encoded({"status": "400", "pad": ""})
        pad = raw_size - len(base64.b64decode(text))
        return _encoded({"status": "400", "pad": "x" * pad})

    largest = of_length(sasl.MAX_CHALLENGE_CHARS)
    assert len(largest) == sasl.MAX_CHALLENGE_CHARS
    assert sasl.decode_challenge(largest) is not None
    too_large = of_length(sasl.MAX_CHALLENGE_CHARS + 4)
    assert len(too_large) == sasl.MAX_CHALLENGE_CHARS + 4
    assert sasl.decode_challenge(too_large) is None


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "not base64!",
        _encoded({"status": "401"})[:4] + "!" + _encoded({"status": "401"})[4:],  # outside base64's alphabet
        base64.b64encode(b"not json").decode(),
        _encoded(["status", "401"]),
        base64.b64encode(b"\xff\xfe").decode(),
        base64.b64encode(b"[" * 5000).decode()[: sasl.MAX_CHALLENGE_CHARS],
    ],
)
def test_anything_but_a_base64_json_object_is_no_challenge(text: str) -> None:
    assert sasl.decode_challenge(text) is None


def test_the_challenge_in_words_names_status_scope_and_schemes_in_that_order() -> None:
    challenge = {"schemes": "bearer", "scope": "https://mail.google.com/", "status": "401", "other": "x"}
    assert sasl.describe(challenge) == "status 401, scope https://mail.google.com/, schemes bearer"
    assert sasl.describe({"status": "400"}) == "status 400"
    assert sasl.describe({}) == ""
    assert sasl.describe(None) == ""


def test_a_refused_token_says_what_the_server_said_and_the_usual_cause() -> None:
    detail = sasl.token_refused("smtp.example.com:587", {"status": "401"}, Reason.INVALID_CREDENTIALS)
    assert detail == (
        "smtp.example.com:587 refused the OAuth2 access token (status 401); "
        "usually the token is for another scope or another user, or has expired"
    )


def test_a_refusal_without_a_challenge_or_for_another_reason_says_only_that() -> None:
    other = next(reason for reason in Reason if reason is not Reason.INVALID_CREDENTIALS)
    assert sasl.token_refused("imap.example.com:993", None, other) == (
        "imap.example.com:993 refused the OAuth2 access token"
    )
