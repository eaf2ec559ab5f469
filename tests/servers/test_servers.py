"""The test servers themselves work, checked with stdlib clients and the app's client libraries."""

from __future__ import annotations

import imaplib
import smtplib
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import aioimaplib
import aiosmtplib
import pytest
import redis

from tests.servers.certs import PKI
from tests.servers.dovecot import Account, Dovecot
from tests.servers.fakes import FakeServer, close_on_accept, imap_script, silent, smtp_script
from tests.servers.redis import RedisServer
from tests.servers.smtp import SmtpServer

O365_DISABLED = "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant"
GMAIL_APP_PASSWORD = (
    "534-5.7.9 Application-specific password required. Learn more at\r\n"
    "534 5.7.9 https://support.google.com/mail/?p=InvalidSecondFactor"
)


def _client_context(ca_file: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file)


# -- aiosmtpd ---------------------------------------------------------------------


def test_smtp_starttls_login_and_scripted_failure(
    smtp_server: Callable[..., SmtpServer], ca_file: str
) -> None:
    srv = smtp_server(mode="starttls", users={"user@x.test": "pw"}, auth_failure_reply=O365_DISABLED)
    assert srv.host == "127.0.0.1" and srv.port > 0
    with smtplib.SMTP(srv.host, srv.port, timeout=5) as client:
        client.ehlo()
        assert not client.has_extn("auth")  # AUTH only after TLS
        client.starttls(context=_client_context(ca_file))
        client.ehlo()
        assert client.esmtp_features["auth"].split() == ["LOGIN", "PLAIN"]
        with pytest.raises(smtplib.SMTPAuthenticationError) as failed:
            client.login("user@x.test", "wrong")
        assert failed.value.smtp_code == 535
        assert failed.value.smtp_error == O365_DISABLED[4:].encode()

        srv.users["user@x.test"] = "changed"
        attempts = srv.auth_attempts
        assert client.login("user@x.test", "changed")[0] == 235
        assert srv.auth_attempts == attempts + 1


def test_smtp_implicit_tls_offers_only_requested_mechanism(
    smtp_server: Callable[..., SmtpServer], ca_file: str
) -> None:
    srv = smtp_server(
        mode="ssl",
        users={"user@x.test": "pw"},
        auth_mechanisms=["LOGIN"],
        auth_failure_reply=GMAIL_APP_PASSWORD,
    )
    with smtplib.SMTP_SSL(srv.host, srv.port, context=_client_context(ca_file), timeout=5) as c:
        c.ehlo()
        assert c.esmtp_features["auth"].split() == ["LOGIN"]
        with pytest.raises(smtplib.SMTPAuthenticationError) as failed:
            c.login("user@x.test", "wrong")
    assert failed.value.smtp_code == 534
    assert b"Application-specific password required" in failed.value.smtp_error
    assert srv.auth_attempts == 1
    assert srv.logins == [("LOGIN", "user@x.test")]


async def test_smtp_with_aiosmtplib(smtp_server: Callable[..., SmtpServer], ca_file: str) -> None:
    srv = smtp_server(mode="starttls", users={"user@x.test": "pw"})
    client = aiosmtplib.SMTP(hostname=srv.host, port=srv.port, start_tls=True, cert_bundle=ca_file, timeout=5)
    async with client:
        response = await client.login("user@x.test", "pw")
    assert response.code == 235
    assert srv.auth_attempts == 1


# -- Dovecot ----------------------------------------------------------------------


def test_imaps_login_and_examine(dovecot: Dovecot, imap_user: Account, ca_file: str) -> None:
    email, password = imap_user
    with imaplib.IMAP4_SSL(
        dovecot.host, dovecot.imaps_port, ssl_context=_client_context(ca_file), timeout=5
    ) as client:
        assert client.login(email, password)[0] == "OK"
        status, data = client.select("INBOX", readonly=True)
        assert (status, data) == ("OK", [b"0"])


def test_imap_port_needs_starttls_before_login(dovecot: Dovecot, imap_user: Account, ca_file: str) -> None:
    email, password = imap_user
    with imaplib.IMAP4(dovecot.host, dovecot.imap_port, timeout=5) as client:
        assert {"STARTTLS", "LOGINDISABLED"} <= set(client.capabilities)
        with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
            client.login(email, password)
        client.starttls(ssl_context=_client_context(ca_file))
        assert "LOGINDISABLED" not in client.capabilities
        assert client.login(email, password)[0] == "OK"


def test_changed_password_takes_effect_for_next_login(
    dovecot: Dovecot, imap_user: Account, ca_file: str
) -> None:
    email, old_password = imap_user

    def login(password: str) -> str:
        with imaplib.IMAP4_SSL(
            dovecot.host, dovecot.imaps_port, ssl_context=_client_context(ca_file), timeout=5
        ) as client:
            try:
                return client.login(email, password)[0]
            except imaplib.IMAP4.error as exc:
                return str(exc)

    assert login(old_password) == "OK"
    dovecot.set_user(email, 'n3w:pass"word')
    assert "[AUTHENTICATIONFAILED]" in login(old_password)
    assert login('n3w:pass"word') == "OK"


async def test_imaps_with_aioimaplib(dovecot: Dovecot, imap_user: Account, pki: PKI) -> None:
    client = aioimaplib.IMAP4_SSL(
        dovecot.host, dovecot.imaps_port, ssl_context=pki.client_context(), timeout=5
    )
    await client.wait_hello_from_server()
    assert (await client.login(*imap_user)).result == "OK"
    assert (await client.examine("INBOX")).result == "OK"
    await client.logout()


