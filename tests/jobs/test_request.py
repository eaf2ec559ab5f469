"""The request model: presets, TLS modes, and clear errors for bad input."""

from __future__ import annotations

import pytest

from jobs.request import RequestError, Security, parse_request

SECRET = "hunter2-Secret!"


def base(**fields: object) -> dict[str, object]:
    return {
        "inbox_type": "CUSTOM_SMTP",
        "email": "ann@example.test",
        "smtp_password": SECRET,
        "smtp_host": "mail.example.test",
        "smtp_port": 587,
        "imap_host": "mail.example.test",
        "imap_port": 993,
        **fields,
    }


def problems(raw: object) -> dict[str, str]:
    with pytest.raises(RequestError) as info:
        parse_request(raw)  # type: ignore[arg-type]
    return {p.field: p.problem for p in info.value.problems}


@pytest.mark.parametrize(
    ("inbox_type", "smtp", "imap"),
    [
        (
            "GOOGLE_WORKSPACE",
            ("smtp.gmail.com", 587, Security.STARTTLS),
            ("imap.gmail.com", 993, Security.SSL),
        ),
        (
            "OUTLOOK_365",
            ("smtp.office365.com", 587, Security.STARTTLS),
            ("outlook.office365.com", 993, Security.SSL),
        ),
    ],
)
def test_presets_resolve_hosts_ports_and_tls(inbox_type: str, smtp: tuple, imap: tuple) -> None:
    request = parse_request({"inbox_type": inbox_type, "email": "a@corp.test", "smtp_password": SECRET})
    assert (request.smtp.host, request.smtp.port, request.smtp.security) == smtp
    assert (request.imap.host, request.imap.port, request.imap.security) == imap


def test_explicit_values_override_a_preset() -> None:
    request = parse_request(
        {
            "inbox_type": "GOOGLE_WORKSPACE",
            "email": "a@corp.test",
            "smtp_password": SECRET,
            "smtp_port": 465,
            "imap_host": "127.0.0.1",
        }
    )
    assert (request.smtp.host, request.smtp.port, request.smtp.security) == (
        "smtp.gmail.com",
        465,
        Security.SSL,
    )
    assert request.imap.host == "127.0.0.1"


def test_defaults_follow_the_chain_email_smtp_imap() -> None:
    request = parse_request(base())
    assert request.inbox_id == "ann@example.test"
    assert request.smtp_username == "ann@example.test"
    assert request.imap_username == "ann@example.test"
    assert request.imap_password is not None
    assert request.imap_password.get_secret_value() == SECRET
    custom = parse_request(base(smtp_username="ann", imap_password="other", inbox_id="inbox-7"))
    assert (custom.imap_username, custom.inbox_id) == ("ann", "inbox-7")
    assert custom.imap_password is not None and custom.imap_password.get_secret_value() == "other"


@pytest.mark.parametrize(
    ("fields", "security"),
    [
        ({"smtp_port": 465}, Security.SSL),
        ({"smtp_port": 587}, Security.STARTTLS),
        ({"smtp_port": 2525}, Security.STARTTLS),
        ({"smtp_port": 587, "smtp_use_tls": False}, Security.NONE),
        ({"smtp_port": 2465, "smtp_security": "ssl"}, Security.SSL),
        ({"smtp_port": 465, "smtp_security": "starttls"}, Security.STARTTLS),
    ],
)
def test_smtp_tls_mode_follows_port_unless_overridden(fields: dict, security: Security) -> None:
    assert parse_request(base(**fields)).smtp.security is security


def test_imap_use_ssl_false_means_required_starttls() -> None:
    assert parse_request(base(imap_port=143, imap_use_ssl=False)).imap.security is Security.STARTTLS


def test_custom_smtp_names_each_missing_endpoint_field() -> None:
    found = problems({"inbox_type": "CUSTOM_SMTP", "email": "a@b.test", "smtp_password": SECRET})
    assert set(found) == {"smtp_host", "smtp_port", "imap_host", "imap_port"}
    assert all("CUSTOM_SMTP" in text for text in found.values())


def test_every_bad_field_is_named_at_once() -> None:
    found = problems(
        base(
            smtp_port=0,
            imap_port=70000,
            inbox_type="YAHOO",
            colour="red",
            smtp_password=None,
            account_age_days=-1,
        )
    )
    assert set(found) == {
        "smtp_port",
        "imap_port",
        "inbox_type",
        "colour",
        "smtp_password",
        "account_age_days",
    }
    assert found["colour"] == "is not a known field"


def test_missing_password_is_required() -> None:
    raw = base()
    del raw["smtp_password"]
    assert problems(raw) == {"smtp_password": "is required"}


def test_coldsend_native_is_refused_with_a_reason() -> None:
    found = problems(base(inbox_type="COLDSEND_NATIVE"))
    assert "no SMTP or IMAP" in found["inbox_type"]


@pytest.mark.parametrize("raw", [b"{not json", "[1, 2]", b"\xff\xfe", "null"])
def test_not_a_json_object_is_refused(raw: object) -> None:
    assert set(problems(raw)) == {"request"}


def test_host_with_spaces_or_newlines_is_refused() -> None:
    assert "smtp_host" in problems(base(smtp_host="mail.example.test\r\nRCPT TO:<x>"))


def test_password_never_shows_in_repr_dump_or_error() -> None:
    request = parse_request(base())
    assert SECRET not in repr(request)
    assert SECRET not in request.model_dump_json()
    with pytest.raises(RequestError) as info:
        parse_request(base(smtp_port="587x", imap_password=12345, email=SECRET))
    assert SECRET not in str(info.value)


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("email", "ann@example.test\n", "must be an email address"),  # `$` would let the newline in
        ("smtp_host", "mail.example.test\n", "must be a host name"),
        ("imap_host", "mail.example.test\n", "must be a host name"),
        ("inbox_id", "inbox\x1b[2J", "must not contain control characters"),
        ("inbox_id", "inbox\x00", "must not contain control characters"),
        ("email", "ann\x7f@example.test", "must not contain control characters"),
        ("smtp_username", "ann\tx", "must not contain control characters"),
        ("imap_username", "ann\r\nA2 LOGOUT", "must not contain control characters"),
        ("smtp_password", SECRET + "\r\nA2 LOGOUT", "must not contain a line break or NUL"),
        ("imap_password", SECRET + "\x00", "must not contain a line break or NUL"),
    ],
)
def test_control_characters_and_trailing_newlines_are_refused_by_field(
    field: str, value: str, problem: str
) -> None:
    with pytest.raises(RequestError) as info:
        parse_request(base(**{field: value}))
    found = {p.field: p.problem for p in info.value.problems}
    assert problem in found[field]
    assert value not in str(info.value)  # the bad value is never echoed
