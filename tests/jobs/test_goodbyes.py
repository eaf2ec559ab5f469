"""The goodbye after the verdict, as an operator sees it: a QUIT or LOGOUT that gets no answer is
cut off at its bound and logged with its protocol, and a server that answers but keeps the
connection open is closed by the client at once, not left to the bound. Over real sockets against
the scripted servers of tests/servers/fakes.py."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable

from structlog.testing import capture_logs

from jobs.goodbyes import Goodbyes
from jobs.imap_check import check_imap
from jobs.options import GOODBYE_TIMEOUT_S
from jobs.smtp_check import check_smtp
from tests.jobs.checks import TIMEOUT_SLACK_S, cut_short, options, request, set_within
from tests.servers.certs import PKI
from tests.servers.fakes import FakeServer, ImapScript, SmtpScript

FakeFactory = Callable[..., FakeServer]
# A short step limit, so that a goodbye cut off at it (the shorter of it and GOODBYE_TIMEOUT_S)
# keeps the test quick.
STEP_S = 0.5


async def _closed(goodbyes: Goodbyes, within_s: float | None = None) -> None:
    """`goodbyes.closed()`, failing rather than hanging if a goodbye outlives every bound."""
    async with asyncio.timeout(GOODBYE_TIMEOUT_S + TIMEOUT_SLACK_S):
        await goodbyes.closed(within_s)


async def test_an_unanswered_goodbye_is_cut_off_at_its_bound_and_logged_with_its_protocol(
    fake_server: FakeFactory, pki: PKI, ca_file: str
) -> None:
    smtp = SmtpScript(
        auth_reply="235 2.7.0 ok", starttls_context=pki.valid.ssl_context, silent_after_quit=True
    )
    imap = ImapScript(login_reply="OK Logged in", silent_after_logout=True)
    smtp_port = fake_server(smtp).port
    imap_port = fake_server(imap, ssl_context=pki.valid.ssl_context).port
    goodbyes = Goodbyes()
    with capture_logs() as logs:
        results = await asyncio.gather(
            check_smtp(
                request(smtp_port=smtp_port, smtp_security="starttls"), options(ca_file, STEP_S), goodbyes
            ),
            check_imap(request(imap_port=imap_port, imap_use_ssl=True), options(ca_file, STEP_S), goodbyes),
        )
        assert [r.status for r in results] == ["ok", "ok"]
        # Named, for whoever lists a stuck loop's tasks (a shutdown that waits for them).
        names = {task.get_name() for task in asyncio.all_tasks()}
        assert {"inboxcheck-smtp-goodbye", "inboxcheck-imap-goodbye"} <= names
        started = time.monotonic()
        await _closed(goodbyes)
        waited = time.monotonic() - started
    assert goodbyes.pending == 0
    assert await set_within(smtp.gone, TIMEOUT_SLACK_S) and await set_within(imap.gone, TIMEOUT_SLACK_S)
    cut = sorted(cut_short(logs))
    assert cut == [("imap", False, STEP_S), ("smtp", False, STEP_S)]
    assert waited < STEP_S + TIMEOUT_SLACK_S


async def test_a_server_that_answers_the_goodbye_and_waits_is_closed_by_the_client_at_once(
    fake_server: FakeFactory, pki: PKI, ca_file: str
) -> None:
    # The server answers QUIT / LOGOUT and leaves the close to the client (as it may): the client
    # closes its side at once, without waiting for the bound, and the goodbye ends without an
    # error of its own.
    smtp = SmtpScript(auth_reply="235 2.7.0 ok", starttls_context=pki.valid.ssl_context, open_after_quit=True)
    imap = ImapScript(login_reply="OK Logged in", open_after_logout=True)
    smtp_port = fake_server(smtp).port
    imap_port = fake_server(imap, ssl_context=pki.valid.ssl_context).port
    goodbyes = Goodbyes()
    loop = asyncio.get_running_loop()
    errors: list[dict[str, object]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: errors.append(context))
    try:
        with capture_logs() as logs:
            results = await asyncio.gather(
                check_smtp(
                    request(smtp_port=smtp_port, smtp_security="starttls"), options(ca_file), goodbyes
                ),
                check_imap(request(imap_port=imap_port, imap_use_ssl=True), options(ca_file), goodbyes),
            )
            assert [r.status for r in results] == ["ok", "ok"]
            await _closed(goodbyes)
        # A goodbye task that ended in an error would be logged by asyncio as "Task exception was
        # never retrieved" once collected: collect now, while the handler listens.
        gc.collect()
    finally:
        loop.set_exception_handler(previous)
    assert errors == []
    assert await set_within(smtp.gone, TIMEOUT_SLACK_S) and await set_within(imap.gone, TIMEOUT_SLACK_S)
    assert smtp.left_cleanly.is_set(), "the SMTP connection was reset, not closed"
    assert imap.left_cleanly.is_set(), "the IMAP connection was reset, not closed"
    assert cut_short(logs) == []


async def _deaf(writer: asyncio.StreamWriter) -> None:
    """Answered, then deaf until the server stops: not even TLS's close_notify is read, so the
    client's close never completes."""
    await writer.drain()
    transport = writer.transport
    assert isinstance(transport, asyncio.ReadTransport)
    transport.pause_reading()
    await asyncio.Future()


