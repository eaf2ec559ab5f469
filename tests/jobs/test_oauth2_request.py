"""The request's oauth2 object: each way in, provider defaults, and one clear problem per bad field."""

from __future__ import annotations

import json
from typing import Any

import pytest

from jobs.oauth2_request import GOOGLE_TOKEN_URL, Grant
from jobs.request import RequestError, parse_request

SECRET = "s3cret-client-value"
PRIVATE_KEY = "-----BEGIN PRIVATE KEY-----\nMIIBVQ\n-----END PRIVATE KEY-----\n"
SERVICE_KEY = json.dumps({"client_email": "svc@proj.iam.example", "private_key": PRIVATE_KEY})


def oauth(inbox_type: str = "CUSTOM_SMTP", **oauth2: Any) -> dict[str, Any]:
    endpoints = (
        {
            "smtp_host": "mail.example.test",
            "smtp_port": 587,
            "imap_host": "mail.example.test",
            "imap_port": 993,
        }
        if inbox_type == "CUSTOM_SMTP"
        else {}
    )
    return {
        "inbox_type": inbox_type,
        "email": "ann@corp.test",
        "auth": "oauth2",
        "oauth2": oauth2,
        **endpoints,
    }


def problems(raw: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(RequestError) as info:
        parse_request(raw)
    text = str(info.value)
    assert SECRET not in text and PRIVATE_KEY not in text
    return {p.field: p.problem for p in info.value.problems}


def test_a_refresh_token_at_microsoft_gets_the_common_endpoint_and_user_scopes() -> None:
    request = parse_request(oauth("OUTLOOK_365", refresh_token="rt", client_id="app"))
    assert request.oauth2 is not None
    assert request.oauth2.grant is Grant.REFRESH_TOKEN
    assert request.oauth2.token_url == "https://login.microsoftonline.com/common/oauth2/v2.0/token"
    assert "offline_access" in (request.oauth2.scopes or [])
    assert request.oauth2.model_fields_set == {"refresh_token", "client_id"}  # defaults not marked as given


def test_app_only_at_microsoft_uses_the_tenant_and_the_default_scope() -> None:
    request = parse_request(
        oauth(
            "OUTLOOK_365",
            grant="client_credentials",
            client_id="app",
            client_secret=SECRET,
            tenant="contoso.example",
        )
    )
    assert request.oauth2 is not None
    assert request.oauth2.token_url == "https://login.microsoftonline.com/contoso.example/oauth2/v2.0/token"
    assert request.oauth2.scopes == ["https://outlook.office365.com/.default"]


def test_a_google_service_account_gets_google_defaults_and_its_key_is_a_secret() -> None:
    request = parse_request(
        oauth("GOOGLE_WORKSPACE", grant="service_account", service_account_key=SERVICE_KEY)
    )
    assert request.oauth2 is not None
    assert (request.oauth2.token_url, request.oauth2.scopes) == (
        GOOGLE_TOKEN_URL,
        ["https://mail.google.com/"],
    )
    assert PRIVATE_KEY not in repr(request) and PRIVATE_KEY in request.secrets


@pytest.mark.parametrize(
    ("raw", "field", "problem"),
    [
        (
            oauth(refresh_token="rt", token_url="https://t.example/token"),
            "oauth2.client_id",
            "required with grant refresh_token",
        ),
        (oauth("OUTLOOK_365", grant="client_credentials", client_id="a"), "oauth2.client_secret", "required"),
        (
            oauth("OUTLOOK_365", grant="client_credentials", client_id="a", client_secret=SECRET),
            "oauth2.tenant",
            "required",
        ),
        (
            oauth(
                "OUTLOOK_365",
                grant="client_credentials",
                client_id="a",
                client_secret=SECRET,
                tenant="Common",
            ),
            "oauth2.tenant",
            "not common",
        ),
        (
            oauth(
                "OUTLOOK_365",
                grant="client_credentials",
                client_id="a",
                client_secret=SECRET,
                tenant="organizations",
            ),
            "oauth2.tenant",
            "not organizations",
        ),
        (oauth(refresh_token="rt", client_id="a"), "oauth2.token_url", "required for CUSTOM_SMTP"),
        (
            oauth(
                "GOOGLE_WORKSPACE", refresh_token="rt", client_id="a", token_url="http://oauth.example/token"
            ),
            "oauth2.token_url",
            "https://",
        ),
        (
            oauth("GOOGLE_WORKSPACE", refresh_token="rt", client_id="a", token_url="https://u:p@t.example/"),
            "oauth2.token_url",
            "user name",
        ),
        (
            oauth("GOOGLE_WORKSPACE", grant="service_account", service_account_key="{not json"),
            "oauth2.service_account_key",
            "not JSON",
        ),
        (
            oauth("GOOGLE_WORKSPACE", grant="service_account", service_account_key='{"client_email": "x"}'),
            "oauth2.service_account_key",
            "no private_key",
        ),
        (
            oauth("OUTLOOK_365", grant="service_account", service_account_key=SERVICE_KEY),
            "oauth2.grant",
            "Google's",
        ),
        (
            oauth(
                "GOOGLE_WORKSPACE",
                grant="client_credentials",
                client_id="a",
                client_secret=SECRET,
                tenant="t1",
            ),
            "oauth2.grant",
            "Microsoft's",
        ),
        (oauth(), "oauth2.access_token", "give an access_token"),
        (
            oauth("GOOGLE_WORKSPACE", access_token="at", refresh_token="rt", client_id="a"),
            "oauth2.access_token",
            "one or the other",
        ),
        (
            oauth("GOOGLE_WORKSPACE", refresh_token="rt", client_id="a", scopes=["a b"]),
            "oauth2.scopes",
            "without spaces",
        ),
        (
            oauth("OUTLOOK_365", refresh_token="rt", client_id="a", tenant="bad/tenant"),
            "oauth2.tenant",
            "tenant id",
        ),
    ],
)
def test_each_bad_field_is_named(raw: dict[str, Any], field: str, problem: str) -> None:
    found = problems(raw)
    assert problem in found.get(field, ""), found


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8080/token", "http://[::1]:9/token", "http://localhost/token", "http://127.3.4.5/t"],
)
def test_plain_http_is_allowed_only_to_loopback(url: str) -> None:
    request = parse_request(oauth(refresh_token="rt", client_id="a", token_url=url))
    assert request.oauth2 is not None and request.oauth2.token_url == url


def test_both_missing_fields_of_a_grant_are_reported_together() -> None:
    found = problems(oauth("OUTLOOK_365", grant="client_credentials"))
    assert {"oauth2.client_id", "oauth2.client_secret"} <= set(found)
