"""Reasons of the README's error table that only a rare server or network produces, each reached
over a real socket: a route the kernel refuses, a server's "too many connections", a 421 after the
greeting, and IMAP's temporary authentication failure from a real Dovecot."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from jobs.destinations import ALLOW_ALL
from jobs.errors import ErrorCode, Reason
from jobs.imap_check import check_imap
from jobs.smtp_check import check_smtp
from tests.jobs.checks import CLOSED_PORT, options, request
from tests.servers import oauth
from tests.servers.certs import PKI
from tests.servers.dovecot import Dovecot
from tests.servers.fakes import FakeServer, ImapScript, SmtpScript
from tests.servers.oauth import OAuthAccount, TokenEndpoint

# Linux refuses a TCP connection to a multicast address in connect() itself (ENETUNREACH), on
# any machine and whatever its routes: nothing is sent, so the test stays off the network. An
# unroutable unicast address would not do: where a default route exists (CI machines, most
# laptops), its SYN goes out and the check times out instead.
MULTICAST = "224.0.0.1"
IMAPS_PORT = 993


async def test_an_address_the_kernel_cannot_route_is_network_unreachable(ca_file: str) -> None:
    # `inboxcheck validate` connects anywhere (ALLOW_ALL); the worker's policy would refuse the
    # address before trying, as DESTINATION_REFUSED (tests/jobs/test_destinations.py).
    probe = request(smtp_host=MULTICAST, smtp_port=CLOSED_PORT, imap_host=MULTICAST, imap_port=IMAPS_PORT)
    for check in (check_smtp, check_imap):
        result = await check(probe, options(ca_file, destinations=ALLOW_ALL))
        assert (result.error_code, result.reason, result.failed_step) == (
            ErrorCode.CONNECTION_FAILED,
            Reason.NETWORK_UNREACHABLE,
            "connect",
        ), check.__name__
        assert result.retryable


class EhloRefused(SmtpScript):
    """Greets, then answers EHLO (and HELO) with `reply`: a server going away mid-session."""

    def __init__(self, reply: str) -> None:
        super().__init__()
        self.reply = reply

    def _ehlo_reply(self, upgraded: bool) -> str:
        return self.reply


@pytest.mark.parametrize(
    "greeting",
    [
        "421 4.7.0 Too many concurrent SMTP connections; please try again later.",  # Exchange
        "421 4.7.0 mail.example.com Error: too many connections from 192.0.2.7",  # Postfix
    ],
    ids=["exchange", "postfix"],
)
async def test_too_many_connections_at_the_greeting_is_named(
    fake_server: Callable[..., FakeServer], ca_file: str, greeting: str
) -> None:
    server = fake_server(SmtpScript(greeting=greeting))
    result = await check_smtp(request(smtp_port=server.port, smtp_security="starttls"), options(ca_file))
    assert (result.error_code, result.reason, result.failed_step) == (
        ErrorCode.CONNECTION_FAILED,
        Reason.TOO_MANY_CONNECTIONS,
        "greeting",
    )
    assert (result.reply_code, result.enhanced_status_code, result.retryable) == (421, "4.7.0", True)


async def test_a_421_after_the_greeting_is_the_service_going_away_not_a_protocol_error(
    fake_server: Callable[..., FakeServer], ca_file: str
) -> None:
    script = EhloRefused("421 4.3.2 Service shutting down, closing transmission channel")
    server = fake_server(script)
    result = await check_smtp(request(smtp_port=server.port, smtp_security="starttls"), options(ca_file))
    assert (result.error_code, result.reason, result.failed_step) == (
        ErrorCode.CONNECTION_FAILED,
        Reason.SERVICE_UNAVAILABLE,
        "ehlo",
    )
    assert (result.reply_code, result.retryable) == (421, True)  # retried later, not a verdict
    assert script.logins == []


async def test_a_temporary_login_failure_is_not_a_wrong_password(
    fake_server: Callable[..., FakeServer], pki: PKI, ca_file: str
) -> None:
    # Dovecot's words when its password database is out of reach.
    script = ImapScript(login_reply="NO [UNAVAILABLE] Temporary authentication failure. [mx1:2026-12-03]")
    server = fake_server(script, ssl_context=pki.valid.ssl_context)
    result = await check_imap(request(imap_port=server.port), options(ca_file))
    assert (result.error_code, result.reason, result.failed_step, result.retryable) == (
        ErrorCode.AUTH_FAILED,
        Reason.TEMPORARY_AUTH_FAILURE,
        "login",
        True,
    )


async def test_dovecot_unable_to_check_a_token_is_a_temporary_auth_failure(
    oauth_dovecot: Dovecot, oauth_provider: TokenEndpoint, oauth_user: OAuthAccount, ca_file: str
) -> None:
    token = oauth_provider.issue_access_token(oauth_user.email)
    oauth_provider.fail_with(oauth.HTTP_503, on="introspect")  # the fixture clears it afterwards
    fields: dict[str, Any] = {"smtp_password": None, "auth": "oauth2", "oauth2": {"access_token": token}}
    probe = request(email=oauth_user.email, imap_port=oauth_dovecot.imaps_port, **fields)
    result = await check_imap(probe, options(ca_file))
    assert (result.error_code, result.reason, result.retryable) == (
        ErrorCode.AUTH_FAILED,
        Reason.TEMPORARY_AUTH_FAILURE,
        True,
    )
    assert result.reply_status == "NO"
    assert (result.reply_text or "").startswith("[UNAVAILABLE] Temporary authentication failure.")
