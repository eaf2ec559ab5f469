"""SMTP check edges that the main tests do not stand on, each as a user reads the result: the
answer to a refused token's error challenge in each mechanism, the host and port OAUTHBEARER
names, the detail of a refusal, a refusal echoing the SASL response, a server that refuses AUTH
before any token was sent or hangs up mid-session, a login name apart from the address, and
Google's rows for a Google inbox on other hosts. Against
a small OAuth2 SMTP server here that records every line it is sent."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from typing import Any

import pytest

from jobs.errors import ErrorCode, Reason
from jobs.smtp_check import check_smtp
from tests.jobs.checks import options, request
from tests.servers.certs import PKI
from tests.servers.fakes import FakeServer, SmtpScript
from tests.servers.smtp import SmtpServer

FakeFactory = Callable[..., FakeServer]
TOKEN = "good-token"
# Longer than fits on one 512-octet AUTH line: sent on the line after the server's empty 334.
LONG_TOKEN = "t" * 600
GMAIL_CHALLENGE = base64.b64encode(
    json.dumps({"status": "401", "schemes": "bearer", "scope": "https://mail.google.com/"}).encode()
)
REFUSAL = "535 5.7.8 Username and Password not accepted"


class OAuthSmtp:
    """A minimal ESMTP server for OAuth2 AUTH (implicit TLS is the FakeServer's): `lines` holds
    every line the client sent, `responses` the decoded SASL responses, `answers` what the client
    answered to the error challenge. `bare_auth_reply` answers an AUTH without its response
    instead of the empty 334."""

    def __init__(
        self,
        mechanisms: str = "XOAUTH2 OAUTHBEARER",
        challenge: bytes | None = GMAIL_CHALLENGE,
        bare_auth_reply: str | None = None,
        echo: bool = False,
    ) -> None:
        self.mechanisms = mechanisms
        self.challenge = challenge
        self.bare_auth_reply = bare_auth_reply
        self.echo = echo
        self.lines: list[bytes] = []
        self.responses: list[str] = []
        self.answers: list[bytes] = []

    async def _line(self, reader: asyncio.StreamReader) -> bytes:
        line = (await reader.readline()).rstrip(b"\r\n")
        self.lines.append(line)
        return line

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 fake.test ESMTP\r\n")
        while line := await self._line(reader):
            verb, *args = line.decode().split()
            if verb.upper() == "EHLO":
                auth = f"250 AUTH {self.mechanisms}" if self.mechanisms else "250 SIZE 1000"
                writer.write(f"250-fake.test\r\n{auth}\r\n".encode())
            elif verb.upper() == "AUTH":
                if len(args) < 2:
                    if self.bare_auth_reply is not None:
                        writer.write(f"{self.bare_auth_reply}\r\n".encode())
                        await writer.drain()
                        continue
                    writer.write(b"334 \r\n")
                    args.append((await self._line(reader)).decode())
                response = base64.b64decode(args[1]).decode()
                self.responses.append(response)
                if f"auth=Bearer {TOKEN}\x01" in response:
                    writer.write(b"235 2.7.0 Accepted\r\n")
                else:
                    if self.challenge is not None:
                        writer.write(b"334 " + self.challenge + b"\r\n")
                        await writer.drain()
                        self.answers.append(await self._line(reader))
                    echoed = f" {args[1]}" if self.echo else ""
                    writer.write(f"{REFUSAL}{echoed}\r\n".encode())
            elif verb.upper() == "QUIT":
                writer.write(b"221 2.0.0 Bye\r\n")
                await writer.drain()
                return
            else:
                writer.write(b"500 5.5.2 Error: command not recognized\r\n")
            await writer.drain()


def _oauth_request(port: int, token: str, **fields: Any) -> Any:
    return request(
        smtp_port=port,
        smtp_security="ssl",
        auth="oauth2",
        oauth2={"access_token": token},
        smtp_password=None,
        **fields,
    )


def _decoded_words(text: str) -> str:
    """`text` with every word that is base64 decoded, as a reader of the event could."""
    decoded = []
    for word in text.split():
        try:
            decoded.append(base64.b64decode(word + "=" * (-len(word) % 4)).decode("latin-1"))
        except ValueError:
            decoded.append(word)
    return " ".join(decoded)


@pytest.mark.parametrize(("mechanism", "answer"), [("XOAUTH2", b""), ("OAUTHBEARER", b"AQ==")])
async def test_a_refused_token_answers_the_error_challenge_as_its_mechanism_requires(
    fake_server: FakeFactory, pki: PKI, ca_file: str, mechanism: str, answer: bytes
) -> None:
    smtp = OAuthSmtp(mechanisms=mechanism)
    server = fake_server(smtp, ssl_context=pki.valid.ssl_context)
    result = await check_smtp(_oauth_request(server.port, "revoked"), options(ca_file))
    assert (result.error_code, result.reason, result.failed_step) == (
        ErrorCode.AUTH_FAILED,
        Reason.INVALID_CREDENTIALS,
        "auth",
    )
    assert result.auth_mechanism == mechanism
    assert smtp.answers == [answer]  # XOAUTH2: an empty line; OAUTHBEARER: 0x01 (RFC 7628 3.2.3)
    assert result.detail == (
        f"SMTP server 127.0.0.1:{server.port} refused the OAuth2 access token "
        "(status 401, scope https://mail.google.com/, schemes bearer); "
        "usually the token is for another scope or another user, or has expired"
    )
    assert (result.reply_code, result.enhanced_status_code) == (535, "5.7.8")
    if mechanism == "OAUTHBEARER":
        # The host and port the token is meant for (RFC 7628 3.1).
        assert f"\x01host=127.0.0.1\x01port={server.port}\x01" in smtp.responses[0]


async def test_no_oauth_mechanism_offered_names_what_was_offered(
    fake_server: FakeFactory, pki: PKI, ca_file: str
) -> None:
    smtp = OAuthSmtp(mechanisms="PLAIN LOGIN")
    server = fake_server(smtp, ssl_context=pki.valid.ssl_context)
    result = await check_smtp(_oauth_request(server.port, TOKEN), options(ca_file))
    assert (result.reason, result.failed_step) == (Reason.AUTH_MECHANISM_UNSUPPORTED, "auth")
    assert (
        result.detail
        == f"SMTP server 127.0.0.1:{server.port} offers no OAuth2 mechanism (offered: LOGIN PLAIN)"
    )
    assert smtp.responses == []


async def test_a_server_offering_no_auth_at_all_says_so(
    fake_server: FakeFactory, pki: PKI, ca_file: str
) -> None:
    server = fake_server(OAuthSmtp(mechanisms=""), ssl_context=pki.valid.ssl_context)
    result = await check_smtp(_oauth_request(server.port, TOKEN), options(ca_file))
    assert (result.reason, result.failed_step) == (Reason.AUTH_MECHANISM_UNSUPPORTED, "auth")
    assert result.detail == f"SMTP server 127.0.0.1:{server.port} offers no OAuth2 mechanism (offered: none)"


async def test_a_server_refusing_auth_before_the_token_gets_no_token(
    fake_server: FakeFactory, pki: PKI, ca_file: str
) -> None:
    # A long token waits for the server's empty 334; a bare refusal instead ends the sign-in.
    smtp = OAuthSmtp(mechanisms="XOAUTH2", bare_auth_reply="535")
    server = fake_server(smtp, ssl_context=pki.valid.ssl_context)
    result = await check_smtp(_oauth_request(server.port, LONG_TOKEN), options(ca_file))
    assert (result.reason, result.failed_step, result.reply_code) == (Reason.INVALID_CREDENTIALS, "auth", 535)
    assert smtp.responses == []
    assert [line for line in smtp.lines[1:] if line] == [b"AUTH XOAUTH2"]  # and nothing after it


@pytest.mark.parametrize(
    ("mechanisms", "listed"),
    [("CRAM-MD5 xoauth2", "CRAM-MD5 XOAUTH2"), ("", "none")],
    ids=["others", "no-auth"],
)
async def test_no_password_mechanism_names_what_was_offered(
    fake_server: FakeFactory, pki: PKI, ca_file: str, mechanisms: str, listed: str
) -> None:
    smtp = OAuthSmtp(mechanisms=mechanisms)
    server = fake_server(smtp, ssl_context=pki.valid.ssl_context)
    result = await check_smtp(request(smtp_port=server.port, smtp_security="ssl"), options(ca_file))
    assert (result.reason, result.failed_step) == (Reason.AUTH_MECHANISM_UNSUPPORTED, "auth")
    assert result.detail == (
        f"SMTP server 127.0.0.1:{server.port} offers no password mechanism this check uses (offered: {listed})"
    )
    assert not [line for line in smtp.lines if line.upper().startswith(b"AUTH")]


async def test_plain_is_used_when_offered_with_login(
    fake_server: FakeFactory, pki: PKI, ca_file: str
) -> None:
    # One mechanism only, PLAIN first: the server sees a single AUTH PLAIN.
    script = SmtpScript(auth_reply="235 2.7.0 Accepted", starttls_context=pki.valid.ssl_context)
    server = fake_server(script)
    result = await check_smtp(
        request(smtp_port=server.port, smtp_security="starttls", smtp_password="pw"), options(ca_file)
    )
    assert (result.status, result.auth_mechanism) == ("ok", "PLAIN"), result.detail
    assert script.logins == [("PLAIN", "ann@inboxcheck.test", "pw")]


@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
async def test_a_refusal_echoing_the_sasl_response_keeps_the_token_out_of_the_result(
    fake_server: FakeFactory, pki: PKI, ca_file: str, mechanism: str
) -> None:
    # The response is base64 of user, token (and for OAUTHBEARER the host and port) together. With
    # this address the token sits off its own base64 grid in both (at bytes 38 and 64; ephemeral
    # ports have five digits), so masking the token's own base64 would not hide it: only the whole
    # response, as sent, is masked.
    smtp = OAuthSmtp(mechanisms=mechanism, challenge=None, echo=True)
    server = fake_server(smtp, ssl_context=pki.valid.ssl_context)
    revoked = "revoked-token-value"
    result = await check_smtp(
        _oauth_request(server.port, revoked, email="anna@inboxcheck.test"), options(ca_file)
    )
    assert result.reason is Reason.INVALID_CREDENTIALS
    assert smtp.responses and revoked in smtp.responses[0]
    assert result.reply_text is not None and "Username and Password not accepted ***" in result.reply_text
    assert revoked not in _decoded_words(result.reply_text)


async def _closes_at_ehlo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"220 fake.test ESMTP\r\n")
    await reader.readline()  # EHLO: no answer, the connection closed


async def test_a_server_closing_mid_session_is_named_with_the_step(
    fake_server: FakeFactory, ca_file: str
) -> None:
    server = fake_server(_closes_at_ehlo)
    result = await check_smtp(
        request(smtp_port=server.port, smtp_security="none", allow_insecure_auth=True), options(ca_file)
    )
    assert (result.error_code, result.reason, result.failed_step) == (
        ErrorCode.CONNECTION_FAILED,
        Reason.CONNECTION_CLOSED,
        "ehlo",
    )
    assert result.detail == f"SMTP server 127.0.0.1:{server.port} closed the connection during ehlo"


async def test_a_login_name_apart_from_the_address_is_the_one_signed_in_with(
    smtp_server: Callable[..., SmtpServer], ca_file: str
) -> None:
    server = smtp_server(mode="starttls", users={"login-7": "pw-7"})
    inbox = request(
        smtp_port=server.port, smtp_security="starttls", smtp_username="login-7", smtp_password="pw-7"
    )
    result = await check_smtp(inbox, options(ca_file))
    assert result.status == "ok", result.detail


async def test_a_google_inbox_behind_other_hosts_is_read_with_google_s_rows(
    fake_server: FakeFactory, pki: PKI, ca_file: str
) -> None:
    # Gmail's 534 5.7.9 means an app password is needed; from a host no table knows, only the
    # inbox type says the servers are Google's (a relay, a pinned test server).
    script = SmtpScript(auth_reply="534 5.7.9 https://support.google.com/mail/?p=InvalidSecondFactor")
    server = fake_server(script, ssl_context=pki.valid.ssl_context)
    inbox = request(inbox_type="GOOGLE_WORKSPACE", smtp_port=server.port, smtp_security="ssl")
    result = await check_smtp(inbox, options(ca_file))
    assert (result.reason, result.failed_step) == (Reason.APP_PASSWORD_REQUIRED, "auth")
