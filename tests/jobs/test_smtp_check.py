"""The SMTP check against real aiosmtpd servers and small fault servers on loopback."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable

import pytest

from jobs.errors import ErrorCode, Reason
from jobs.reply_text import MAX_REPLY_TEXT_CHARS
from jobs.resolutions import resolution
from jobs.smtp_check import check_smtp
from tests.jobs.checks import (
    CLOSED_PORT,
    LOOPBACK,
    STEP_TIMEOUT_S,
    TIMEOUT_SLACK_S,
    leaked_part,
    options,
    request,
    split_marker,
)
from tests.servers.certs import PKI
from tests.servers.dns import DnsServer
from tests.servers.fakes import FakeServer, SmtpScript, close_on_accept, silent
from tests.servers.smtp import SmtpServer

USER = "ann@inboxcheck.test"
PASSWORD = "correct horse battery"

SmtpFactory = Callable[..., SmtpServer]


def smtp_request(port: int, security: str, password: str = PASSWORD, **fields: object):
    return request(smtp_port=port, smtp_security=security, smtp_password=password, **fields)


@pytest.mark.parametrize("mode", ["starttls", "ssl"])
async def test_valid_login_over_each_tls_mode(smtp_server: SmtpFactory, ca_file: str, mode: str) -> None:
    server = smtp_server(mode=mode, users={USER: PASSWORD})
    result = await check_smtp(smtp_request(server.port, mode), options(ca_file))
    assert result.status == "ok", result.detail
    assert result.error_code is None
    assert result.tls is not None and result.tls.version in ("TLSv1.2", "TLSv1.3")
    assert result.tls.cert_not_after is not None and result.tls.cert_days_left > 0
    assert result.auth_mechanism == "PLAIN"
    assert server.auth_attempts == 1
    expected = (
        ["dns", "connect", "tls", "ehlo", "auth"]
        if mode == "ssl"
        else ["dns", "connect", "greeting", "ehlo", "starttls", "ehlo_tls", "auth"]
    )
    assert [s.step for s in result.steps] == expected
    assert all(s.ok and s.ms >= 0 for s in result.steps)


async def test_wrong_password_costs_exactly_one_login_attempt(smtp_server: SmtpFactory, ca_file: str) -> None:
    server = smtp_server(mode="starttls", users={USER: PASSWORD})
    result = await check_smtp(smtp_request(server.port, "starttls", "wrong"), options(ca_file))
    assert (result.error_code, result.reason) == (ErrorCode.AUTH_FAILED, Reason.INVALID_CREDENTIALS)
    assert (result.failed_step, result.reply_code, result.enhanced_status_code) == ("auth", 535, "5.7.8")
    assert not result.retryable
    # Both PLAIN and LOGIN were offered; trying the second would be a second strike at the provider.
    assert server.auth_attempts == 1


async def test_login_mechanism_used_when_plain_is_not_offered(smtp_server: SmtpFactory, ca_file: str) -> None:
    server = smtp_server(mode="starttls", users={USER: PASSWORD}, auth_mechanisms=["LOGIN"])
    result = await check_smtp(smtp_request(server.port, "starttls"), options(ca_file))
    assert result.status == "ok" and result.auth_mechanism == "LOGIN"


async def test_no_usable_mechanism_sends_no_password(smtp_server: SmtpFactory, ca_file: str) -> None:
    server = smtp_server(mode="starttls", users={USER: PASSWORD}, auth_mechanisms=["CRAM-MD5"])
    result = await check_smtp(smtp_request(server.port, "starttls"), options(ca_file))
    assert (result.error_code, result.reason) == (ErrorCode.AUTH_FAILED, Reason.AUTH_MECHANISM_UNSUPPORTED)
    assert "CRAM-MD5" in (result.detail or "")
    assert server.auth_attempts == 0


@pytest.mark.parametrize(
    ("reply", "reason", "retryable"),
    [
        (
            "534-5.7.9 Application-specific password required. Learn more at\r\n"
            "534 5.7.9  https://support.google.com/mail/?p=InvalidSecondFactor",
            Reason.APP_PASSWORD_REQUIRED,
            False,
        ),
        (
            "535-5.7.8 Username and Password not accepted. Learn more at\r\n"
            "535 5.7.8  https://support.google.com/mail/?p=BadCredentials",
            Reason.INVALID_CREDENTIALS,
            False,
        ),
        ("454 4.7.0 Too many login attempts, please try again later.", Reason.TOO_MANY_ATTEMPTS, True),
        (
            "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. "
            "Visit https://aka.ms/smtp_auth_disabled for more information.",
            Reason.SMTP_AUTH_DISABLED,
            False,
        ),
        (
            "535 5.7.139 Authentication unsuccessful, basic authentication is disabled.",
            Reason.BASIC_AUTH_DISABLED,
            False,
        ),
        ("535 5.7.3 Authentication unsuccessful", Reason.INVALID_CREDENTIALS, False),
        ("535 5.7.0 (#AUTH005) Too many bad auth attempts.", Reason.APP_PASSWORD_REQUIRED, False),
    ],
)
async def test_provider_auth_replies(
    smtp_server: SmtpFactory, ca_file: str, reply: str, reason: Reason, retryable: bool
) -> None:
    server = smtp_server(mode="starttls", users={}, auth_failure_reply=reply)
    result = await check_smtp(smtp_request(server.port, "starttls"), options(ca_file))
    assert (result.error_code, result.reason, result.retryable) == (ErrorCode.AUTH_FAILED, reason, retryable)
    assert result.reply_code == int(reply[:3])
    assert result.reply_text and reply.splitlines()[0][4:20] in result.reply_text


@pytest.mark.parametrize(
    ("cert", "reason"),
    [
        ("expired", Reason.CERT_EXPIRED),
        ("wrong_host", Reason.HOSTNAME_MISMATCH),
        ("untrusted", Reason.CERT_UNTRUSTED),
    ],
)
@pytest.mark.parametrize("mode", ["starttls", "ssl"])
async def test_certificate_problems_are_named(
    smtp_server: SmtpFactory, ca_file: str, cert: str, reason: Reason, mode: str
) -> None:
    server = smtp_server(mode=mode, users={USER: PASSWORD}, cert=cert)
    result = await check_smtp(smtp_request(server.port, mode), options(ca_file))
    assert (result.error_code, result.reason) == (ErrorCode.SSL_ERROR, reason)
    assert result.failed_step == ("tls" if mode == "ssl" else "starttls")
    assert (result.detail or "").startswith(f"SMTP server 127.0.0.1:{server.port}: ")
    assert server.auth_attempts == 0


async def test_implicit_tls_against_a_starttls_port(smtp_server: SmtpFactory, ca_file: str) -> None:
    server = smtp_server(mode="starttls", users={USER: PASSWORD})
    result = await check_smtp(smtp_request(server.port, "ssl"), options(ca_file))
    assert (result.error_code, result.reason) == (ErrorCode.SSL_ERROR, Reason.TLS_MODE_MISMATCH)
    assert "STARTTLS" in (result.detail or "")


async def test_starttls_against_an_implicit_tls_port_is_named_not_timed_out(
    smtp_server: SmtpFactory, ca_file: str
) -> None:
    server = smtp_server(mode="ssl", users={USER: PASSWORD})
    started = time.monotonic()
    result = await check_smtp(smtp_request(server.port, "starttls"), options(ca_file, step_timeout=10))
    assert (result.error_code, result.reason) == (ErrorCode.SSL_ERROR, Reason.TLS_MODE_MISMATCH)
    assert result.detail == (
        f"SMTP server 127.0.0.1:{server.port} expects implicit TLS from the first byte; "
        "use SSL mode, not STARTTLS or plain"
    )
    # The TLS probe answers long before the 10 s greeting limit would.
    assert time.monotonic() - started < 5


async def test_starttls_required_but_not_offered(smtp_server: SmtpFactory, ca_file: str) -> None:
    server = smtp_server(mode="plain", users={USER: PASSWORD})
    result = await check_smtp(smtp_request(server.port, "starttls"), options(ca_file))
    assert (result.error_code, result.reason) == (ErrorCode.SSL_ERROR, Reason.STARTTLS_UNAVAILABLE)
    assert server.auth_attempts == 0


async def test_starttls_refused_by_the_server(fake_server: Callable[..., FakeServer], ca_file: str) -> None:
    script = SmtpScript(ehlo_extensions=["STARTTLS", "AUTH PLAIN"])  # offers STARTTLS, then says 502
    server = fake_server(script)
    result = await check_smtp(smtp_request(server.port, "starttls"), options(ca_file))
    assert (result.reason, result.reply_code) == (Reason.STARTTLS_UNAVAILABLE, 502)
    assert script.auth_attempts == 0


async def test_no_tls_sends_no_password_unless_allowed(smtp_server: SmtpFactory, ca_file: str) -> None:
    server = smtp_server(mode="plain", users={USER: PASSWORD})
    refused = await check_smtp(
        request(smtp_port=server.port, smtp_use_tls=False, smtp_password=PASSWORD), options(ca_file)
    )
    assert (refused.error_code, refused.reason, refused.failed_step) == (
        ErrorCode.SSL_ERROR,
        Reason.TLS_REQUIRED,
        "auth",
    )
    assert refused.detail == (
        f"SMTP server 127.0.0.1:{server.port} was reached without TLS; AUTH was not attempted because "
        "allow_insecure_auth is not set"
    )
    assert server.auth_attempts == 0
    allowed = await check_smtp(
        request(smtp_port=server.port, smtp_use_tls=False, allow_insecure_auth=True, smtp_password=PASSWORD),
        options(ca_file),
    )
    assert allowed.status == "ok" and allowed.tls is None
    assert server.auth_attempts == 1


async def test_silent_server_times_out_within_the_limit(
    fake_server: Callable[..., FakeServer], ca_file: str
) -> None:
    server = fake_server(silent)
    started = time.monotonic()
    result = await check_smtp(smtp_request(server.port, "starttls"), options(ca_file))
    elapsed = time.monotonic() - started
    assert (result.error_code, result.reason, result.failed_step) == (
        ErrorCode.TIMEOUT,
        Reason.NO_GREETING,
        "greeting",
    )
    assert result.retryable
    assert STEP_TIMEOUT_S <= elapsed < STEP_TIMEOUT_S + TIMEOUT_SLACK_S


async def test_silent_implicit_tls_server_times_out(
    fake_server: Callable[..., FakeServer], ca_file: str
) -> None:
    server = fake_server(silent)
    started = time.monotonic()
    result = await check_smtp(smtp_request(server.port, "ssl"), options(ca_file))
    assert (result.error_code, result.reason, result.failed_step) == (
        ErrorCode.TIMEOUT,
        Reason.TLS_HANDSHAKE_TIMEOUT,
        "tls",
    )
    assert time.monotonic() - started < STEP_TIMEOUT_S + TIMEOUT_SLACK_S


async def test_hang_after_auth_times_out_at_auth(
    fake_server: Callable[..., FakeServer], pki: PKI, ca_file: str
) -> None:
    server = fake_server(SmtpScript(starttls_context=pki.valid.ssl_context, hang_after_auth=True))
    started = time.monotonic()
    result = await check_smtp(smtp_request(server.port, "starttls"), options(ca_file))
    assert (result.error_code, result.reason, result.failed_step) == (
        ErrorCode.TIMEOUT,
        Reason.RESPONSE_TIMEOUT,
        "auth",
    )
    assert time.monotonic() - started < STEP_TIMEOUT_S + TIMEOUT_SLACK_S


async def test_whole_check_deadline_holds_when_every_step_is_slow(
    fake_server: Callable[..., FakeServer], pki: PKI, ca_file: str
) -> None:
    server = fake_server(SmtpScript(starttls_context=pki.valid.ssl_context, hang_after_auth=True))
    deadline = 0.5
    started = time.monotonic()
    result = await check_smtp(smtp_request(server.port, "starttls"), options(ca_file, check_timeout=deadline))
    assert result.error_code is ErrorCode.TIMEOUT and "deadline" in (result.detail or "")
    assert time.monotonic() - started < deadline + TIMEOUT_SLACK_S


async def test_421_greeting_is_a_retryable_service_error(
    fake_server: Callable[..., FakeServer], ca_file: str
) -> None:
    server = fake_server(SmtpScript(greeting="421 4.3.2 Service not available, closing channel"))
    result = await check_smtp(smtp_request(server.port, "starttls"), options(ca_file))
    assert (result.error_code, result.reason) == (ErrorCode.CONNECTION_FAILED, Reason.SERVICE_UNAVAILABLE)
    assert (result.reply_code, result.enhanced_status_code, result.retryable) == (421, "4.3.2", True)


async def test_close_on_accept(fake_server: Callable[..., FakeServer], ca_file: str) -> None:
    server = fake_server(close_on_accept)
    result = await check_smtp(smtp_request(server.port, "starttls"), options(ca_file))
    assert (result.error_code, result.reason) == (ErrorCode.CONNECTION_FAILED, Reason.CONNECTION_CLOSED)
    assert result.retryable


async def test_closed_port_is_refused(ca_file: str) -> None:
    result = await check_smtp(smtp_request(CLOSED_PORT, "starttls"), options(ca_file))
    assert (result.error_code, result.reason, result.failed_step) == (
        ErrorCode.CONNECTION_FAILED,
        Reason.CONNECTION_REFUSED,
        "connect",
    )


async def test_unknown_host_fails_fast(ca_file: str, dns_server: Callable[..., DnsServer]) -> None:
    # The test's own DNS server says the name does not exist: the machine's resolver plays no part.
    dns = dns_server()
    started = time.monotonic()
    result = await check_smtp(
        smtp_request(587, "starttls", smtp_host="no-such-host.invalid"),
        options(ca_file, dns_servers=(dns.address,)),
    )
    assert (result.error_code, result.reason, result.failed_step) == (
        ErrorCode.HOST_NOT_FOUND,
        Reason.NO_SUCH_HOST,
        "dns",
    )
    assert not result.retryable
    assert time.monotonic() - started < STEP_TIMEOUT_S


async def test_server_echo_of_the_password_is_scrubbed(
    fake_server: Callable[..., FakeServer], pki: PKI, ca_file: str
) -> None:
    secret = "Sup3r-Secret-Pw"
    script = SmtpScript(
        starttls_context=pki.valid.ssl_context, auth_reply=f"535 5.7.8 bad password {secret} for {LOOPBACK}"
    )
    server = fake_server(script)
    result = await check_smtp(smtp_request(server.port, "starttls", secret), options(ca_file))
    assert result.reason is Reason.INVALID_CREDENTIALS
    assert secret not in result.model_dump_json()
    assert "***" in (result.reply_text or "")


async def test_dropped_connection_attempts_are_a_connect_timeout(ca_file: str) -> None:
    # A listener whose accept queue is full drops new SYNs, exactly as a filtering firewall does.
    with socket.socket() as listener, socket.socket() as queued:
        listener.bind((LOOPBACK, 0))
        listener.listen(0)
        queued.connect(listener.getsockname())
        started = time.monotonic()
        result = await check_smtp(smtp_request(listener.getsockname()[1], "starttls"), options(ca_file))
    assert (result.error_code, result.reason, result.failed_step) == (
        ErrorCode.TIMEOUT,
        Reason.CONNECT_TIMEOUT,
        "connect",
    )
    assert "firewall" in resolution(Reason.CONNECT_TIMEOUT)
    assert time.monotonic() - started < STEP_TIMEOUT_S + TIMEOUT_SLACK_S


async def _rejects_ehlo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"220 odd.test ESMTP\r\n")
    while line := await reader.readline():
        if line.upper().startswith(b"QUIT"):
            break
        writer.write(b"502 5.5.1 Command not implemented\r\n")
    writer.close()


async def test_server_that_refuses_ehlo_is_a_protocol_error(
    fake_server: Callable[..., FakeServer], ca_file: str
) -> None:
    server = fake_server(_rejects_ehlo)
    result = await check_smtp(smtp_request(server.port, "starttls"), options(ca_file))
    assert (result.error_code, result.reason, result.failed_step) == (
        ErrorCode.CONNECTION_FAILED,
        Reason.PROTOCOL_ERROR,
        "ehlo",
    )
    assert (result.reply_code, result.enhanced_status_code) == (502, "5.5.1")


async def test_tls_server_that_never_greets_is_no_greeting(
    fake_server: Callable[..., FakeServer], pki: PKI, ca_file: str
) -> None:
    server = fake_server(silent, ssl_context=pki.valid.ssl_context)  # handshakes, then says nothing
    started = time.monotonic()
    result = await check_smtp(smtp_request(server.port, "ssl"), options(ca_file))
    assert (result.error_code, result.reason, result.failed_step) == (
        ErrorCode.TIMEOUT,
        Reason.NO_GREETING,
        "tls",
    )
    assert time.monotonic() - started < STEP_TIMEOUT_S + TIMEOUT_SLACK_S


SECRET = "Leak-Me-Not-42"
FILLER = (SECRET + "-" * 50) * 110  # 7 KiB: aiosmtplib takes lines up to 8 KiB


async def test_a_long_auth_reply_is_cut_to_its_head_and_still_classified(
    fake_server: Callable[..., FakeServer], pki: PKI, ca_file: str
) -> None:
    # About 29 KiB in four lines, within aiosmtplib's limits (8 KiB a line, 32 KiB a reply), the
    # password starting just before the cap.
    head = "5.7.8 Username and Password not accepted. "
    first = head + "." * (MAX_REPLY_TEXT_CHARS - 5 - len(head)) + FILLER[: 8000 - MAX_REPLY_TEXT_CHARS]
    reply = "\r\n".join([f"535-{first}", *[f"535-5.7.8 {FILLER}"] * 3, "535 5.7.8 end"])
    server = fake_server(SmtpScript(auth_reply=reply), ssl_context=pki.valid.ssl_context)
    started = time.monotonic()
    result = await check_smtp(smtp_request(server.port, "ssl", SECRET), options(ca_file))
    assert time.monotonic() - started < STEP_TIMEOUT_S
    assert (result.reason, result.failed_step, result.reply_code, result.enhanced_status_code) == (
        Reason.INVALID_CREDENTIALS,
        "auth",
        535,
        "5.7.8",
    )
    kept, left_off = split_marker(result.reply_text or "")
    assert kept.startswith(head) and len(kept) <= MAX_REPLY_TEXT_CHARS and left_off
    assert len(result.detail or "") <= MAX_REPLY_TEXT_CHARS
    assert leaked_part(kept, SECRET) is None and SECRET not in result.model_dump_json()


async def test_an_auth_reply_of_megabytes_is_refused_by_aiosmtplib(
    fake_server: Callable[..., FakeServer], pki: PKI, ca_file: str
) -> None:
    # aiosmtplib drops a reply past 32 KiB unread and raises "Response too long": the user sees a
    # protocol error at AUTH saying so in plain words, with none of the reply's text.
    reply = "\r\n".join([*[f"535-5.7.8 {FILLER}"] * 600, "535 5.7.8 end"])  # 4 MiB
    server = fake_server(SmtpScript(auth_reply=reply), ssl_context=pki.valid.ssl_context)
    started = time.monotonic()
    result = await check_smtp(smtp_request(server.port, "ssl", SECRET), options(ca_file))
    assert time.monotonic() - started < STEP_TIMEOUT_S
    assert (result.error_code, result.reason, result.failed_step, result.reply_code) == (
        ErrorCode.CONNECTION_FAILED,
        Reason.PROTOCOL_ERROR,
        "auth",
        None,
    )
    assert "the server sent more than 32768 bytes in one reply" in (result.detail or "")
    assert result.reply_text is None
    assert SECRET not in result.model_dump_json()


@pytest.mark.parametrize(
    "injected",
    [b"250-fake.test\r\n250 AUTH CRAM-MD5\r\n", b"250-fake.test\r\n250 AUTH CRAM-MD5"],
    ids=["whole-reply", "partial-reply"],
)
async def test_data_sent_with_the_starttls_ready_is_discarded(
    fake_server: Callable[..., FakeServer], pki: PKI, ca_file: str, injected: bytes
) -> None:
    # Kept, it would be read as (or glued to) the reply to EHLO over TLS and offer no mechanism
    # the check uses. aiosmtplib drops whatever follows the 220 before the handshake.
    script = SmtpScript(
        starttls_context=pki.valid.ssl_context,
        auth_reply="235 2.7.0 Accepted",
        injected_after_starttls=injected,
    )
    server = fake_server(script)
    result = await check_smtp(smtp_request(server.port, "starttls"), options(ca_file))
    assert result.status == "ok", result.detail
    assert result.auth_mechanism == "PLAIN" and len(script.logins) == 1


async def test_exchange_refusing_password_auth_is_basic_auth_disabled(
    fake_server: Callable[..., FakeServer], pki: PKI, ca_file: str
) -> None:
    reply = "550 5.7.30 Basic authentication is not supported for Client Submission"
    server = fake_server(SmtpScript(starttls_context=pki.valid.ssl_context, auth_reply=reply))
    result = await check_smtp(smtp_request(server.port, "starttls"), options(ca_file))
    assert (result.error_code, result.reason, result.enhanced_status_code) == (
        ErrorCode.AUTH_FAILED,
        Reason.BASIC_AUTH_DISABLED,
        "5.7.30",
    )