@pytest.mark.parametrize(
    ("cert", "reason"),
    [
        ("wrong_host", "Hostname mismatch"),
        ("expired", "certificate has expired"),
        ("untrusted", "unable to get local issuer certificate"),
    ],
)
def test_dovecot_with_bad_certificates(
    dovecot_factory: Callable[..., Dovecot], ca_file: str, cert: str, reason: str
) -> None:
    server = dovecot_factory(cert)
    with pytest.raises(ssl.SSLCertVerificationError, match=reason):
        imaplib.IMAP4_SSL("localhost", server.imaps_port, ssl_context=_client_context(ca_file), timeout=5)


# -- fakes ------------------------------------------------------------------------


def test_fake_smtp_script_multiline_auth_reply(fake_server: Callable[..., FakeServer]) -> None:
    # One mechanism only: smtplib retries a failed login with every mechanism offered.
    script = smtp_script(ehlo_extensions=["AUTH PLAIN"], auth_reply=GMAIL_APP_PASSWORD)
    srv = fake_server(script)
    with (
        smtplib.SMTP(srv.host, srv.port, timeout=5) as client,
        pytest.raises(smtplib.SMTPAuthenticationError) as failed,
    ):
        client.login("user@x.test", "pw")
    assert failed.value.smtp_code == 534
    assert script.auth_attempts == 1
    assert script.logins[0][1:] == ("user@x.test", "pw")
    assert srv.connections == 1


def test_fake_smtp_unavailable_greeting(fake_server: Callable[..., FakeServer]) -> None:
    srv = fake_server(smtp_script(greeting="421 4.3.2 Service not available"))
    with pytest.raises(smtplib.SMTPConnectError) as failed:
        smtplib.SMTP(srv.host, srv.port, timeout=5)
    assert failed.value.smtp_code == 421


def test_fake_imap_script_over_starttls(fake_server: Callable[..., FakeServer], pki: PKI) -> None:
    script = imap_script(
        capabilities="IMAP4rev1 LOGINDISABLED",
        starttls_context=pki.valid.ssl_context,
        untagged_before_login_reply=["* NO [WEBALERT https://x.test/] Web login required"],
        login_reply="NO [ALERT] Please log in via your web browser",
    )
    srv = fake_server(script)
    with imaplib.IMAP4(srv.host, srv.port, timeout=5) as client:
        assert {"LOGINDISABLED", "STARTTLS"} <= set(client.capabilities)
        with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
            client.login("user@x.test", "pw")
        client.starttls(ssl_context=pki.client_context())
        with pytest.raises(imaplib.IMAP4.error, match="web browser"):
            client.login("user@x.test", 'p"w')
        assert client.untagged_responses["NO"] == [b"[WEBALERT https://x.test/] Web login required"]
    assert script.logins[-1] == ("user@x.test", 'p"w')


def test_fake_silent_and_close_on_accept(fake_server: Callable[..., FakeServer]) -> None:
    closing = fake_server(close_on_accept)
    with socket.create_connection((closing.host, closing.port), timeout=5) as sock:
        assert sock.recv(100) == b""  # EOF before any greeting

    mute = fake_server(silent)
    with socket.create_connection((mute.host, mute.port), timeout=5) as sock:
        sock.settimeout(0.2)
        with pytest.raises(TimeoutError):
            sock.recv(100)
        sock.settimeout(5)
        mute.stop()  # must drop the open connection, not wait for it
        assert sock.recv(100) == b""


# -- Redis ------------------------------------------------------------------------


def test_redis_restarts_on_the_same_port(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url, socket_timeout=2, socket_connect_timeout=2)
    port = redis_server.port
    assert redis_server.url == f"redis://127.0.0.1:{port}/0"
    client.set("k", "v")
    redis_server.stop()
    with pytest.raises(redis.ConnectionError):
        client.ping()
    redis_server.start()
    assert redis_server.port == port
    assert client.ping()
    assert client.get("k") is None  # no persistence between runs
    client.close()


def test_dovecot_24_config_renders_essential_lines(tmp_path: Path, pki: PKI) -> None:
    """The Dovecot 2.4 config (not run here: Debian 12 has 2.3) has its essentials."""
    from tests.servers.dovecot import _render_config_24

    server = Dovecot(tmp_path, pki.valid)
    server.imaps_port, server._haproxy_port = 10993, 10143
    config = _render_config_24(server)
    lines = [line.strip() for line in config.splitlines()]
    assert lines[0] == "dovecot_config_version = 2.4.0"  # must be the first setting
    assert "dovecot_storage_version = 2.4.0" in lines
    assert f"ssl_server_cert_file = {pki.valid.cert_file}" in lines
    assert f"ssl_server_key_file = {pki.valid.key_file}" in lines
    assert "haproxy_trusted_networks = 127.0.0.1/32" in lines
    assert "auth_allow_cleartext = no" in lines
    imap = config.split("inet_listener imap {", 1)[1].split("}", 1)[0].split()
    imaps = config.split("inet_listener imaps {", 1)[1].split("}", 1)[0].split()
    assert " ".join(imap) == "port = 10143 haproxy = yes"
    assert " ".join(imaps) == "port = 10993 ssl = yes"
    assert f"passwd_file_path = {tmp_path / 'users.passwd'}" in lines
    for gone in (
        "ssl_cert",
        "disable_plaintext_auth",
        "mail_location",
        "service_count",
        "args",
    ):
        assert not any(line.startswith(gone + " ") for line in lines), gone
