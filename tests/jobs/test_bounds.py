"""Hostile servers over real sockets: every bound in jobs.bounds ends the check at once, in
bounded memory, and a server that drips never stretches a step or the check past its limit."""

from __future__ import annotations

import asyncio.sslproto
import gc
import re
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from jobs import bounds
from jobs.errors import ErrorCode, Reason
from jobs.imap_check import check_imap
from jobs.result import ProtocolResult
from jobs.smtp_check import check_smtp
from jobs.tls import TLS_READ_BUFFER
from jobs.validate import validate_inbox
from tests.jobs.checks import STEP_TIMEOUT_S, TIMEOUT_SLACK_S, options, request
from tests.servers.certs import PKI, server_context
from tests.servers.fakes import FakeServer, ImapScript
from tests.servers.hostile import IMAP_GREETING, SMTP_GREETING, drip, imap_flood, slow_replies, smtp_flood
from tests.servers.oauth import TokenEndpoint
from tests.servers.tcp import Handler

FakeFactory = Callable[..., FakeServer]
MIB = 1024 * 1024
# What one check against a flooding server may allocate at its peak (Python objects, as
# tracemalloc sees them: what a bound holds plus the check's own state, about 0.5 MiB measured),
# and what may still be held once it returned: the bound's bytes must not outlive the check.
PEAK_BUDGET_BYTES = 2 * MIB
HELD_BUDGET_BYTES = 48 * 1024  # under the smallest IMAP bound (64 KiB); a closing TLS transport keeps its 16


@pytest.fixture(autouse=True)
def _tls_buffers_as_in_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    # What use_small_tls_read_buffers() does where the worker starts, undone after each test.
    monkeypatch.setattr(asyncio.sslproto.SSLProtocol, "max_size", TLS_READ_BUFFER)


@dataclass
class Measured:
    result: ProtocolResult
    seconds: float
    peak_bytes: int
    held_bytes: int


async def measured(
    check: Callable[[], Awaitable[ProtocolResult]], server: FakeServer, warm_up: bool = True
) -> Measured:
    """Run `check` under tracemalloc: its time, its peak (the server's side included: it runs in
    this process), and what the check left allocated once the server is stopped and collected. The check runs
    once before, unmeasured, when what it left matters: what the first check of a process builds
    and keeps (trust store, caches) is no server's doing."""
    if warm_up:
        await check()
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        started = time.monotonic()
        result = await check()
        seconds = time.monotonic() - started
        peak = tracemalloc.get_traced_memory()[1]
        server.stop()
        gc.collect()  # the server's loop and transports are cycles
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return Measured(result, seconds, peak - baseline, held - baseline)


def imap(port: int, ca_file: str, **option: float) -> Awaitable[ProtocolResult]:
    return check_imap(request(imap_port=port, imap_use_ssl=True), options(ca_file, **option))


def smtp(port: int, ca_file: str, security: str = "ssl", **option: float) -> Awaitable[ProtocolResult]:
    fields = {"smtp_port": port, "smtp_security": security, "allow_insecure_auth": True}
    return check_smtp(request(**fields), options(ca_file, **option))


