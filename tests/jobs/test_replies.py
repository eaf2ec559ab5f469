"""Provider replies from provider-replies.md map to the reason a user can act on."""

from __future__ import annotations

import math

import pytest

from jobs.errors import Reason, Reply
from jobs.providers import Provider
from jobs.redact import scrub
from jobs.replies import (
    MAX_BACKOFF_S,
    bounded_backoff_s,
    classify_imap_login,
    classify_smtp_auth,
    enhanced_code,
    password_login_reason,
    reason_for,
    suggested_backoff_s,
)
from jobs.reply_rules import Protocol
from jobs.steps import Step


@pytest.mark.parametrize(
    ("code", "text", "reason"),
    [
        (
            534,
            "5.7.9 Application-specific password required. Learn more at\n5.7.9 https://support.google.com/mail/?p=InvalidSecondFactor",
            Reason.APP_PASSWORD_REQUIRED,
        ),
        (
            535,
            "5.7.8 Username and Password not accepted. Learn more at\n5.7.8 https://support.google.com/mail/?p=BadCredentials",
            Reason.INVALID_CREDENTIALS,
        ),
        (454, "4.7.0 Too many login attempts, please try again later.", Reason.TOO_MANY_ATTEMPTS),
        (
            535,
            "5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant.",
            Reason.SMTP_AUTH_DISABLED,
        ),
        (
            535,
            "5.7.139 Authentication unsuccessful, basic authentication is disabled.",
            Reason.BASIC_AUTH_DISABLED,
        ),
        (535, "5.7.3 Authentication unsuccessful", Reason.INVALID_CREDENTIALS),
        (
            550,
            "5.7.30 Basic authentication is not supported for Client Submission",
            Reason.BASIC_AUTH_DISABLED,
        ),
        (535, "5.7.0 (#AUTH005) Too many bad auth attempts.", Reason.APP_PASSWORD_REQUIRED),
        (535, "Authentication Failed", Reason.INVALID_CREDENTIALS),
        (504, "5.5.4 Unrecognized authentication type", Reason.AUTH_MECHANISM_UNSUPPORTED),
        # RFC 4954's temporary failure: a throttle only when the text says so.
        (454, "4.7.0 Temporary authentication failure", Reason.TEMPORARY_AUTH_FAILURE),
        (451, "4.3.0 Temporary server error", Reason.TEMPORARY_AUTH_FAILURE),
    ],
)
def test_smtp_auth_replies(code: int, text: str, reason: Reason) -> None:
    assert classify_smtp_auth(Reply(code=code, text=text)) is reason


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (
            "[ALERT] Application-specific password required: https://support.google.com/accounts/answer/185833 (Failure)",
            Reason.APP_PASSWORD_REQUIRED,
        ),
        ("[AUTHENTICATIONFAILED] Invalid credentials (Failure)", Reason.INVALID_CREDENTIALS),
        (
            "NO [WEBALERT https://accounts.google.com/signin/continue?x] Web login required. [ALERT] Please log in via your web browser",
            Reason.WEB_LOGIN_REQUIRED,
        ),
        (
            "[ALERT] Your account is not enabled for IMAP use. Please visit your Gmail settings page and enable your account for IMAP access. (Failure)",
            Reason.IMAP_DISABLED,
        ),
        (
            "[ALERT] IMAP access is disabled for your domain. Please contact your domain administrator for questions about this feature. (Failure)",
            Reason.IMAP_DISABLED,
        ),
        ("[ALERT] Too many simultaneous connections. (Failure)", Reason.TOO_MANY_CONNECTIONS),
        ("LOGIN failed.", Reason.INVALID_CREDENTIALS),
        ("Basic authentication is disabled.", Reason.BASIC_AUTH_DISABLED),
        ("Request is throttled. Suggested Backoff Time: 1500 milliseconds", Reason.TOO_MANY_ATTEMPTS),
        (
            "[UNAVAILABLE] Maximum number of connections from user+IP exceeded (mail_max_userip_connections=10)",
            Reason.TOO_MANY_CONNECTIONS,
        ),
        ("Incorrect username or password.", Reason.INVALID_CREDENTIALS),
    ],
)
def test_imap_login_replies(text: str, reason: Reason) -> None:
    assert classify_imap_login(Reply(status="NO", text=text)) is reason


def test_enhanced_code_and_backoff_are_extracted() -> None:
    assert enhanced_code("5.7.139 Authentication unsuccessful") == "5.7.139"
    assert enhanced_code("Authentication Failed") is None
    assert suggested_backoff_s("Request is throttled. Suggested Backoff Time: 1500 milliseconds") == 1.5


@pytest.mark.parametrize(
    ("ms", "seconds"),
    [
        ("1500", 1.5),
        ("86400000", MAX_BACKOFF_S),
        ("99999999999999", MAX_BACKOFF_S),  # 3,000 years
        ("9" * 20, MAX_BACKOFF_S),  # past what Redis takes as a PX
        ("9" * 5_000, MAX_BACKOFF_S),  # past what int() parses
        ("0", None),
    ],
)
def test_a_suggested_backoff_is_taken_at_most_a_day(ms: str, seconds: float | None) -> None:
    assert suggested_backoff_s(f"Request is throttled. Suggested Backoff Time: {ms} milliseconds") == seconds


@pytest.mark.parametrize("seconds", [None, 0.0, -5.0, math.nan, math.inf, -math.inf])
def test_a_wait_that_is_no_positive_finite_number_is_none(seconds: float | None) -> None:
    assert bounded_backoff_s(seconds) is None


