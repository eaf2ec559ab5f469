"""The IMAP check against a real Dovecot and small scripted IMAP servers on loopback."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable

import pytest

from jobs.bounds import IMAP_MAX_LINE_BYTES as MAX_LINE_BYTES
from jobs.errors import ErrorCode, Reason
from jobs.imap_check import check_imap
from jobs.reply_text import MAX_REPLY_TEXT_CHARS
from tests.jobs.checks import (
    CLOSED_PORT,
    STEP_TIMEOUT_S,
    TIMEOUT_SLACK_S,
    leaked_part,
    options,
    request,
    split_marker,
)
from tests.servers.certs import PKI
from tests.servers.dovecot import Account, Dovecot
from tests.servers.fakes import FakeServer, ImapScript, close_on_accept, silent

FakeFactory = Callable[..., FakeServer]


def imap_request(
    port: int,
    use_ssl: bool,
    username: str = "ann@inboxcheck.test",
    password: str = "not-the-password",
    **fields: object,
):
    return request(imap_port=port, imap_use_ssl=use_ssl, email=username, smtp_password=password, **fields)


@pytest.mark.parametrize("use_ssl", [True, False], ids=["implicit-tls", "starttls"])
async def test_valid_login_and_inbox_on_dovecot(
    dovecot: Dovecot, imap_user: Account, ca_file: str, use_ssl: bool
) -> None:
    port = dovecot.imaps_port if use_ssl else dovecot.imap_port
    result = await check_imap(imap_request(port, use_ssl, *imap_user), options(ca_file))
    assert result.status == "ok", result.detail
    assert result.tls is not None and result.tls.version in ("TLSv1.2", "TLSv1.3") and result.tls.cipher
    steps = [s.step for s in result.steps]
    assert steps == (
        ["dns", "connect", "tls", "greeting", "login", "examine"]
        if use_ssl
        else ["dns", "connect", "greeting", "starttls", "login", "examine"]
    )


async def test_wrong_password_on_dovecot(dovecot: Dovecot, imap_user: Account, ca_file: str) -> None:
    result = await check_imap(
        imap_request(dovecot.imaps_port, True, imap_user.email, "wrong"), options(ca_file)
    )
    assert (result.error_code, result.reason, result.failed_step) == (
        ErrorCode.AUTH_FAILED,
        Reason.INVALID_CREDENTIALS,
        "login",
    )
    assert result.reply_status == "NO" and "AUTHENTICATIONFAILED" in (result.reply_text or "")
    assert result.detail == f"IMAP server 127.0.0.1:{dovecot.imaps_port} refused LOGIN"
    assert not result.retryable


async def test_changed_password_is_seen_at_the_next_check(
    dovecot: Dovecot, imap_user: Account, ca_file: str
) -> None:
    before = await check_imap(imap_request(dovecot.imaps_port, True, *imap_user), options(ca_file))
    dovecot.set_user(imap_user.email, "a-new-password")
    after = await check_imap(imap_request(dovecot.imaps_port, True, *imap_user), options(ca_file))
    assert (before.status, after.reason) == ("ok", Reason.INVALID_CREDENTIALS)


@pytest.mark.parametrize(
    ("cert", "reason"),
    [
        ("expired", Reason.CERT_EXPIRED),
        ("wrong_host", Reason.HOSTNAME_MISMATCH),
        ("untrusted", Reason.CERT_UNTRUSTED),
    ],
)
async def test_certificate_problems_on_dovecot(
    dovecot_factory: Callable[..., Dovecot], ca_file: str, cert: str, reason: Reason
) -> None:
    server = dovecot_factory(cert=cert, users={"bob@inboxcheck.test": "pw"})
    implicit = await check_imap(
        imap_request(server.imaps_port, True, "bob@inboxcheck.test", "pw"), options(ca_file)
    )
    starttls = await check_imap(
        imap_request(server.imap_port, False, "bob@inboxcheck.test", "pw"), options(ca_file)
    )
    assert (implicit.error_code, implicit.reason, implicit.failed_step) == (
        ErrorCode.SSL_ERROR,
        reason,
        "tls",
    )
    assert (starttls.error_code, starttls.reason, starttls.failed_step) == (
        ErrorCode.SSL_ERROR,
        reason,
        "starttls",
    )


async def test_tls_mode_mismatch_both_ways(dovecot: Dovecot, imap_user: Account, ca_file: str) -> None:
    tls_to_plain = await check_imap(imap_request(dovecot.imap_port, True, *imap_user), options(ca_file))
    started = time.monotonic()
    plain_to_tls = await check_imap(
        imap_request(dovecot.imaps_port, False, *imap_user), options(ca_file, step_timeout=10)
    )
    assert (tls_to_plain.error_code, tls_to_plain.reason) == (ErrorCode.SSL_ERROR, Reason.TLS_MODE_MISMATCH)
    assert (plain_to_tls.error_code, plain_to_tls.reason) == (ErrorCode.SSL_ERROR, Reason.TLS_MODE_MISMATCH)
    assert plain_to_tls.detail == (
        f"IMAP server 127.0.0.1:{dovecot.imaps_port} expects implicit TLS from the first byte; "
        "use SSL mode, not STARTTLS or plain"
    )
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("untagged", "reply", "reason", "retryable"),
    [
        (
            [],
            "NO [ALERT] Application-specific password required: https://support.google.com/accounts/answer/185833 (Failure)",
            Reason.APP_PASSWORD_REQUIRED,
            False,
        ),
        ([], "NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)", Reason.INVALID_CREDENTIALS, False),
        (
            ["* NO [WEBALERT https://accounts.google.com/signin/continue?sarp=1] Web login required."],
            "NO [ALERT] Please log in via your web browser: https://support.google.com/mail/accounts/answer/78754 (Failure)",
            Reason.WEB_LOGIN_REQUIRED,
            False,
        ),
        (
            [],
            "NO [ALERT] Your account is not enabled for IMAP use. Please visit your Gmail settings page and "
            "enable your account for IMAP access. (Failure)",
            Reason.IMAP_DISABLED,
            False,
        ),
        (
            [],
            "NO [ALERT] IMAP access is disabled for your domain. Please contact your domain administrator "
            "for questions about this feature. (Failure)",
            Reason.IMAP_DISABLED,
            False,
        ),
        ([], "NO [ALERT] Too many simultaneous connections. (Failure)", Reason.TOO_MANY_CONNECTIONS, True),
        ([], "NO LOGIN failed.", Reason.INVALID_CREDENTIALS, False),
        ([], "NO Basic authentication is disabled.", Reason.BASIC_AUTH_DISABLED, False),
        (
            [],
            "NO [UNAVAILABLE] Maximum number of connections from user+IP exceeded (mail_max_userip_connections=10)",
            Reason.TOO_MANY_CONNECTIONS,
            True,
        ),
    ],
)
async def test_provider_login_replies(
    fake_server: FakeFactory,
    pki: PKI,
    ca_file: str,
    untagged: list[str],
    reply: str,
    reason: Reason,
    retryable: bool,
) -> None:
    script = ImapScript(login_reply=reply, untagged_before_login_reply=untagged)
    server = fake_server(script, ssl_context=pki.valid.ssl_context)
    result = await check_imap(imap_request(server.port, True), options(ca_file))
    assert (result.reason, result.retryable, result.failed_step) == (reason, retryable, "login")
    assert result.reply_status == "NO"
    assert len(script.logins) == 1


async def test_throttling_reply_carries_the_suggested_backoff(
    fake_server: FakeFactory, pki: PKI, ca_file: str
) -> None:
    script = ImapScript(login_reply="BAD Request is throttled. Suggested Backoff Time: 1500 milliseconds")
    server = fake_server(script, ssl_context=pki.valid.ssl_context)
    result = await check_imap(imap_request(server.port, True), options(ca_file))
    assert (result.reason, result.retryable, result.retry_after_s) == (Reason.TOO_MANY_ATTEMPTS, True, 1.5)


async def test_inbox_that_cannot_be_opened(fake_server: FakeFactory, pki: PKI, ca_file: str) -> None:
    script = ImapScript(
        login_reply="OK Logged in", examine_reply="NO [NONEXISTENT] Mailbox doesn't exist: INBOX"
    )
    server = fake_server(script, ssl_context=pki.valid.ssl_context)
    result = await check_imap(imap_request(server.port, True), options(ca_file))
    assert (result.error_code, result.reason, result.failed_step) == (
        ErrorCode.AUTH_FAILED,
        Reason.MAILBOX_UNAVAILABLE,
        "examine",
    )


async def test_starttls_not_offered_sends_no_password(fake_server: FakeFactory, ca_file: str) -> None:
    script = ImapScript(login_reply="OK Logged in")
    server = fake_server(script)
    result = await check_imap(imap_request(server.port, False), options(ca_file))
    assert (result.error_code, result.reason) == (ErrorCode.SSL_ERROR, Reason.STARTTLS_UNAVAILABLE)
    assert script.logins == []


async def test_logindisabled_is_respected(fake_server: FakeFactory, pki: PKI, ca_file: str) -> None:
    script = ImapScript(
        capabilities="IMAP4rev1 LOGINDISABLED",
        starttls_context=pki.valid.ssl_context,
        capabilities_after_tls="IMAP4rev1 LOGINDISABLED",
        login_reply="OK Logged in",
    )
    server = fake_server(script)
    result = await check_imap(imap_request(server.port, False), options(ca_file))
    assert (result.error_code, result.reason) == (ErrorCode.AUTH_FAILED, Reason.AUTH_MECHANISM_UNSUPPORTED)
    assert script.logins == []


async def test_starttls_with_scripted_server(fake_server: FakeFactory, pki: PKI, ca_file: str) -> None:
    script = ImapScript(
        capabilities="IMAP4rev1 LOGINDISABLED",
        starttls_context=pki.valid.ssl_context,
        login_reply="OK Logged in",
    )
    server = fake_server(script)
    result = await check_imap(imap_request(server.port, False), options(ca_file))
    assert result.status == "ok", result.detail
    assert len(script.logins) == 1


async def test_hang_after_login_times_out(fake_server: FakeFactory, pki: PKI, ca_file: str) -> None:
    server = fake_server(ImapScript(hang_after_login=True), ssl_context=pki.valid.ssl_context)
    started = time.monotonic()
    result = await check_imap(imap_request(server.port, True), options(ca_file))
    assert (result.error_code, result.reason, result.failed_step) == (
        ErrorCode.TIMEOUT,
        Reason.RESPONSE_TIMEOUT,
        "login",
    )
    assert time.monotonic() - started < STEP_TIMEOUT_S + TIMEOUT_SLACK_S


@pytest.mark.parametrize(
    ("greeting", "reason"),
    [
        # Courier's and others' per-IP limit: this account's problem, not the service's.
        ("* BYE Too many connections, try again later", Reason.TOO_MANY_CONNECTIONS),
        ("* BYE Service temporarily unavailable", Reason.SERVICE_UNAVAILABLE),
    ],
)
async def test_bye_greeting(
    fake_server: FakeFactory, pki: PKI, ca_file: str, greeting: str, reason: Reason
) -> None:
    server = fake_server(ImapScript(greeting=greeting), ssl_context=pki.valid.ssl_context)
    result = await check_imap(imap_request(server.port, True), options(ca_file))
    assert (result.error_code, result.reason, result.retryable) == (ErrorCode.CONNECTION_FAILED, reason, True)
    assert "BYE" in (result.reply_text or "") and result.reply_status == "BYE"


async def test_silent_server_times_out_within_the_limit(fake_server: FakeFactory, ca_file: str) -> None:
    server = fake_server(silent)
    for use_ssl, step, reason in (
        (True, "tls", Reason.TLS_HANDSHAKE_TIMEOUT),
        (False, "greeting", Reason.NO_GREETING),
    ):
        started = time.monotonic()
        result = await check_imap(imap_request(server.port, use_ssl), options(ca_file))
        assert (result.error_code, result.reason, result.failed_step) == (ErrorCode.TIMEOUT, reason, step)
        assert STEP_TIMEOUT_S <= time.monotonic() - started < STEP_TIMEOUT_S + TIMEOUT_SLACK_S


async def test_close_on_accept_and_closed_port(fake_server: FakeFactory, ca_file: str) -> None:
    server = fake_server(close_on_accept)
    closed = await check_imap(imap_request(server.port, False), options(ca_file))
    refused = await check_imap(imap_request(CLOSED_PORT, True), options(ca_file))
    assert (closed.error_code, closed.reason) == (ErrorCode.CONNECTION_FAILED, Reason.CONNECTION_CLOSED)
    assert (refused.error_code, refused.reason) == (ErrorCode.CONNECTION_FAILED, Reason.CONNECTION_REFUSED)


async def _answers_login_with_a_wrong_tag(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] odd server\r\n")
    while line := await reader.readline():
        tag, _, command = line.decode().partition(" ")
        if command.upper().startswith("CAPABILITY"):
            writer.write(f"* CAPABILITY IMAP4rev1\r\n{tag} OK done\r\n".encode())
        else:
            writer.write(b"Z999 NO not your tag\r\n")
    writer.close()


async def test_reply_with_a_foreign_tag_is_a_protocol_error_and_leaks_nothing(
    fake_server: FakeFactory, pki: PKI, ca_file: str, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "Leak-Me-Not-42"
    server = fake_server(_answers_login_with_a_wrong_tag, ssl_context=pki.valid.ssl_context)
    with caplog.at_level(logging.DEBUG):
        result = await check_imap(imap_request(server.port, True, password=secret), options(ca_file))
    assert (result.error_code, result.reason, result.failed_step) == (
        ErrorCode.CONNECTION_FAILED,
        Reason.PROTOCOL_ERROR,
        "login",
    )
    # aioimaplib's own error names the pending LOGIN command, password and all.
    assert secret not in caplog.text and secret not in result.model_dump_json()


async def test_handshake_refused_by_the_server_is_named(
    fake_server: FakeFactory, pki: PKI, ca_file: str
) -> None:
    # A server that insists on a client certificate ends the handshake with an alert.
    demanding = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    demanding.load_cert_chain(pki.valid.cert_file, pki.valid.key_file)
    demanding.load_verify_locations(pki.ca_file)
    demanding.verify_mode = ssl.CERT_REQUIRED
    demanding.maximum_version = ssl.TLSVersion.TLSv1_2  # so the alert comes inside the handshake
    server = fake_server(ImapScript(), ssl_context=demanding)
    result = await check_imap(imap_request(server.port, True), options(ca_file))
    assert (result.error_code, result.reason, result.failed_step) == (
        ErrorCode.SSL_ERROR,
        Reason.TLS_HANDSHAKE_FAILED,
        "tls",
    )


async def test_preauthenticated_session_is_a_protocol_error_not_a_crash(
    fake_server: FakeFactory, pki: PKI, ca_file: str
) -> None:
    server = fake_server(
        ImapScript(greeting="* PREAUTH [CAPABILITY IMAP4rev1] logged in as someone"),
        ssl_context=pki.valid.ssl_context,
    )
    result = await check_imap(imap_request(server.port, True), options(ca_file))
    assert (result.error_code, result.reason, result.failed_step) == (
        ErrorCode.CONNECTION_FAILED,
        Reason.PROTOCOL_ERROR,
        "login",
    )


async def _echoes_the_login_line(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"* OK [CAPABILITY IMAP4rev1] echoing server\r\n")
    while line := await reader.readline():
        tag, _, command = line.decode().rstrip("\r\n").partition(" ")
        if command.upper().startswith("CAPABILITY"):
            writer.write(f"* CAPABILITY IMAP4rev1\r\n{tag} OK done\r\n".encode())
        else:
            writer.write(f"{tag} NO [AUTHENTICATIONFAILED] rejected: {command}\r\n".encode())
    writer.close()


async def test_an_echo_of_the_quoted_password_is_scrubbed(
    fake_server: FakeFactory, pki: PKI, ca_file: str
) -> None:
    secret = 'Quote"and\\Backslash-7'  # sent as an IMAP quoted string: "Quote\"and\\Backslash-7"
    server = fake_server(_echoes_the_login_line, ssl_context=pki.valid.ssl_context)
    result = await check_imap(imap_request(server.port, True, password=secret), options(ca_file))
    assert result.reason is Reason.INVALID_CREDENTIALS
    assert "LOGIN" in (result.reply_text or "") and "***" in (result.reply_text or "")
    dumped = result.model_dump_json()
    assert "Backslash-7" not in dumped and "Quote" not in (result.reply_text or "")


MIB = 1024 * 1024


def _huge(head: str, secret: str, size: int) -> str:
    """`head`, then the secret running across the cap, then the secret again and again to `size`."""
    pad = "." * (MAX_REPLY_TEXT_CHARS - 5 - len(head))
    return head + pad + (secret + "-" * 50) * (size // (len(secret) + 50))


# Far past the reply text cap, within the line bound: cut, and still classified from its head.
LONG_REPLY = MAX_LINE_BYTES - 1024


@pytest.mark.parametrize(
    ("reply_head", "script", "reason", "step"),
    [
        (
            "[AUTHENTICATIONFAILED] Invalid credentials (Failure) ",
            lambda text: ImapScript(login_reply=f"NO {text}"),
            Reason.INVALID_CREDENTIALS,
            "login",
        ),
        (
            "* BYE Too many simultaneous connections. ",
            lambda text: ImapScript(greeting=text),
            Reason.TOO_MANY_CONNECTIONS,
            "greeting",
        ),
    ],
    ids=["login-no", "greeting-bye"],
)
async def test_a_long_reply_is_cut_to_its_head_and_still_classified(
    fake_server: FakeFactory,
    pki: PKI,
    ca_file: str,
    reply_head: str,
    script: Callable[[str], ImapScript],
    reason: Reason,
    step: str,
) -> None:
    secret = "Leak-Me-Not-42"
    server = fake_server(script(_huge(reply_head, secret, LONG_REPLY)), ssl_context=pki.valid.ssl_context)
    started = time.monotonic()
    result = await check_imap(imap_request(server.port, True, password=secret), options(ca_file))
    assert time.monotonic() - started < STEP_TIMEOUT_S
    assert (result.reason, result.failed_step) == (reason, step)
    head, left_off = split_marker(result.reply_text or "")
    assert head.startswith(reply_head) and len(head) <= MAX_REPLY_TEXT_CHARS
    assert left_off is not None and left_off > LONG_REPLY - 2 * MAX_REPLY_TEXT_CHARS
    assert len(result.detail or "") <= MAX_REPLY_TEXT_CHARS
    assert leaked_part(head, secret) is None and secret not in result.model_dump_json()


@pytest.mark.parametrize(
    ("script", "step"),
    [
        (lambda text: ImapScript(login_reply=f"NO {text}"), "login"),
        (lambda text: ImapScript(greeting=f"* BYE {text}"), "greeting"),
    ],
    ids=["login-no", "greeting-bye"],
)
async def test_a_16_mib_line_ends_the_check_at_the_line_bound(
    fake_server: FakeFactory, pki: PKI, ca_file: str, script: Callable[[str], ImapScript], step: str
) -> None:
    secret = "Leak-Me-Not-42"
    server = fake_server(script(_huge("x", secret, 16 * MIB)), ssl_context=pki.valid.ssl_context)
    result = await check_imap(imap_request(server.port, True, password=secret), options(ca_file))
    assert (result.error_code, result.reason, result.failed_step) == (
        ErrorCode.CONNECTION_FAILED,
        Reason.PROTOCOL_ERROR,
        step,
    )
    assert f"more than {MAX_LINE_BYTES} bytes without ending a line" in (result.detail or "")
    assert secret not in result.model_dump_json()


@pytest.mark.parametrize(
    "injected",
    [
        # Glued to the first line read over TLS ("* CAPABILITY ..."), it would add LOGINDISABLED.
        b"* CAPABILITY IMAP4rev1 LOGINDISABLED ",
        # Glued to that line without the space: garbage in the capabilities, and LOGIN goes out.
        b"* CAPABILITY IMAP4rev1 LOGINDISABLED",
        # A whole line: aioimaplib, with no command pending, drops it silently.
        b"* CAPABILITY IMAP4rev1 LOGINDISABLED\r\n",
    ],
    ids=["partial-line", "partial-line-no-space", "whole-line"],
)
async def test_data_sent_with_the_starttls_ok_ends_the_check_before_login(
    fake_server: FakeFactory, pki: PKI, ca_file: str, injected: bytes
) -> None:
    script = ImapScript(
        starttls_context=pki.valid.ssl_context, login_reply="OK Logged in", injected_after_starttls=injected
    )
    server = fake_server(script)
    result = await check_imap(imap_request(server.port, False), options(ca_file))
    assert (result.error_code, result.reason, result.failed_step) == (
        ErrorCode.CONNECTION_FAILED,
        Reason.PROTOCOL_ERROR,
        "starttls",
    )
    assert "after accepting STARTTLS, before the TLS handshake" in (result.detail or "")
    assert script.logins == []
