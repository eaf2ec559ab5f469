"""The request model against any input (hypothesis): a request or a RequestError naming the
fields, never another exception, never a password or token in the message."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from jobs.request import RequestError, ValidationRequest, parse_request
from tests.strategies import SECRET_MARK, any_json, hostile_text, secrets

KNOWN_FIELDS = sorted(ValidationRequest.model_fields)
SECRET_FIELDS = ("smtp_password", "imap_password")


def outcome(raw: Any) -> ValidationRequest | RequestError:
    try:
        return parse_request(raw)
    except RequestError as exc:
        return exc


def assert_no_secret_in(error: RequestError, *values: str) -> None:
    text = str(error) + repr(error) + repr(error.problems)
    for value in values:
        assert value not in text
    assert SECRET_MARK not in text
    assert error.problems and all(p.field and p.problem for p in error.problems)


@given(st.one_of(hostile_text(), st.binary(max_size=2000), any_json().map(json.dumps)))
def test_any_text_is_a_request_or_a_clear_error(raw: str | bytes) -> None:
    found = outcome(raw)
    if isinstance(found, RequestError):
        assert_no_secret_in(found)


@given(st.dictionaries(st.sampled_from(KNOWN_FIELDS) | hostile_text(max_size=30), any_json(), max_size=12))
def test_any_object_is_a_request_or_an_error_naming_each_bad_field(raw: dict[str, Any]) -> None:
    found = outcome(raw)
    if isinstance(found, RequestError):
        assert_no_secret_in(found)
        named = {*KNOWN_FIELDS, *raw, "request"}
        assert all(any(p.field == n or p.field.startswith(n + ".") for n in named) for p in found.problems)


@given(
    username=hostile_text(),
    password=secrets(),
    imap_password=st.none() | secrets(),
    inbox_type=st.sampled_from(["CUSTOM_SMTP", "GOOGLE_WORKSPACE", "OUTLOOK_365", "COLDSEND_NATIVE", "x"]),
    port=st.integers(-(2**70), 2**70) | hostile_text(max_size=10),
)
def test_odd_user_names_and_passwords_never_leak(
    username: str, password: str, imap_password: str | None, inbox_type: str, port: int | str
) -> None:
    raw: dict[str, Any] = {
        "inbox_type": inbox_type,
        "email": "ann@corp.example",
        "smtp_host": "mail.corp.example",
        "smtp_port": port,
        "imap_host": "mail.corp.example",
        "imap_port": 993,
        "smtp_username": username,
        "smtp_password": password,
    }
    if imap_password is not None:
        raw["imap_password"] = imap_password
    found = outcome(raw)
    if isinstance(found, RequestError):
        assert_no_secret_in(found, password, *([imap_password] if imap_password else []))
    else:
        shown = repr(found) + str(found) + found.model_dump_json()
        assert password not in shown and SECRET_MARK not in shown


@given(
    st.sampled_from(["email", "smtp_host", "smtp_username", "smtp_password", "inbox_id"]),
    st.sampled_from([10_000, 100_000, 1_000_000]),
    st.sampled_from(["a", "é", "\U0001f600", "\x00"]),
)
def test_huge_strings_are_refused_or_taken_quickly(field: str, size: int, char: str) -> None:
    raw = {
        "inbox_type": "CUSTOM_SMTP",
        "email": "ann@corp.example",
        "smtp_password": "pw",
        "smtp_host": "mail.corp.example",
        "smtp_port": 587,
        "imap_host": "mail.corp.example",
        "imap_port": 993,
        field: char * size,
    }
    found = outcome(raw)
    if isinstance(found, RequestError):
        assert len(str(found)) < 1000  # it names the field and the problem, never the value
        assert field in {p.field for p in found.problems}


OAUTH2_SECRETS = ("access_token", "refresh_token", "client_secret", "service_account_key")
OAUTH2_FIELDS = (*OAUTH2_SECRETS, "client_id", "grant", "token_url", "scopes", "tenant")


@given(
    st.dictionaries(st.sampled_from(OAUTH2_SECRETS), secrets(), min_size=1),
    st.dictionaries(st.sampled_from(OAUTH2_FIELDS) | hostile_text(max_size=15), any_json(), max_size=4),
    st.sampled_from(["GOOGLE_WORKSPACE", "OUTLOOK_365", "CUSTOM_SMTP"]),
)
def test_oauth2_secrets_never_leak_whatever_comes_with_them(
    given_secrets: dict[str, str], others: dict[str, Any], inbox_type: str
) -> None:
    raw: dict[str, Any] = {
        "inbox_type": inbox_type,
        "email": "ann@corp.example",
        "smtp_host": "mail.corp.example",
        "smtp_port": 587,
        "imap_host": "mail.corp.example",
        "imap_port": 993,
        "auth": "oauth2",
        "oauth2": {**others, **given_secrets},
    }
    found = outcome(raw)
    if isinstance(found, RequestError):
        assert_no_secret_in(found, *given_secrets.values())
    else:
        shown = repr(found) + str(found) + found.model_dump_json()
        assert SECRET_MARK not in shown
