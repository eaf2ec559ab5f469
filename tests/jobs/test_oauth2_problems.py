"""The exact problem a user reads for each bad part of a request's oauth2 object, and the
secrets it hands over for scrubbing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from jobs.oauth2_request import (
    MAX_SCOPE_CHARS,
    MAX_URL_CHARS,
    service_account_key_problem,
    token_url_problem,
)
from jobs.request import parse_request
from tests.jobs.test_oauth2_request import SECRET, SERVICE_KEY, oauth, problems

APP = {"grant": "client_credentials", "client_id": "app", "client_secret": SECRET}


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://t.example/" + "a" * (MAX_URL_CHARS - 18), None),
        (
            "https://t.example/" + "a" * (MAX_URL_CHARS - 17),
            f"must be a URL of at most {MAX_URL_CHARS} characters without spaces",
        ),
        ("https://t.example/a b", f"must be a URL of at most {MAX_URL_CHARS} characters without spaces"),
        ("https://t.example/a\x7f", f"must be a URL of at most {MAX_URL_CHARS} characters without spaces"),
        ("https://t.example:99999/token", "is not a URL"),
        ("ftp://t.example/token", "must be an https:// URL"),
        ("https:///token", "must be an https:// URL"),
        ("https://user@t.example/token", "must not carry a user name, password or fragment"),
        ("https://t.example/token#part", "must not carry a user name, password or fragment"),
        ("http://t.example/token", "must be https:// (http:// only to a loopback address such as 127.0.0.1)"),
        ("https://t.example/token", None),
    ],
)
def test_a_token_url_problem_in_words(url: str, problem: str | None) -> None:
    assert token_url_problem(url) == problem


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("{not json", "is not JSON (give the service account's key file as it is)"),
        ("[]", "must be the JSON object of a service account key file"),
        ("{}", "has no client_email or private_key (give the service account's key file as it is)"),
        (
            json.dumps({"client_email": "svc@x", "private_key": "abc"}),
            "has a private_key that is not a PEM private key",
        ),
        (SERVICE_KEY, None),
    ],
)
def test_a_service_account_key_problem_in_words(key: str, problem: str | None) -> None:
    assert service_account_key_problem(key) == problem


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            oauth("GOOGLE_WORKSPACE", refresh_token="rt", client_id="a b"),
            {"oauth2.client_id": "must be printable ASCII without spaces"},
        ),
        (
            oauth("OUTLOOK_365", refresh_token="rt", client_id="a", tenant="bad/tenant"),
            {"oauth2.tenant": "must be a tenant id or domain name"},
        ),
        (
            oauth(
                "GOOGLE_WORKSPACE", refresh_token="rt", client_id="a", scopes=["s" * (MAX_SCOPE_CHARS + 1)]
            ),
            {"oauth2.scopes": "must be a non-empty list of scopes without spaces"},
        ),
        (
            oauth("GOOGLE_WORKSPACE", access_token="a\r\nb"),
            {"oauth2.access_token": "must not contain a line break, NUL or 0x01"},
        ),
        (
            oauth("GOOGLE_WORKSPACE", refresh_token="r\x01t", client_id="a", client_secret="s\x00"),
            {
                "oauth2.refresh_token": "must not contain a line break, NUL or 0x01",
                "oauth2.client_secret": "must not contain a line break, NUL or 0x01",
            },
        ),
        (oauth(), {"oauth2.access_token": "give an access_token, a refresh_token, or a grant"}),
        (
            oauth("OUTLOOK_365", tenant="t1", refresh_token="rt", service_account_key=SERVICE_KEY, **APP),
            {
                "oauth2.refresh_token": "is not used with grant client_credentials",
                "oauth2.service_account_key": "is not used with grant client_credentials",
            },
        ),
        (
            oauth("GOOGLE_WORKSPACE", tenant="t1", **APP),
            {"oauth2.grant": "client_credentials is Microsoft's; Google Workspace uses service_account"},
        ),
        (
            oauth("OUTLOOK_365", **APP),
            {"oauth2.tenant": "is required with grant client_credentials (the tenant id, never common)"},
        ),
        (
            oauth("OUTLOOK_365", tenant="Common", **APP),
            {
                "oauth2.tenant": "must be the tenant's own id or domain with grant client_credentials, not common"
            },
        ),
        (
            oauth("OUTLOOK_365", grant="service_account", service_account_key=SERVICE_KEY),
            {"oauth2.grant": "service_account is Google's; Microsoft 365 uses client_credentials"},
        ),
    ],
)
def test_each_problem_is_named_under_its_field_in_words(
    raw: dict[str, Any], expected: dict[str, str]
) -> None:
    assert problems(raw) == expected


def test_a_scope_of_the_largest_size_is_accepted() -> None:
    request = parse_request(
        oauth("GOOGLE_WORKSPACE", refresh_token="rt", client_id="a", scopes=["s" * MAX_SCOPE_CHARS])
    )
    assert request.oauth2 is not None and request.oauth2.scopes == ["s" * MAX_SCOPE_CHARS]


def test_every_oauth2_secret_is_scrubbed() -> None:
    request = parse_request(
        oauth("GOOGLE_WORKSPACE", refresh_token="rt-value", client_id="a", client_secret=SECRET)
    )
    assert set(request.secrets) == {"rt-value", SECRET}
    with_key = parse_request(
        oauth("GOOGLE_WORKSPACE", grant="service_account", service_account_key=SERVICE_KEY)
    )
    assert set(with_key.secrets) == {SERVICE_KEY, json.loads(SERVICE_KEY)["private_key"]}
