"""The check takes no more round trips than the protocols need: the verdict does not wait for the
answer to QUIT or LOGOUT (the goodbye finishes in the background, within its bound), and IMAP's
LOGIN and EXAMINE go out in one flight. Over real sockets, against scripted servers that stay
silent where real ones answer, and that record what had arrived before they answered."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from structlog.testing import capture_logs

from jobs import goodbyes as goodbye_tasks
from jobs.errors import ErrorCode, Reason
from jobs.goodbyes import Goodbyes
from jobs.imap_check import check_imap
from jobs.options import GOODBYE_TIMEOUT_S
from jobs.request import ValidationRequest
from jobs.smtp_check import check_smtp
from tests.jobs.checks import STEP_TIMEOUT_S, cut_short, options, request, set_within
from tests.servers.certs import PKI
from tests.servers.fakes import FakeServer, ImapScript, SmtpScript

FakeFactory = Callable[..., FakeServer]
# What the check gives a goodbye: the shorter of its step limit and GOODBYE_TIMEOUT_S.
BOUND_S = min(STEP_TIMEOUT_S, GOODBYE_TIMEOUT_S)
AUTH_OK = "235 2.7.0 Authentication successful"
LOGIN_OK = "OK Logged in"
# Where the bound itself is what is proved: a loaded 2-core CI running the suite with pytest -n
# auto can hold up this loop and the server's thread for seconds; a goodbye that ignored its bound
# would hold on for as long as the silent server (for ever).
LOADED_SLACK_S = 5.0


def _silent_smtp(pki: PKI) -> SmtpScript:
    return SmtpScript(auth_reply=AUTH_OK, starttls_context=pki.valid.ssl_context, silent_after_quit=True)


def _smtp_request(port: int) -> ValidationRequest:
    return request(smtp_port=port, smtp_security="starttls")


def _imap_request(port: int, password: str = "not-the-password") -> ValidationRequest:
    return request(imap_port=port, imap_use_ssl=True, smtp_password=password)


async def test_smtp_verdict_comes_while_quit_is_unanswered_and_the_connection_closes_within_the_bound(
    fake_server: FakeFactory, pki: PKI, ca_file: str
) -> None:
    script = _silent_smtp(pki)
    server = fake_server(script)
    goodbyes = Goodbyes()
    with capture_logs() as logs:
        result = await check_smtp(_smtp_request(server.port), options(ca_file), goodbyes)
        verdict_at = time.monotonic()
        assert result.status == "ok", result.detail
        assert "quit" not in [s.step for s in result.steps]
        # QUIT went out and the server says nothing: the verdict is already here, the goodbye not done.
        assert await set_within(script.quit_received, BOUND_S + LOADED_SLACK_S)
        assert goodbyes.pending == 1 and not script.gone.is_set()
        await goodbyes.closed()
        assert await set_within(script.gone, LOADED_SLACK_S), "the client never closed the connection"
    # Closed by the client at the goodbye's bound, which is what ended it.
    assert time.monotonic() - verdict_at < BOUND_S + LOADED_SLACK_S
    assert cut_short(logs) == [("smtp", False, BOUND_S)]


async def test_imap_verdict_comes_while_logout_is_unanswered_and_the_connection_closes_within_the_bound(
    fake_server: FakeFactory, pki: PKI, ca_file: str
) -> None:
    script = ImapScript(login_reply=LOGIN_OK, silent_after_logout=True)
    server = fake_server(script, ssl_context=pki.valid.ssl_context)
    goodbyes = Goodbyes()
    with capture_logs() as logs:
        result = await check_imap(_imap_request(server.port), options(ca_file), goodbyes)
        verdict_at = time.monotonic()
        assert result.status == "ok", result.detail
        assert "logout" not in [s.step for s in result.steps]
        assert await set_within(script.logout_received, BOUND_S + LOADED_SLACK_S)
        assert goodbyes.pending == 1 and not script.gone.is_set()
        await goodbyes.closed()
        assert await set_within(script.gone, LOADED_SLACK_S), "the client never closed the connection"
    assert time.monotonic() - verdict_at < BOUND_S + LOADED_SLACK_S
    assert cut_short(logs) == [("imap", False, BOUND_S)]


async def test_a_polite_server_is_seen_off_without_waiting_for_the_bound(
    fake_server: FakeFactory, pki: PKI, ca_file: str
) -> None:
    smtp = SmtpScript(auth_reply=AUTH_OK, starttls_context=pki.valid.ssl_context)
    imap = ImapScript(login_reply=LOGIN_OK)
    smtp_port = fake_server(smtp).port
    imap_port = fake_server(imap, ssl_context=pki.valid.ssl_context).port
    goodbyes = Goodbyes()
    with capture_logs() as logs:
        results = await asyncio.gather(
            check_smtp(_smtp_request(smtp_port), options(ca_file), goodbyes),
            check_imap(_imap_request(imap_port), options(ca_file), goodbyes),
        )
        assert [r.status for r in results] == ["ok", "ok"]
        await goodbyes.closed()
    # Both answered and closed: neither goodbye ran into its bound.
    assert cut_short(logs) == []
    assert smtp.commands[-1] == "QUIT" and imap.commands[-1].endswith("LOGOUT")
    assert await set_within(smtp.gone, LOADED_SLACK_S) and await set_within(imap.gone, LOADED_SLACK_S)


async def test_drain_ends_every_goodbye_of_the_loop_at_once(
    fake_server: FakeFactory, pki: PKI, ca_file: str
) -> None:
    # What the worker's shutdown and `inboxcheck validate` rely on: nothing is left half closed
    # when the loop ends, and a silent server does not keep them for the whole bound.
    smtp = _silent_smtp(pki)
    imap = ImapScript(login_reply=LOGIN_OK, silent_after_logout=True)
    smtp_port = fake_server(smtp).port
    imap_port = fake_server(imap, ssl_context=pki.valid.ssl_context).port
    with capture_logs() as logs:
        await check_smtp(_smtp_request(smtp_port), options(ca_file))
        await check_imap(_imap_request(imap_port), options(ca_file))
        received = [
            set_within(smtp.quit_received, LOADED_SLACK_S),
            set_within(imap.logout_received, LOADED_SLACK_S),
        ]
        assert all(await asyncio.gather(*received))
        assert goodbye_tasks.pending() == 2
        await goodbye_tasks.drain(within_s=0)
        assert goodbye_tasks.pending() == 0
    assert await set_within(smtp.gone, LOADED_SLACK_S) and await set_within(imap.gone, LOADED_SLACK_S)
    # Ended there and then: a goodbye left to run into its bound says so.
    assert cut_short(logs) == []


async def test_login_and_examine_go_in_one_flight(fake_server: FakeFactory, pki: PKI, ca_file: str) -> None:
    # The server holds LOGIN's answer until the next command arrives (or its wait ends): a client
    # that waits for LOGIN's answer before EXAMINE has sent nothing more by then.
    script = ImapScript(login_reply=LOGIN_OK, wait_for_pipelined_s=STEP_TIMEOUT_S)
    server = fake_server(script, ssl_context=pki.valid.ssl_context)
    result = await check_imap(_imap_request(server.port), options(ca_file))
    assert result.status == "ok", result.detail
    assert [c.split(" ", 1)[1] for c in script.sent_with_login] == ["EXAMINE INBOX"]
    # The greeting announced the capabilities: none asked for again.
    assert not any(" CAPABILITY" in c.upper() for c in script.commands)


async def test_a_wrong_password_is_judged_by_logins_answer_not_by_the_pipelined_examine(
    fake_server: FakeFactory, pki: PKI, ca_file: str
) -> None:
    script = ImapScript(wait_for_pipelined_s=STEP_TIMEOUT_S)  # LOGIN refused; EXAMINE: BAD Not authenticated
    server = fake_server(script, ssl_context=pki.valid.ssl_context)
    result = await check_imap(_imap_request(server.port, "wrong"), options(ca_file))
    assert script.sent_with_login, "EXAMINE was not sent with LOGIN"
    assert (result.error_code, result.reason, result.failed_step) == (
        ErrorCode.AUTH_FAILED,
        Reason.INVALID_CREDENTIALS,
        "login",
    )
    assert result.reply_status == "NO"
    assert result.reply_text == "[AUTHENTICATIONFAILED] Invalid credentials (Failure)"


async def test_logindisabled_sends_neither_login_nor_examine(
    fake_server: FakeFactory, pki: PKI, ca_file: str
) -> None:
    script = ImapScript(
        capabilities="IMAP4rev1 LOGINDISABLED", login_reply=LOGIN_OK, wait_for_pipelined_s=STEP_TIMEOUT_S
    )
    server = fake_server(script, ssl_context=pki.valid.ssl_context)
    result = await check_imap(_imap_request(server.port), options(ca_file))
    assert (result.error_code, result.reason) == (ErrorCode.AUTH_FAILED, Reason.AUTH_MECHANISM_UNSUPPORTED)
    assert not any(word in c.upper() for c in script.commands for word in ("LOGIN", "EXAMINE"))


async def test_a_greeting_without_capabilities_asks_for_them_then_still_pipelines(
    fake_server: FakeFactory, pki: PKI, ca_file: str
) -> None:
    script = ImapScript(greeting="* OK fake ready", login_reply=LOGIN_OK, wait_for_pipelined_s=STEP_TIMEOUT_S)
    server = fake_server(script, ssl_context=pki.valid.ssl_context)
    result = await check_imap(_imap_request(server.port), options(ca_file))
    assert result.status == "ok", result.detail
    assert script.commands[0].split(" ", 1)[1] == "CAPABILITY"
    assert [c.split(" ", 1)[1] for c in script.sent_with_login] == ["EXAMINE INBOX"]


async def test_a_greeting_announcing_no_imap4rev1_is_refused_as_before(
    fake_server: FakeFactory, pki: PKI, ca_file: str
) -> None:
    # The announced list is taken only when the library would take it: otherwise its own
    # CAPABILITY and its own refusal.
    script = ImapScript(capabilities="AUTH=PLAIN", login_reply=LOGIN_OK)
    server = fake_server(script, ssl_context=pki.valid.ssl_context)
    result = await check_imap(_imap_request(server.port), options(ca_file))
    assert result.status == "failed" and result.failed_step == "greeting"
    assert script.logins == []