@pytest.mark.parametrize(
    ("protocol", "server", "step", "explanation"),
    [
        ("imap", imap_flood(b"x", head=b"* OK "), "greeting", bounds.IMAP_LINE_TOO_LONG),
        ("imap", imap_flood(b"\r\n"), "greeting", bounds.IMAP_TOO_MANY_LINES),
        ("imap", imap_flood(b"* 1 EXISTS\r\n", at_login=True), "login", bounds.IMAP_TOO_MANY_LINES),
        (
            "imap",
            imap_flood(b"* 1 FETCH (FLAGS (\\Seen " + b"x" * 60_000 + b"))\r\n", at_login=True),
            "login",
            bounds.IMAP_RESPONSE_TOO_LONG,
        ),
        (
            "imap",
            imap_flood(b"x", head=b"* 1 FETCH (BODY[] {4294967296}\r\n", at_login=True),
            "login",
            bounds.IMAP_RESPONSE_TOO_LONG,
        ),
        ("smtp", smtp_flood(b"250-PIPELINING\r\n"), "ehlo", bounds.SMTP_REPLY_TOO_LONG),
        ("smtp", smtp_flood(b"x"), "ehlo", bounds.SMTP_REPLY_TOO_LONG),
    ],
    ids=[
        "imap-endless-line",
        "imap-endless-empty-lines",
        "imap-endless-untagged-lines",
        "imap-endless-long-untagged-lines",
        "imap-endless-literal",
        "smtp-endless-multiline-reply",
        "smtp-endless-line",
    ],
)
async def test_a_server_past_a_bound_ends_the_check_at_once_in_bounded_memory(
    fake_server: FakeFactory,
    pki: PKI,
    ca_file: str,
    protocol: str,
    server: Handler,
    step: str,
    explanation: str,
) -> None:
    fake = fake_server(server, ssl_context=pki.valid.ssl_context)
    run = await measured(lambda: (imap if protocol == "imap" else smtp)(fake.port, ca_file), fake)
    result = run.result
    assert (result.error_code, result.reason, result.failed_step) == (
        ErrorCode.CONNECTION_FAILED,
        Reason.PROTOCOL_ERROR,
        step,
    )
    assert explanation in (result.detail or "")
    assert run.seconds < STEP_TIMEOUT_S  # ended by the bound, not by the step's time limit
    assert run.peak_bytes < PEAK_BUDGET_BYTES, run
    assert run.held_bytes < HELD_BUDGET_BYTES, run


async def test_the_issues_server_an_endless_greeting_on_a_starttls_port_ends_at_once(
    fake_server: FakeFactory, ca_file: str
) -> None:
    # As reported: `* OK ` and then no CRLF ever, in plaintext (the greeting before STARTTLS);
    # it held ~130 MB after 5 s and ended at the step limit as NO_GREETING.
    server = fake_server(imap_flood(b"x", head=b"* OK "))
    run = await measured(
        lambda: check_imap(request(imap_port=server.port, imap_use_ssl=False), options(ca_file)), server
    )
    assert (run.result.error_code, run.result.reason, run.result.failed_step) == (
        ErrorCode.CONNECTION_FAILED,
        Reason.PROTOCOL_ERROR,
        "greeting",
    )
    assert bounds.IMAP_LINE_TOO_LONG in (run.result.detail or "")
    assert run.seconds < STEP_TIMEOUT_S
    assert run.peak_bytes < PEAK_BUDGET_BYTES and run.held_bytes < HELD_BUDGET_BYTES, run


async def test_a_certificate_chain_past_openssls_bound_fails_the_handshake_saying_so(
    fake_server: FakeFactory, pki: PKI, ca_file: str, tmp_path: Path
) -> None:
    # The CA certificate again and again after the leaf: about 140 KiB of chain.
    chain = tmp_path / "chain.pem"
    chain.write_bytes(pki.valid.cert_file.read_bytes() + pki.ca_file.read_bytes() * 300)
    server = fake_server(ImapScript(), ssl_context=server_context(chain, pki.valid.key_file))
    run = await measured(lambda: imap(server.port, ca_file), server)
    assert (run.result.error_code, run.result.reason, run.result.failed_step) == (
        ErrorCode.SSL_ERROR,
        Reason.TLS_HANDSHAKE_FAILED,
        "tls",
    )
    assert bounds.CERT_CHAIN_TOO_LONG in (run.result.detail or "")
    assert run.seconds < STEP_TIMEOUT_S
    assert run.peak_bytes < PEAK_BUDGET_BYTES, run


DRIP_STEP_S = 1.0  # two bytes of a drip at one byte every 0.5 s


