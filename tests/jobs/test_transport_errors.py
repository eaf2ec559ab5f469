"""How a connection that ends before or during TLS is reported: the whole text a user reads, a
reset on an implicit-TLS port, and a reset after STARTTLS's go-ahead."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Callable

from structlog.testing import capture_logs

from jobs.errors import ErrorCode, Reason
from jobs.imap_check import check_imap
from jobs.protocol_run import closed_before_tls
from jobs.smtp_check import check_smtp
from jobs.time_units import MS_PER_S
from tests.jobs.checks import LOOPBACK, options, request
from tests.servers.certs import PKI
from tests.servers.fakes import FakeServer, ImapScript, close_on_accept, silent

FakeFactory = Callable[..., FakeServer]

# Shorter than the implicit-TLS probe's wait, so a silent server is only ever "no greeting".
CHECK_DEADLINE_S = 0.25


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    # Linger on with a zero timeout turns close() into an RST.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _resets_after_starttls_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"* OK [CAPABILITY IMAP4rev1 STARTTLS] fake\r\n")
    while line := await reader.readline():
        tag, _, command = line.decode().strip().partition(" ")
        if command.upper() == "CAPABILITY":
            writer.write(f"* CAPABILITY IMAP4rev1 STARTTLS\r\n{tag} OK done\r\n".encode())
        elif command.upper() == "STARTTLS":
            writer.write(f"{tag} OK begin TLS\r\n".encode())
            await writer.drain()
            await reader.read(1)  # the ClientHello's first byte: the handshake has begun
            _reset(writer)
            return
        else:
            writer.write(f"{tag} BAD unexpected\r\n".encode())
        await writer.drain()


async def test_a_peer_closing_on_implicit_tls_gets_the_whole_explanation(
    fake_server: FakeFactory, ca_file: str
) -> None:
    server = fake_server(close_on_accept)
    result = await check_smtp(request(smtp_port=server.port, smtp_security="ssl"), options(ca_file))
    where = f"SMTP server {LOOPBACK}:{server.port}"
    assert (result.reason, result.failed_step) == (Reason.CONNECTION_CLOSED, "tls")
    assert result.detail == closed_before_tls(where)
    assert result.auth_mechanism is None  # nothing was learned before the failure
    assert result.detail == (
        f"{where} closed the connection without a byte of TLS (nobody spoke TLS there): the mail "
        "service behind the port may be down, or the port is wrong"
    )


async def _greets_in_plain_text(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"220 fake ESMTP\r\n")
    await writer.drain()
    await reader.read()


async def test_plain_text_on_an_implicit_tls_port_names_the_server(
    fake_server: FakeFactory, ca_file: str
) -> None:
    server = fake_server(_greets_in_plain_text)
    result = await check_smtp(request(smtp_port=server.port, smtp_security="ssl"), options(ca_file))
    assert (result.error_code, result.reason, result.failed_step) == (
        ErrorCode.SSL_ERROR,
        Reason.TLS_MODE_MISMATCH,
        "tls",
    )
    assert f"SMTP server {LOOPBACK}:{server.port}" in (result.detail or "")


async def test_the_whole_check_deadline_names_the_step_and_the_protocol(
    fake_server: FakeFactory, ca_file: str
) -> None:
    server = fake_server(silent)
    started = time.perf_counter()
    result = await check_smtp(
        request(smtp_port=server.port, smtp_security="none"),
        options(ca_file, step_timeout=CHECK_DEADLINE_S * 20, check_timeout=CHECK_DEADLINE_S),
    )
    assert (result.reason, result.failed_step) == (Reason.NO_GREETING, "greeting")
    assert result.detail == f"the whole SMTP check ran past its {CHECK_DEADLINE_S:g}s deadline"
    # The check's time is reported in milliseconds and spans the wait for the deadline.
    assert CHECK_DEADLINE_S * MS_PER_S <= result.duration_ms <= (time.perf_counter() - started) * MS_PER_S


async def test_a_reset_after_the_starttls_go_ahead_is_a_handshake_failure(
    fake_server: FakeFactory, ca_file: str
) -> None:
    server = fake_server(_resets_after_starttls_ok)
    result = await check_imap(request(imap_port=server.port, imap_use_ssl=False), options(ca_file))
    assert (result.error_code, result.reason, result.failed_step) == (
        ErrorCode.SSL_ERROR,
        Reason.TLS_HANDSHAKE_FAILED,
        "starttls",
    )
    assert (
        result.detail
        == f"IMAP server {LOOPBACK}:{server.port} dropped the connection during the TLS handshake"
    )


async def test_an_answer_no_translator_foresaw_is_logged_and_named_by_its_type(
    fake_server: FakeFactory, pki: PKI, ca_file: str
) -> None:
    server = fake_server(
        ImapScript(greeting="* PREAUTH [CAPABILITY IMAP4rev1] logged in as someone"),
        ssl_context=pki.valid.ssl_context,
    )
    with capture_logs() as logs:
        result = await check_imap(request(imap_port=server.port, imap_use_ssl=True), options(ca_file))
    assert (result.reason, result.failed_step) == (Reason.PROTOCOL_ERROR, "login")
    assert result.detail == (
        f"IMAP server {LOOPBACK}:{server.port} answered in a way the client could not follow (Abort) during login"
    )
    unexpected = [entry for entry in logs if entry["event"] == "unexpected_check_error"]
    assert unexpected == [
        {
            "event": "unexpected_check_error",
            "log_level": "warning",
            "protocol": "imap",
            "step": "login",
            "error": "Abort",
        }
    ]
