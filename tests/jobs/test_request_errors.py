"""The message a bad request gets: every bad field named with its problem, in one line."""

from __future__ import annotations

import pytest

from jobs.request import RequestError, parse_request


def test_every_problem_is_listed_in_one_message() -> None:
    with pytest.raises(RequestError) as caught:
        parse_request({"email": "ann@example.com", "smtp_password": "pw", "colour": "blue"})
    assert str(caught.value) == "invalid request: inbox_type: is required; colour: is not a known field"


def test_text_that_is_not_json_says_where_it_stops_being_json() -> None:
    with pytest.raises(RequestError) as caught:
        parse_request('{"email": ')
    assert str(caught.value) == "invalid request: request: is not valid JSON at position 10"


def test_bytes_that_are_not_utf8_are_not_json() -> None:
    with pytest.raises(RequestError) as caught:
        parse_request(b'{"email": "\xff"}')
    assert str(caught.value) == "invalid request: request: is not valid JSON"


def test_json_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(RequestError) as caught:
        parse_request("[1, 2]")
    assert str(caught.value) == "invalid request: request: must be a JSON object"


def test_a_request_as_json_text_or_bytes_is_read() -> None:
    text = '{"inbox_type": "GOOGLE_WORKSPACE", "email": "ann@example.com", "smtp_password": "pw"}'
    assert parse_request(text).smtp_host == parse_request(text.encode()).smtp_host == "smtp.gmail.com"