def test_scrub_removes_secret_and_its_base64_forms() -> None:
    text = "535 bad AUTH for aHVudGVyMg== and hunter2 and aHVudGVyMg"
    cleaned = scrub(text, ["hunter2"])
    assert "hunter2" not in cleaned and "aHVudGVyMg" not in cleaned


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("outlook.office365.com", Reason.BASIC_AUTH_DISABLED),
        ("OUTLOOK.OFFICE365.COM.", Reason.BASIC_AUTH_DISABLED),
        ("imap.gmail.com", Reason.INVALID_CREDENTIALS),
        ("mail.example.test", Reason.INVALID_CREDENTIALS),
    ],
)
def test_a_refused_password_login_at_microsoft_is_basic_auth_disabled(host: str, expected: Reason) -> None:
    assert password_login_reason(Reason.INVALID_CREDENTIALS, host) is expected
    assert password_login_reason(Reason.TOO_MANY_ATTEMPTS, host) is Reason.TOO_MANY_ATTEMPTS


# Other wordings of the kinds the reply table knows, on both protocols and from any provider: the
# table matches the kind, not one provider's line.
@pytest.mark.parametrize(
    ("protocol", "step", "reply", "reason"),
    [
        (
            "smtp",
            Step.AUTH,
            Reply(code=535, text="5.7.8 Please verify your identity at https://x"),
            Reason.WEB_LOGIN_REQUIRED,
        ),
        (
            "smtp",
            Step.AUTH,
            Reply(code=535, text="Account blocked, log in via a web browser"),
            Reason.WEB_LOGIN_REQUIRED,
        ),
        (
            "imap",
            Step.LOGIN,
            Reply(status="NO", text="[AUTHENTICATIONFAILED] Prove you are not a robot: https://x"),
            Reason.WEB_LOGIN_REQUIRED,
        ),
        (
            "imap",
            Step.LOGIN,
            Reply(status="NO", text="Your password is too simple, change it on the web"),
            Reason.WEB_LOGIN_REQUIRED,
        ),
        (
            "imap",
            Step.LOGIN,
            Reply(status="NO", text="[AUTHENTICATIONFAILED] Use an app password"),
            Reason.APP_PASSWORD_REQUIRED,
        ),
        (
            "smtp",
            Step.AUTH,
            Reply(code=535, text="5.7.8 Error: create a password for an external application"),
            Reason.APP_PASSWORD_REQUIRED,
        ),
        (
            "smtp",
            Step.AUTH,
            Reply(code=530, text="5.7.7 Email sending without SSL/TLS encryption is not allowed."),
            Reason.TLS_REQUIRED,
        ),
        (
            "smtp",
            Step.AUTH,
            Reply(code=503, text="5.5.1 Error: authentication not enabled"),
            Reason.AUTH_MECHANISM_UNSUPPORTED,
        ),
        (
            "smtp",
            Step.AUTH,
            Reply(code=503, text="AUTH command used when not advertised"),
            Reason.AUTH_MECHANISM_UNSUPPORTED,
        ),
        (
            "smtp",
            Step.AUTH,
            Reply(code=502, text="5.5.2 Error: command not recognized"),
            Reason.AUTH_MECHANISM_UNSUPPORTED,
        ),
        (
            "smtp",
            Step.AUTH,
            Reply(code=454, text="4.7.0 Login rate limit exceeded, try later"),
            Reason.TOO_MANY_ATTEMPTS,
        ),
        (
            "smtp",
            Step.AUTH,
            Reply(
                code=535,
                text="5.7.139 Authentication unsuccessful, user is locked by your organization's security defaults policy.",
            ),
            Reason.BASIC_AUTH_DISABLED,
        ),
        (
            "imap",
            Step.EXAMINE,
            Reply(status="NO", text="This user does not have access rights to this service"),
            Reason.IMAP_DISABLED,
        ),
        (
            "imap",
            Step.EXAMINE,
            Reply(status="NO", text="[NONEXISTENT] Mailbox doesn't exist: INBOX"),
            Reason.MAILBOX_UNAVAILABLE,
        ),
        (
            "imap",
            Step.EXAMINE,
            Reply(status="BYE", text="* BYE Autologout; idle for too long"),
            Reason.CONNECTION_CLOSED,
        ),
        (
            "imap",
            Step.LOGIN,
            Reply(status="BYE", text="* BYE System going down for maintenance"),
            Reason.SERVICE_UNAVAILABLE,
        ),
        (
            "imap",
            Step.LOGIN,
            Reply(status="BYE", text="* BYE Too many connections from your IP"),
            Reason.TOO_MANY_CONNECTIONS,
        ),
    ],
)
def test_other_wordings_of_each_kind(protocol: Protocol, step: Step, reply: Reply, reason: Reason) -> None:
    fallback = Reason.MAILBOX_UNAVAILABLE if step is Step.EXAMINE else Reason.INVALID_CREDENTIALS
    assert reason_for(protocol, step, reply, fallback) is reason


def test_gmails_534_5_7_9_is_an_app_password_only_at_google() -> None:
    bare = Reply(code=534, enhanced_code="5.7.9", text="5.7.9 Authentication mechanism is too weak")
    assert classify_smtp_auth(bare, Provider.GOOGLE) is Reason.APP_PASSWORD_REQUIRED
    assert classify_smtp_auth(bare) is Reason.AUTH_MECHANISM_UNSUPPORTED
