"""Kinds of refusal that are no reply text: a peer hanging up on implicit TLS before a byte, a
server holding AUTH back until STARTTLS, a BYE with no tagged answer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from jobs.errors import ErrorCode, Reason
from jobs.imap_check import check_imap
from jobs.smtp_check import check_smtp
from jobs.steps import Step
from tests.jobs.checks import options, request
from tests.jobs.served import PASSWORD
from tests.servers.certs import PKI
from tests.servers.fakes import FakeServer, ImapScript, SmtpScript, close_on_accept
from tests.servers.replies import ReplyAt

FakeFactory = Callable[..., FakeServer]


def _implicit_tls(protocol: str, port: int) -> dict[str, object]:
    if protocol == "smtp":
        return {"smtp_port": port, "smtp_security": "ssl"}
    return {"imap_port": port, "imap_use_ssl": True}


async def _check(protocol: str, ca_file: str, **fields: object):  # type: ignore[no-untyped-def]
    check = check_smtp if protocol == "smtp" else check_imap
    return await check(request(**fields), options(ca_file))


@pytest.mark.parametrize("protocol", ["smtp", "imap"])
async def test_a_peer_closing_before_any_byte_on_implicit_tls_is_connection_closed(
    fake_server: FakeFactory, ca_file: str, protocol: str
) -> None:
    server = fake_server(close_on_accept)
    result = await _check(protocol, ca_file, **_implicit_tls(protocol, server.port))
    assert (result.error_code, result.reason, result.failed_step) == (
        ErrorCode.CONNECTION_FAILED,
        Reason.CONNECTION_CLOSED,
        "tls",
    )
    assert result.retryable and "nobody spoke TLS" in (result.detail or "")


async def _reads_the_hello_and_drops_it(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(1)  # a TLS server that takes the ClientHello, then hangs up without an alert


@pytest.mark.parametrize("protocol", ["smtp", "imap"])
async def test_a_tls_server_dropping_the_handshake_is_still_a_handshake_failure(
    fake_server: FakeFactory, ca_file: str, protocol: str
) -> None:
    server = fake_server(_reads_the_hello_and_drops_it)
    result = await _check(protocol, ca_file, **_implicit_tls(protocol, server.port))
    assert (result.error_code, result.reason) == (ErrorCode.SSL_ERROR, Reason.TLS_HANDSHAKE_FAILED)


async def test_auth_offered_only_after_starttls_with_tls_off_is_tls_required(
    fake_server: FakeFactory, pki: PKI, ca_file: str
) -> None:
    script = SmtpScript(
        ehlo_extensions=["SIZE 35882577"],
        ehlo_extensions_after_tls=["AUTH PLAIN LOGIN"],
        starttls_context=pki.valid.ssl_context,
    )
    server = fake_server(script)
    result = await _check(
        "smtp", ca_file, smtp_port=server.port, smtp_use_tls=False, allow_insecure_auth=True
    )
    assert (result.error_code, result.reason) == (ErrorCode.SSL_ERROR, Reason.TLS_REQUIRED)
    assert "only after STARTTLS" in (result.detail or "") and script.logins == []


async def test_a_server_with_no_auth_and_no_tls_is_still_no_mechanism(
    fake_server: FakeFactory, ca_file: str
) -> None:
    script = SmtpScript(ehlo_extensions=["SIZE 35882577"])
    server = fake_server(script)
    result = await _check(
        "smtp", ca_file, smtp_port=server.port, smtp_use_tls=False, allow_insecure_auth=True
    )
    assert result.reason is Reason.AUTH_MECHANISM_UNSUPPORTED


@pytest.mark.parametrize(
    ("bye", "reason", "retryable"),
    [
        ("* BYE Too many invalid IMAP commands.", Reason.PROTOCOL_ERROR, False),
        ("* BYE Disconnected for inactivity.", Reason.CONNECTION_CLOSED, True),
        ("* BYE Server shutting down.", Reason.SERVICE_UNAVAILABLE, True),
        ("* BYE Too many connections from your IP", Reason.TOO_MANY_CONNECTIONS, True),
        ("* BYE Goodbye, for a reason of our own", Reason.CONNECTION_CLOSED, True),
    ],
)
async def test_a_bye_without_a_tagged_reply_keeps_its_text_and_says_why(
    fake_server: FakeFactory, pki: PKI, ca_file: str, bye: str, reason: Reason, retryable: bool
) -> None:
    server = fake_server(ReplyAt("imap", Step.LOGIN, bye), ssl_context=pki.valid.ssl_context)
    result = await _check("imap", ca_file, imap_port=server.port, smtp_password=PASSWORD)
    assert (result.reason, result.retryable, result.failed_step) == (reason, retryable, "login")
    assert result.reply_status == "BYE" and bye[len("* BYE ") :] in (result.reply_text or "")


async def test_a_bye_after_login_is_read_at_examine(fake_server: FakeFactory, pki: PKI, ca_file: str) -> None:
    server = fake_server(
        ReplyAt("imap", Step.EXAMINE, "* BYE Server shutting down."), ssl_context=pki.valid.ssl_context
    )
    result = await _check("imap", ca_file, imap_port=server.port)
    assert (result.reason, result.failed_step) == (Reason.SERVICE_UNAVAILABLE, "examine")


async def test_microsofts_not_connected_after_login_is_its_own_auth_failure(
    fake_server: FakeFactory, pki: PKI, ca_file: str
) -> None:
    script = ImapScript(
        login_reply="OK LOGIN completed.", examine_reply="BAD User is authenticated but not connected."
    )
    server = fake_server(script, ssl_context=pki.valid.ssl_context)
    result = await _check("imap", ca_file, imap_port=server.port)
    assert (result.error_code, result.reason, result.failed_step) == (
        ErrorCode.AUTH_FAILED,
        Reason.AUTHENTICATED_NOT_CONNECTED,
        "examine",
    )