@pytest.mark.parametrize(
    ("protocol", "server", "reason", "step"),
    [
        ("imap", drip(IMAP_GREETING), Reason.NO_GREETING, "greeting"),
        ("smtp", drip(SMTP_GREETING), Reason.NO_GREETING, "tls"),
        ("smtp", drip(b"250-hostile.test\r\n", after_line=SMTP_GREETING), Reason.RESPONSE_TIMEOUT, "ehlo"),
    ],
    ids=["imap-greeting", "smtp-greeting", "smtp-ehlo"],
)
async def test_a_drip_ends_the_step_at_its_limit(
    fake_server: FakeFactory,
    pki: PKI,
    ca_file: str,
    protocol: str,
    server: Handler,
    reason: Reason,
    step: str,
) -> None:
    fake = fake_server(server, ssl_context=pki.valid.ssl_context)
    check = imap if protocol == "imap" else smtp
    run = await measured(lambda: check(fake.port, ca_file, step_timeout=DRIP_STEP_S), fake, warm_up=False)
    assert (run.result.error_code, run.result.reason, run.result.failed_step) == (
        ErrorCode.TIMEOUT,
        reason,
        step,
    )
    # aiosmtplib reads an implicit-TLS greeting under its own limit, inside the TLS step.
    assert DRIP_STEP_S <= run.seconds < DRIP_STEP_S + TIMEOUT_SLACK_S
    assert run.peak_bytes < PEAK_BUDGET_BYTES, run


async def test_replies_each_within_the_step_limit_still_end_at_the_checks_deadline(
    fake_server: FakeFactory, ca_file: str
) -> None:
    # Every reply whole and well in time for its step (0.7 s of 3 s), but three of them take
    # 2.1 s: the EHLO answer comes 0.35 s before the 1.75 s deadline, AUTH's 0.35 s after it, so
    # a loaded machine's delays do not move the step that fails.
    replies = [SMTP_GREETING, b"250-hostile.test\r\n250 AUTH PLAIN\r\n", b"235 2.7.0 Accepted\r\n"]
    server = fake_server(slow_replies(replies, seconds_each=0.7))
    run = await measured(
        lambda: smtp(server.port, ca_file, "none", step_timeout=3.0, check_timeout=1.75),
        server,
        warm_up=False,
    )
    assert (run.result.error_code, run.result.reason, run.result.failed_step) == (
        ErrorCode.TIMEOUT,
        Reason.RESPONSE_TIMEOUT,
        "auth",
    )
    assert "past its 1.75s deadline" in (run.result.detail or "")
    assert 1.75 <= run.seconds < 1.75 + TIMEOUT_SLACK_S
    assert [s.ok for s in run.result.steps] == [True, True, True, True, False]


async def test_the_token_step_s_time_comes_out_of_the_checks_deadline(
    fake_server: FakeFactory, token_endpoint: Callable[..., TokenEndpoint], ca_file: str
) -> None:
    # An OAuth2 inbox whose token is fetched first: the job's budget holds only if the checks get
    # what the token step left of it. The greeting and EHLO take 0.8 s, then AUTH gets no answer:
    # the deadline (1.75 s less the token step) lands there, well before AUTH's own step limit.
    replies = [SMTP_GREETING, b"250-hostile.test\r\n250 AUTH XOAUTH2\r\n"]
    server = fake_server(slow_replies(replies, seconds_each=0.4))
    endpoint = token_endpoint()
    endpoint.add_client("app-1", "client-secret-value")
    oauth2 = {
        "refresh_token": endpoint.issue_refresh_token("ann@inboxcheck.test", "app-1"),
        "client_id": "app-1",
        "client_secret": "client-secret-value",
        "token_url": endpoint.token_url,
    }
    inbox = request(
        auth="oauth2",
        smtp_password=None,
        oauth2=oauth2,
        smtp_port=server.port,
        smtp_security="none",
        allow_insecure_auth=True,
    )
    result = await validate_inbox(inbox, options(ca_file, step_timeout=1.5, check_timeout=1.75))
    token_ms = result.smtp.steps[0].ms
    assert (result.smtp.reason, result.smtp.failed_step) == (Reason.RESPONSE_TIMEOUT, "auth")
    deadline = re.search(r"past its ([0-9.]+)s deadline", result.smtp.detail or "")
    assert deadline is not None, result.smtp.detail
    assert float(deadline.group(1)) == pytest.approx(1.75 - token_ms / 1000, abs=1e-3)
    assert float(deadline.group(1)) < 1.75
