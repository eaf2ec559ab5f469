"""IMAP check edges that the main tests do not stand on, each as a user reads the result: a
STARTTLS the server offers but refuses, OAuth2 sign-in with and without SASL-IR, the answer to a
refused token's error challenge, and a stray continuation line. Against the scripted servers of
tests/servers/fakes.py and a small OAuth2 IMAP server here (Dovecot always offers SASL-IR and
sends well-formed challenges, so it cannot show these)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from typing import Any

import pytest

from jobs.bounds import (
    IMAP_MAX_LINE_BYTES,
    IMAP_MAX_RESPONSE_BYTES,
    IMAP_MAX_RESPONSE_LINES,
    IMAP_TOO_MANY_LINES,
)
from jobs.errors import ErrorCode, Reason
from jobs.imap_check import check_imap
from tests.jobs.checks import options, request
from tests.servers.certs import PKI
from tests.servers.fakes import FakeServer, ImapScript
from tests.servers.tcp import Handler

FakeFactory = Callable[..., FakeServer]
TOKEN = "good-token"
GMAIL_CHALLENGE = base64.b64encode(
    json.dumps({"status": "401", "schemes": "bearer", "scope": "https://mail.google.com/"}).encode()
)
REFUSED = "NO [AUTHENTICATIONFAILED] Authentication failed"


class OAuthImap:
    """A minimal IMAP server for OAuth2 sign-in (implicit TLS is the FakeServer's). It records
    whether the SASL response came with the command (`inline`), the decoded responses, and what
    the client answered to the error challenge (`answers`). A LOGIN gets a stray `+` line before
    its refusal."""

    def __init__(
        self,
        capabilities: str = "IMAP4rev1 AUTH=XOAUTH2 AUTH=OAUTHBEARER SASL-IR",
        challenge: bytes | None = GMAIL_CHALLENGE,
        refusal: str = REFUSED,
        echo: bool = False,
    ) -> None:
        self.capabilities = capabilities
        self.echo = echo  # the refusal quotes the SASL response, as some servers do
        self.challenge = challenge
        self.refusal = refusal
        self.inline: list[bool] = []
        self.responses: list[str] = []
        self.answers: list[bytes] = []

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(f"* OK [CAPABILITY {self.capabilities}] ready\r\n".encode())
        while line := await reader.readline():
            tag, command, *args = line.decode().split()
            if command == "AUTHENTICATE":
                self.inline.append(len(args) > 1)
                if len(args) < 2:
                    writer.write(b"+ \r\n")
                    args.append((await reader.readline()).decode().strip())
                response = base64.b64decode(args[1]).decode()
                self.responses.append(response)
                if f"auth=Bearer {TOKEN}\x01" in response:
                    writer.write(f"{tag} OK Logged in\r\n".encode())
                    continue
                if self.challenge is not None:
                    writer.write(b"+ " + self.challenge + b"\r\n")
                    self.answers.append((await reader.readline()).rstrip(b"\r\n"))
                echo = f" (you sent {args[1]})" if self.echo else ""
                writer.write(f"{tag} {self.refusal}{echo}\r\n".encode())
            elif command == "LOGIN":
                writer.write(f"+ go on\r\n{tag} {REFUSED}\r\n".encode())
            elif command == "EXAMINE":
                writer.write(f"* 0 EXISTS\r\n{tag} OK [READ-ONLY] EXAMINE completed\r\n".encode())
            elif command == "LOGOUT":
                writer.write(f"* BYE Logging out\r\n{tag} OK LOGOUT completed\r\n".encode())
                await writer.drain()
                return
            else:
                writer.write(f"{tag} BAD Unknown command\r\n".encode())
            await writer.drain()


def _oauth_request(port: int, token: str = TOKEN) -> Any:
    return request(
        imap_port=port, imap_use_ssl=True, auth="oauth2", oauth2={"access_token": token}, smtp_password=None
    )


async def test_a_starttls_offered_then_refused_is_named_with_the_servers_reply(
    fake_server: FakeFactory, ca_file: str
) -> None:
    # Offered in the greeting's capabilities, refused when asked (the script has no TLS to give).
    script = ImapScript(capabilities="IMAP4rev1 AUTH=PLAIN STARTTLS", login_reply="OK Logged in")
    server = fake_server(script)
    result = await check_imap(request(imap_port=server.port, imap_use_ssl=False), options(ca_file))
    assert (result.error_code, result.reason, result.failed_step) == (
        ErrorCode.SSL_ERROR,
        Reason.STARTTLS_UNAVAILABLE,
        "starttls",
    )
    assert result.detail == f"IMAP server 127.0.0.1:{server.port} refused STARTTLS"
    assert (result.reply_status, result.reply_text) == ("BAD", "STARTTLS not available")
    assert script.logins == []


@pytest.mark.parametrize(("sasl_ir", "inline"), [(True, True), (False, False)], ids=["sasl-ir", "no-sasl-ir"])
async def test_the_token_goes_with_the_command_only_where_the_server_offers_sasl_ir(
    fake_server: FakeFactory, pki: PKI, ca_file: str, sasl_ir: bool, inline: bool
) -> None:
    capabilities = "IMAP4rev1 AUTH=XOAUTH2" + (" SASL-IR" if sasl_ir else "")
    imap = OAuthImap(capabilities=capabilities)
    server = fake_server(imap, ssl_context=pki.valid.ssl_context)
    result = await check_imap(_oauth_request(server.port), options(ca_file))
    assert (result.status, result.auth_mechanism) == ("ok", "XOAUTH2"), result.detail
    assert imap.inline == [inline]
    assert imap.responses == [f"user=ann@inboxcheck.test\x01auth=Bearer {TOKEN}\x01\x01"]


@pytest.mark.parametrize(("mechanism", "answer"), [("XOAUTH2", b""), ("OAUTHBEARER", b"AQ==")])
async def test_a_refused_token_answers_the_error_challenge_as_its_mechanism_requires(
    fake_server: FakeFactory, pki: PKI, ca_file: str, mechanism: str, answer: bytes
) -> None:
    imap = OAuthImap(capabilities=f"IMAP4rev1 AUTH={mechanism} SASL-IR")
    server = fake_server(imap, ssl_context=pki.valid.ssl_context)
    result = await check_imap(_oauth_request(server.port, "revoked"), options(ca_file))
    assert (result.error_code, result.reason, result.failed_step) == (
        ErrorCode.AUTH_FAILED,
        Reason.INVALID_CREDENTIALS,
        "login",
    )
    assert result.auth_mechanism == mechanism
    assert imap.answers == [answer]  # XOAUTH2: an empty line; OAUTHBEARER: 0x01 (RFC 7628 3.2.3)
    assert result.detail == (
        f"IMAP server 127.0.0.1:{server.port} refused the OAuth2 access token "
        "(status 401, scope https://mail.google.com/, schemes bearer); "
        "usually the token is for another scope or another user, or has expired"
    )
    assert (result.reply_status, result.reply_text) == ("NO", "[AUTHENTICATIONFAILED] Authentication failed")
    if mechanism == "OAUTHBEARER":
        # The host and port the token is meant for (RFC 7628 3.1).
        assert f"\x01host=127.0.0.1\x01port={server.port}\x01" in imap.responses[0]


async def test_an_error_challenge_that_is_not_ascii_is_answered_and_left_out(
    fake_server: FakeFactory, pki: PKI, ca_file: str
) -> None:
    imap = OAuthImap(capabilities="IMAP4rev1 AUTH=XOAUTH2 SASL-IR", challenge=b"\xff\xfe{}")
    server = fake_server(imap, ssl_context=pki.valid.ssl_context)
    result = await check_imap(_oauth_request(server.port, "revoked"), options(ca_file))
    assert (result.reason, result.failed_step) == (Reason.INVALID_CREDENTIALS, "login")
    assert imap.answers == [b""]
    assert result.detail == (
        f"IMAP server 127.0.0.1:{server.port} refused the OAuth2 access token; "
        "usually the token is for another scope or another user, or has expired"
    )


async def test_a_throttled_token_refusal_carries_the_suggested_backoff(
    fake_server: FakeFactory, pki: PKI, ca_file: str
) -> None:
    imap = OAuthImap(
        challenge=None, refusal="NO Request is throttled. Suggested Backoff Time: 1500 milliseconds"
    )
    server = fake_server(imap, ssl_context=pki.valid.ssl_context)
    result = await check_imap(_oauth_request(server.port, "revoked"), options(ca_file))
    assert (result.failed_step, result.retryable, result.retry_after_s) == ("login", True, 1.5)


async def test_no_oauth_mechanism_offered_over_imap_names_what_was_offered(
    fake_server: FakeFactory, pki: PKI, ca_file: str
) -> None:
    imap = OAuthImap(capabilities="IMAP4rev1 AUTH=PLAIN")
    server = fake_server(imap, ssl_context=pki.valid.ssl_context)
    result = await check_imap(_oauth_request(server.port), options(ca_file))
    assert (result.reason, result.failed_step) == (Reason.AUTH_MECHANISM_UNSUPPORTED, "login")
    assert result.detail == f"IMAP server 127.0.0.1:{server.port} offers no OAuth2 mechanism (offered: PLAIN)"
    assert imap.responses == []


async def test_a_stray_continuation_before_logins_refusal_is_still_a_wrong_password(
    fake_server: FakeFactory, pki: PKI, ca_file: str
) -> None:
    # A `+` nobody asked for is kept with LOGIN's answer (its text too), not taken as a broken protocol.
    imap = OAuthImap(capabilities="IMAP4rev1 AUTH=PLAIN")
    server = fake_server(imap, ssl_context=pki.valid.ssl_context)
    result = await check_imap(request(imap_port=server.port, imap_use_ssl=True), options(ca_file))
    assert (result.error_code, result.reason, result.failed_step) == (
        ErrorCode.AUTH_FAILED,
        Reason.INVALID_CREDENTIALS,
        "login",
    )
    assert (result.reply_status, result.reply_text) == (
        "NO",
        "+ go on [AUTHENTICATIONFAILED] Authentication failed",
    )


async def _answers_with_a_foreign_tag(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] odd server\r\n")
    while await reader.readline():
        writer.write(b"Z999 NO not your tag\r\n")


async def test_a_reply_the_library_cannot_place_is_named_as_a_broken_protocol(
    fake_server: FakeFactory, pki: PKI, ca_file: str
) -> None:
    server = fake_server(_answers_with_a_foreign_tag, ssl_context=pki.valid.ssl_context)
    result = await check_imap(request(imap_port=server.port, imap_use_ssl=True), options(ca_file))
    assert (result.reason, result.failed_step) == (Reason.PROTOCOL_ERROR, "login")
    assert result.detail == (
        f"IMAP server 127.0.0.1:{server.port}: the server's reply broke the IMAP protocol (Abort) during login"
    )


def _filler(count: int) -> bytes:
    return b"".join(b"* OK filler %d\r\n" % n for n in range(count))


def _last_line_of_each_answer(tag: bytes, command: bytes) -> bytes:
    return {
        b"CAPABILITY": b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n" + tag + b" OK done\r\n",
        b"LOGIN": tag + b" OK Logged in\r\n",
        b"EXAMINE": tag + b" OK [READ-ONLY] done\r\n",
        b"LOGOUT": b"* BYE bye\r\n" + tag + b" OK done\r\n",
    }[command.upper()]


def _answers_padded(greeting: bytes, pad: Callable[[bytes], bytes]) -> Handler:
    """A server that greets with `greeting` and answers every command with `pad(last lines)`."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(greeting)
        while line := await reader.readline():
            tag, command = line.split()[:2]
            writer.write(pad(_last_line_of_each_answer(tag, command)))
            await writer.drain()

    return handler


async def test_answers_of_exactly_the_line_bound_are_read_whole(
    fake_server: FakeFactory, pki: PKI, ca_file: str
) -> None:
    # CAPABILITY, LOGIN and the EXAMINE sent with it each count their answer from zero.
    # Every answer exactly IMAP_MAX_RESPONSE_LINES lines, its tagged line included; no
    # capabilities in the greeting, so the client asks for them.
    at_the_line_bound = _answers_padded(
        b"* OK ready\r\n", lambda last: _filler(IMAP_MAX_RESPONSE_LINES - last.count(b"\n")) + last
    )
    server = fake_server(at_the_line_bound, ssl_context=pki.valid.ssl_context)
    result = await check_imap(request(imap_port=server.port, imap_use_ssl=True), options(ca_file))
    assert (result.status, result.auth_mechanism) == ("ok", "LOGIN"), result.detail


async def test_an_ok_greeting_from_a_server_without_imap4rev1_is_a_protocol_error_not_a_refusal(
    fake_server: FakeFactory, pki: PKI, ca_file: str
) -> None:
    # The greeting said OK: the server did not refuse the session (nothing to retry later); it
    # speaks no IMAP version the client knows.
    script = ImapScript(capabilities="AUTH=PLAIN", login_reply="OK Logged in")
    server = fake_server(script, ssl_context=pki.valid.ssl_context)
    result = await check_imap(request(imap_port=server.port, imap_use_ssl=True), options(ca_file))
    assert (result.reason, result.failed_step, result.retryable) == (Reason.PROTOCOL_ERROR, "greeting", False)
    assert result.reply_status is None
    assert script.logins == []


async def test_a_capability_that_is_not_ascii_in_the_greeting_is_read_past(
    fake_server: FakeFactory, pki: PKI, ca_file: str
) -> None:
    imap = OAuthImap(capabilities="IMAP4rev1 AUTH=PLAIN X-CAF\u00c9")  # sent as UTF-8
    server = fake_server(imap, ssl_context=pki.valid.ssl_context)
    result = await check_imap(request(imap_port=server.port, imap_use_ssl=True), options(ca_file))
    # The greeting was taken: the check went on to LOGIN and its refusal.
    assert (result.reason, result.failed_step) == (Reason.INVALID_CREDENTIALS, "login")


def _padded(size: int, last: bytes) -> bytes:
    """Untagged lines, each well within the line bound, then `last`: `size` bytes in all."""
    room = size - len(last)
    lines = []
    while room > 0:
        length = min(room, IMAP_MAX_LINE_BYTES // 2)
        if 0 < room - length < len(b"* OK \r\n"):
            length -= len(b"* OK \r\n")
        lines.append(b"* OK " + b"x" * (length - len(b"* OK \r\n")) + b"\r\n")
        room -= length
    return b"".join(lines) + last


async def test_answers_of_exactly_the_byte_bound_are_read_whole(
    fake_server: FakeFactory, pki: PKI, ca_file: str
) -> None:
    at_the_byte_bound = _answers_padded(
        b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n",
        lambda last: _padded(IMAP_MAX_RESPONSE_BYTES, last),
    )
    server = fake_server(at_the_byte_bound, ssl_context=pki.valid.ssl_context)
    result = await check_imap(request(imap_port=server.port, imap_use_ssl=True), options(ca_file))
    assert result.status == "ok", result.detail


async def _refuses_login_with_a_literal(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n")
    while line := await reader.readline():
        tag, command = line.split()[:2]
        if command.upper() == b"LOGIN":
            writer.write(b"* NO [ALERT] {5}\r\nhello world\r\n" + tag + b" NO [AUTHENTICATIONFAILED] bad\r\n")
        else:
            writer.write(tag + b" BAD Not authenticated\r\n")
        await writer.drain()


async def test_a_reply_with_a_literal_keeps_the_text_after_it(
    fake_server: FakeFactory, pki: PKI, ca_file: str
) -> None:
    server = fake_server(_refuses_login_with_a_literal, ssl_context=pki.valid.ssl_context)
    result = await check_imap(request(imap_port=server.port, imap_use_ssl=True), options(ca_file))
    assert (result.reason, result.failed_step, result.reply_status) == (
        Reason.INVALID_CREDENTIALS,
        "login",
        "NO",
    )
    # The literal ("hello") and the rest of its line (" world") both reach the reply text.
    assert result.reply_text == "NO [ALERT] {5} hello  world [AUTHENTICATIONFAILED] bad"


async def _hangs_up_at_login(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n")
    await reader.readline()  # LOGIN (and EXAMINE): no answer, no BYE, the connection closed


async def test_a_hang_up_without_bye_is_a_closed_connection_not_a_bye(
    fake_server: FakeFactory, pki: PKI, ca_file: str
) -> None:
    server = fake_server(_hangs_up_at_login, ssl_context=pki.valid.ssl_context)
    result = await check_imap(request(imap_port=server.port, imap_use_ssl=True), options(ca_file))
    assert (result.reason, result.failed_step) == (Reason.CONNECTION_CLOSED, "login")
    assert result.detail == f"IMAP server 127.0.0.1:{server.port} closed the connection during login"
    assert result.reply_status is None and result.reply_text is None


async def _floods_the_capability_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"* OK ready\r\n")  # no capabilities: the client asks for them
    await reader.readline()
    writer.write(_filler(2 * IMAP_MAX_RESPONSE_LINES))
    await writer.drain()
    await reader.read()


async def test_the_answer_to_capability_is_bounded_too(
    fake_server: FakeFactory, pki: PKI, ca_file: str
) -> None:
    server = fake_server(_floods_the_capability_answer, ssl_context=pki.valid.ssl_context)
    result = await check_imap(request(imap_port=server.port, imap_use_ssl=True), options(ca_file))
    assert (result.reason, result.failed_step) == (Reason.PROTOCOL_ERROR, "greeting")
    assert IMAP_TOO_MANY_LINES in (result.detail or "")


async def _ssh_banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"SSH-2.0-OpenSSH_9.6\r\n")
    await writer.drain()
    await reader.read()


async def test_a_greeting_that_is_not_imap_is_a_protocol_error_with_an_excerpt(
    fake_server: FakeFactory, pki: PKI, ca_file: str
) -> None:
    server = fake_server(_ssh_banner, ssl_context=pki.valid.ssl_context)
    result = await check_imap(request(imap_port=server.port, imap_use_ssl=True), options(ca_file))
    assert (result.reason, result.failed_step, result.retryable) == (Reason.PROTOCOL_ERROR, "greeting", False)
    assert result.detail == f"IMAP server 127.0.0.1:{server.port} greeted with something that is not IMAP"
    assert (result.reply_status, result.reply_text) == (None, "SSH-2.0-OpenSSH_9.6")


async def test_a_certificate_problem_names_the_server(
    fake_server: FakeFactory, pki: PKI, ca_file: str
) -> None:
    server = fake_server(ImapScript(), ssl_context=pki.expired.ssl_context)
    result = await check_imap(request(imap_port=server.port, imap_use_ssl=True), options(ca_file))
    assert (result.reason, result.failed_step) == (Reason.CERT_EXPIRED, "tls")
    assert (result.detail or "").startswith(f"IMAP server 127.0.0.1:{server.port}")


@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
async def test_a_refusal_that_quotes_the_sasl_response_is_scrubbed(
    fake_server: FakeFactory, pki: PKI, ca_file: str, mechanism: str
) -> None:
    imap = OAuthImap(capabilities=f"IMAP4rev1 AUTH={mechanism} SASL-IR", challenge=None, echo=True)
    server = fake_server(imap, ssl_context=pki.valid.ssl_context)
    # A user name that puts the token off the base64 grid of the response, so that only the
    # whole response, not the token's own base64, can mask it.
    prefix = {
        "XOAUTH2": "user={}\x01auth=Bearer ",
        "OAUTHBEARER": "n,a={},\x01host=127.0.0.1\x01port={}\x01auth=Bearer ",
    }
    email = next(
        e
        for e in ("a@inboxcheck.test", "ab@inboxcheck.test", "abc@inboxcheck.test")
        if len(prefix[mechanism].format(e, server.port)) % 3
    )
    checked = request(
        imap_port=server.port,
        imap_use_ssl=True,
        email=email,
        auth="oauth2",
        oauth2={"access_token": "revoked-token"},
        smtp_password=None,
    )
    result = await check_imap(checked, options(ca_file))
    assert (result.reason, result.failed_step) == (Reason.INVALID_CREDENTIALS, "login")
    [response] = imap.responses
    sent = base64.b64encode(response.encode()).decode()
    assert sent not in result.model_dump_json() and "you sent" in (result.reply_text or "")


async def test_the_imap_username_is_the_one_logged_in_with(
    fake_server: FakeFactory, pki: PKI, ca_file: str
) -> None:
    script = ImapScript(login_reply="OK Logged in")
    server = fake_server(script, ssl_context=pki.valid.ssl_context)
    checked = request(imap_port=server.port, imap_use_ssl=True, imap_username="ann-imap")
    result = await check_imap(checked, options(ca_file))
    assert result.status == "ok", result.detail
    assert script.logins == [("ann-imap", "not-the-password")]