async def _smtp_deaf_after_quit(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"220 fake.test ESMTP\r\n")
    while line := await reader.readline():
        verb = line.split()[0].upper()
        if verb == b"EHLO":
            writer.write(b"250-fake.test\r\n250 AUTH PLAIN\r\n")
        elif verb == b"AUTH":
            writer.write(b"235 2.7.0 Accepted\r\n")
        elif verb == b"QUIT":
            writer.write(b"221 2.0.0 Bye\r\n")
            break
    await _deaf(writer)


async def _imap_deaf_after_logout(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n")
    while line := await reader.readline():
        tag, command = line.split()[:2]
        if command.upper() == b"LOGIN":
            writer.write(tag + b" OK Logged in\r\n")
        elif command.upper() == b"EXAMINE":
            writer.write(b"* 0 EXISTS\r\n" + tag + b" OK [READ-ONLY] done\r\n")
        elif command.upper() == b"LOGOUT":
            writer.write(b"* BYE Logging out\r\n" + tag + b" OK LOGOUT completed\r\n")
            break
    await _deaf(writer)


async def test_a_goodbye_answered_but_never_closed_is_cut_off_and_logged_as_answered(
    fake_server: FakeFactory, pki: PKI, ca_file: str
) -> None:
    smtp_port = fake_server(_smtp_deaf_after_quit, ssl_context=pki.valid.ssl_context).port
    imap_port = fake_server(_imap_deaf_after_logout, ssl_context=pki.valid.ssl_context).port
    goodbyes = Goodbyes()
    with capture_logs() as logs:
        results = await asyncio.gather(
            check_smtp(request(smtp_port=smtp_port, smtp_security="ssl"), options(ca_file, STEP_S), goodbyes),
            check_imap(request(imap_port=imap_port, imap_use_ssl=True), options(ca_file, STEP_S), goodbyes),
        )
        assert [r.status for r in results] == ["ok", "ok"]
        started = time.monotonic()
        await _closed(goodbyes)
        waited = time.monotonic() - started
    cut = sorted(cut_short(logs))
    assert cut == [("imap", True, STEP_S), ("smtp", True, STEP_S)]
    assert waited < STEP_S + TIMEOUT_SLACK_S


async def test_a_caller_out_of_time_ends_its_own_goodbyes_at_once(
    fake_server: FakeFactory, pki: PKI, ca_file: str
) -> None:
    # What the worker's job does when its own deadline is near: `closed(within_s)` does not wait
    # the goodbye's whole bound (here the default step limit, 2 s).
    smtp = SmtpScript(
        auth_reply="235 2.7.0 ok", starttls_context=pki.valid.ssl_context, silent_after_quit=True
    )
    port = fake_server(smtp).port
    goodbyes = Goodbyes()
    result = await check_smtp(request(smtp_port=port, smtp_security="starttls"), options(ca_file), goodbyes)
    assert result.status == "ok", result.detail
    assert await set_within(smtp.quit_received, TIMEOUT_SLACK_S)
    started = time.monotonic()
    await _closed(goodbyes, within_s=0)
    assert time.monotonic() - started < TIMEOUT_SLACK_S
    assert goodbyes.pending == 0
    assert await set_within(smtp.gone, TIMEOUT_SLACK_S)
