"""One inbox, both protocols at once: one verdict, and a failure of one never hides the other."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import structlog

from jobs.errors import ErrorCode, Reason
from jobs.goodbyes import Goodbyes
from jobs.presets import InboxType
from jobs.providers import Provider
from jobs.request import Security
from jobs.resolutions import resolution
from jobs.result import ProtocolResult
from jobs.validate import summarise, validate_inbox
from tests.jobs.checks import CLOSED_PORT, STEP_TIMEOUT_S, TIMEOUT_SLACK_S, options, request
from tests.servers.certs import PKI
from tests.servers.dovecot import Account, Dovecot
from tests.servers.fakes import FakeServer, ImapScript, SmtpScript, silent
from tests.servers.smtp import SmtpServer


def both(smtp: SmtpServer, dovecot: Dovecot, user: Account, **fields: object):
    base = {
        "email": user.email,
        "smtp_password": user.password,
        "smtp_port": smtp.port,
        "smtp_security": "starttls",
        "imap_port": dovecot.imaps_port,
    }
    return request(**{**base, **fields})


async def test_valid_inbox_gets_a_limit_for_its_age(
    smtp_server: Callable[..., SmtpServer], dovecot: Dovecot, imap_user: Account, ca_file: str
) -> None:
    smtp = smtp_server(users={imap_user.email: imap_user.password})
    result = await validate_inbox(both(smtp, dovecot, imap_user, account_age_days=20), options(ca_file))
    assert (result.status, result.error_code, result.resolution) == ("valid", None, None)
    assert (result.smtp.status, result.imap.status) == ("ok", "ok")
    assert (result.recommended_range.low, result.recommended_range.high) == (50, 80)
    assert 50 <= result.recommended_daily_limit <= 80
    assert result.max_daily_limit == 100_000


async def test_smtp_failure_leads_and_does_not_hide_imap(
    smtp_server: Callable[..., SmtpServer], dovecot: Dovecot, imap_user: Account, ca_file: str
) -> None:
    smtp = smtp_server(users={imap_user.email: "something else"})
    result = await validate_inbox(both(smtp, dovecot, imap_user, imap_port=CLOSED_PORT), options(ca_file))
    assert result.status == "invalid" and result.recommended_daily_limit == 0
    assert (result.error_code, result.reason) == (ErrorCode.AUTH_FAILED, Reason.INVALID_CREDENTIALS)
    assert (result.imap.error_code, result.imap.reason) == (
        ErrorCode.CONNECTION_FAILED,
        Reason.CONNECTION_REFUSED,
    )
    assert result.resolution and "password" in result.resolution


async def test_imap_failure_alone_decides_the_verdict(
    smtp_server: Callable[..., SmtpServer], dovecot: Dovecot, imap_user: Account, ca_file: str
) -> None:
    smtp = smtp_server(users={imap_user.email: imap_user.password})
    result = await validate_inbox(both(smtp, dovecot, imap_user, imap_password="wrong"), options(ca_file))
    assert result.smtp.status == "ok"
    assert (result.status, result.error_code, result.reason) == (
        "invalid",
        ErrorCode.AUTH_FAILED,
        Reason.INVALID_CREDENTIALS,
    )


async def test_protocols_run_concurrently(fake_server: Callable[..., FakeServer], ca_file: str) -> None:
    server = fake_server(silent)
    started = time.monotonic()
    result = await validate_inbox(request(smtp_port=server.port, imap_port=server.port), options(ca_file))
    assert (result.smtp.error_code, result.imap.error_code) == (ErrorCode.TIMEOUT, ErrorCode.TIMEOUT)
    assert time.monotonic() - started < STEP_TIMEOUT_S + TIMEOUT_SLACK_S


async def test_log_lines_carry_the_inbox_id_and_each_protocol_s_outcome(ca_file: str) -> None:
    with structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        await validate_inbox(request(inbox_id="inbox-42"), options(ca_file))
    checked = [line for line in logs if line["event"] == "protocol_checked"]
    assert {line["protocol"] for line in checked} == {"smtp", "imap"}
    for line in checked:
        assert line["inbox_id"] == "inbox-42"
        outcome = (line["status"], line["error_code"], line["reason"], line["failed_step"])
        assert outcome == ("failed", ErrorCode.CONNECTION_FAILED, Reason.CONNECTION_REFUSED, "connect")


async def test_the_result_names_the_inbox_and_times_the_whole_check(ca_file: str) -> None:
    started = time.perf_counter()
    with structlog.testing.capture_logs() as logs:
        result = await validate_inbox(request(inbox_id="inbox-42"), options(ca_file))
    elapsed_ms = (time.perf_counter() - started) * 1000
    assert result.inbox_id == "inbox-42"
    # Both protocols ran at once: the whole took at least the longer of them, and no longer than
    # the call.
    assert max(result.smtp.duration_ms, result.imap.duration_ms) <= result.duration_ms <= elapsed_ms
    logged = {line["protocol"]: line["duration_ms"] for line in logs if line["event"] == "protocol_checked"}
    assert logged == {"smtp": result.smtp.duration_ms, "imap": result.imap.duration_ms}


async def test_the_check_time_is_utc(ca_file: str) -> None:
    before = datetime.now(UTC)
    result = await validate_inbox(request(), options(ca_file))
    # A naive time would be written without an offset and read as local time by consumers.
    assert result.checked_at.utcoffset() == timedelta(0)
    assert before <= result.checked_at <= datetime.now(UTC)


async def test_the_goodbyes_go_on_in_the_caller_s_group(
    fake_server: Callable[..., FakeServer], pki: PKI, ca_file: str
) -> None:
    # The worker holds a host's slots until its goodbyes end: they must be in the group it passed.
    smtp = SmtpScript(
        auth_reply="235 2.7.0 ok", starttls_context=pki.valid.ssl_context, silent_after_quit=True
    )
    imap = ImapScript(login_reply="OK Logged in", silent_after_logout=True)
    inbox = request(
        smtp_port=fake_server(smtp).port,
        smtp_security="starttls",
        imap_port=fake_server(imap, ssl_context=pki.valid.ssl_context).port,
    )
    goodbyes = Goodbyes()
    result = await validate_inbox(inbox, options(ca_file), goodbyes=goodbyes)
    assert result.status == "valid", (result.smtp.detail, result.imap.detail)
    assert goodbyes.pending == 2
    await goodbyes.closed(within_s=0)
    assert goodbyes.pending == 0


def test_a_custom_inbox_at_gmail_is_capped_as_gmail() -> None:
    # The verdict's maximum comes from the servers the request names, whatever its type says.
    req = request(smtp_host="SMTP.GMAIL.COM.", imap_host="imap.gmail.com")
    parts = [
        ProtocolResult(protocol=protocol, status="ok", host=host, port=CLOSED_PORT, security=Security.SSL)
        for protocol, host in (("smtp", req.smtp_host), ("imap", req.imap_host))
    ]
    result = summarise(req, parts[0], parts[1], datetime.now(UTC), 1.0)
    assert (result.inbox_type, result.max_daily_limit) == (InboxType.CUSTOM_SMTP, 2_000)


def test_a_google_inbox_on_other_hosts_is_still_google_s_and_gets_google_s_advice() -> None:
    # Hosts no table knows (here loopback, as through a relay): the inbox type names the provider.
    req = request(inbox_type="GOOGLE_WORKSPACE")
    refused = ProtocolResult(
        protocol="smtp",
        status="failed",
        host=req.smtp_host,
        port=CLOSED_PORT,
        security=Security.SSL,
        error_code=ErrorCode.AUTH_FAILED,
        reason=Reason.APP_PASSWORD_REQUIRED,
    )
    imap = ProtocolResult(
        protocol="imap", status="ok", host=req.imap_host, port=CLOSED_PORT, security=Security.SSL
    )
    result = summarise(req, refused, imap, datetime.now(UTC), 1.0)
    assert result.provider is Provider.GOOGLE
    assert result.resolution == resolution(Reason.APP_PASSWORD_REQUIRED, Provider.GOOGLE)
    assert result.resolution != resolution(Reason.APP_PASSWORD_REQUIRED)
