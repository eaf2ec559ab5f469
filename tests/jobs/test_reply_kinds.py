"""Kinds of refusal that are no reply text: a peer hanging up on implicit TLS before a byte, a
server holding AUTH back until STARTTLS, a TLS server dropping the handshake told from one that
hangs up on anyone, a BYE with no tagged answer."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable

import pytest

from jobs.errors import ErrorCode, Reason
from jobs.imap_check import check_imap
from jobs.mode_probe import HANG_UP_WATCH_S, PROBE_AFTER_S
from jobs.smtp_check import check_smtp
from jobs.steps import Step
from tests.jobs.checks import LOOPBACK, options, request
from tests.jobs.served import PASSWORD
from tests.servers.certs import PKI
from tests.servers.fakes import (
    FakeServer,
    ImapScript,
    SmtpScript,
    close_on_accept,
    drops_the_tls_hello,
    reset_on_accept,
    silent,
)
from tests.servers.replies import ReplyAt
from tests.servers.tcp import Handler

FakeFactory = Callable[..., FakeServer]
# The greeting's wait goes on this long after the probe has started and failed; a loop spinning
# through it would use most of it as CPU time, a wait next to none.
WAIT_AFTER_PROBE_S = 1.0


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


@pytest.mark.parametrize("protocol", ["smtp", "imap"])
async def test_a_tls_server_dropping_the_handshake_is_still_a_handshake_failure(
    fake_server: FakeFactory, ca_file: str, protocol: str
) -> None:
    server = fake_server(drops_the_tls_hello)
    result = await _check(protocol, ca_file, **_implicit_tls(protocol, server.port))
    assert (result.error_code, result.reason) == (ErrorCode.SSL_ERROR, Reason.TLS_HANDSHAKE_FAILED)
    assert result.detail == (
        f"{protocol.upper()} server {LOOPBACK}:{server.port} dropped the connection during the TLS handshake"
    )


def _first_then(first: Handler, later: Handler) -> Handler:
    """`first` for the check's own connection, `later` for every one after it (the probe's)."""
    accepted = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        await (first if accepted == 1 else later)(reader, writer)

    return handler


async def _resets_a_silent_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    # Within the probe's watch, and late enough that the connect has completed: a reset sent at
    # once can reach the client while its connect is still being reported, failing the connect.
    await asyncio.sleep(HANG_UP_WATCH_S / 5)
    await reset_on_accept(reader, writer)


@pytest.mark.parametrize("protocol", ["smtp", "imap"])
async def test_a_server_that_resets_any_silent_connection_is_connection_closed(
    fake_server: FakeFactory, ca_file: str, protocol: str
) -> None:
    # Not a TLS server that dropped one handshake: it hangs up (here with a reset) on anyone.
    server = fake_server(_first_then(drops_the_tls_hello, _resets_a_silent_connection))
    result = await _check(protocol, ca_file, **_implicit_tls(protocol, server.port))
    assert (result.error_code, result.reason, server.connections) == (
        ErrorCode.CONNECTION_FAILED,
        Reason.CONNECTION_CLOSED,
        2,
    )


async def test_a_silent_server_that_drops_the_probe_s_handshake_is_no_greeting(
    fake_server: FakeFactory, ca_file: str
) -> None:
    # The late greeting's probe failed its handshake: the port does not speak implicit TLS, so
    # the silence stays a missing greeting, not a TLS mode mismatch; and the wait for it after the
    # probe is a wait, not a loop over the finished probe.
    server = fake_server(_first_then(silent, drops_the_tls_hello))
    # The loop's own thread only (not the server's), and no collection of the whole session's
    # garbage inside the window.
    gc.collect()
    gc.disable()
    try:
        cpu_before = time.thread_time()
        result = await check_smtp(
            request(smtp_port=server.port, smtp_security="starttls"),
            options(ca_file, step_timeout=PROBE_AFTER_S + WAIT_AFTER_PROBE_S),
        )
        cpu_s = time.thread_time() - cpu_before
    finally:
        gc.enable()
    assert (result.reason, result.failed_step, server.connections) == (Reason.NO_GREETING, "greeting", 2)
    assert cpu_s < WAIT_AFTER_PROBE_S / 4


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
