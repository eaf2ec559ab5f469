"""The test servers themselves work, checked with stdlib clients and the app's client libraries."""

from __future__ import annotations

import base64
import http.client
import imaplib
import json
import os
import smtplib
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aioimaplib
import aiosmtplib
import pytest
import redis
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.servers import oauth
from tests.servers.certs import PKI
from tests.servers.dovecot import Account, Dovecot
from tests.servers.fakes import FakeServer, close_on_accept, imap_script, silent, smtp_script
from tests.servers.oauth import HANG, OAuthAccount, TokenEndpoint, make_jwt
from tests.servers.ports import LOOPBACK, listening_ports
from tests.servers.redis import RedisServer
from tests.servers.smtp import (
    AUTH_LINE_TOO_LONG,
    GMAIL_OAUTH_FAILURE,
    MICROSOFT_OAUTH_FAILURE,
    OAuthAttempt,
    SmtpServer,
)
from tests.servers.wait import wait_until

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


# -- OAuth2: token endpoint stand-in ---------------------------------------------------------


def _post(url: str, form: dict[str, str], headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    """POST a form with urllib: (status, body parsed as JSON if it is JSON else bytes, headers)."""
    request = urllib.request.Request(url, data=urllib.parse.urlencode(form).encode(), headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            status, body, response_headers = response.status, response.read(), response.headers
    except urllib.error.HTTPError as error:
        status, body, response_headers = error.code, error.read(), error.headers
    try:
        return status, json.loads(body), response_headers
    except ValueError:
        return status, body, response_headers


def _refresh(endpoint: TokenEndpoint, client_id: str, secret: str | None, token: str, **extra: str) -> Any:
    form = {"grant_type": "refresh_token", "client_id": client_id, "refresh_token": token, **extra}
    if secret is not None:
        form["client_secret"] = secret
    return _post(endpoint.token_url, form)[:2]


def test_token_endpoint_refresh_rotates_and_introspects(token_endpoint: Callable[..., TokenEndpoint]) -> None:
    endpoint = token_endpoint()
    endpoint.add_client("app", "s3cret")
    endpoint.add_client("public-app")  # no secret: a public client
    first = endpoint.issue_refresh_token("owner@x.test", "app")
    public = endpoint.issue_refresh_token("other@x.test", "public-app")

    status, answer = _refresh(endpoint, "app", "s3cret", first, scope=oauth.GOOGLE_SCOPE)
    assert status == 200
    assert set(answer) == {"access_token", "token_type", "expires_in", "scope", "refresh_token"}
    assert (answer["token_type"], answer["expires_in"], answer["scope"]) == (
        "Bearer",
        3599,
        oauth.GOOGLE_SCOPE,
    )
    assert len(answer["access_token"]) == oauth.DEFAULT_TOKEN_SIZE
    assert answer["refresh_token"] != first
    # Rotation: the old refresh token is dead, the new one works once.
    assert _refresh(endpoint, "app", "s3cret", first) == (400, oauth.GOOGLE_INVALID_GRANT.json)
    assert _refresh(endpoint, "app", "s3cret", answer["refresh_token"])[0] == 200
    assert _refresh(endpoint, "public-app", None, public)[0] == 200
    assert _refresh(endpoint, "app", "wrong", answer["refresh_token"]) == (
        401,
        oauth.GOOGLE_BAD_CLIENT_SECRET.json,
    )
    assert _refresh(endpoint, "nobody", "x", public) == (401, oauth.GOOGLE_CLIENT_NOT_FOUND.json)

    token = answer["access_token"]
    assert _post(endpoint.introspection_url, {"token": token})[:2] == (
        200,
        {
            "active": True,
            "username": "owner@x.test",
            "scope": oauth.GOOGLE_SCOPE,
            "token_type": "Bearer",
            "client_id": "app",
            "exp": pytest.approx(time.time() + 3599, abs=5),
        },
    )
    endpoint.revoke(token)
    assert _post(endpoint.introspection_url, {"token": token})[:2] == (200, {"active": False})
    assert _post(endpoint.introspection_url, {"token": "made-up"})[:2] == (200, {"active": False})

    fetches = endpoint.token_requests
    assert [r.grant_type for r in fetches] == ["refresh_token"] * 6
    assert fetches[0].form["client_secret"] == "s3cret"  # the server side keeps secrets
    assert [r.status for r in fetches] == [200, 400, 200, 200, 401, 401]
    assert len(endpoint.introspection_requests) == 3


def test_token_endpoint_microsoft_style(token_endpoint: Callable[..., TokenEndpoint]) -> None:
    endpoint = token_endpoint(style="microsoft", token_size=3000)
    endpoint.add_client("app-id", "s3cret:/+")
    refresh = endpoint.issue_refresh_token("owner@x.test", "app-id")
    url = f"{endpoint.base_url}/tenant-id/oauth2/v2.0/token"

    # A refresh without scope fails as on Microsoft (AADSTS900144).
    status, body, _ = _post(
        url,
        {
            "grant_type": "refresh_token",
            "client_id": "app-id",
            "client_secret": "s3cret:/+",
            "refresh_token": refresh,
        },
    )
    assert (status, body["error"], body["error_codes"]) == (400, "invalid_request", [900144])
    # client_secret_basic (authlib's default): each part form-urlencoded, then base64.
    basic = base64.b64encode(b"app-id:" + urllib.parse.quote_plus("s3cret:/+").encode()).decode()
    form = {"grant_type": "refresh_token", "refresh_token": refresh, "scope": oauth.MICROSOFT_SCOPE}
    status, body, _ = _post(url, form, {"Authorization": f"Basic {basic}"})
    assert status == 200 and len(body["access_token"]) == 3000
    assert endpoint.token_requests[-1].client_id == "app-id"
    assert endpoint.token_requests[-1].path == "/tenant-id/oauth2/v2.0/token"

    endpoint.expire(body["refresh_token"])
    status, body, _ = _post(
        url, {**form, "refresh_token": body["refresh_token"]}, {"Authorization": f"Basic {basic}"}
    )
    assert (status, body) == (400, oauth.MS_REFRESH_TOKEN_EXPIRED.json)
    assert body["error_codes"] == [700082] and body["error_description"].startswith("AADSTS700082: ")
    status, body, _ = _post(url, {**form, "client_id": "app-id", "client_secret": "wrong"})
    assert (status, body["error"], body["error_codes"]) == (401, "invalid_client", [7000215])
    status, body, _ = _post(url, {**form, "client_id": "unknown", "client_secret": "x"})
    assert (status, body["error"], body["error_codes"]) == (400, "unauthorized_client", [700016])


def test_token_endpoint_client_credentials(token_endpoint: Callable[..., TokenEndpoint]) -> None:
    endpoint = token_endpoint(style="microsoft")
    endpoint.add_client("daemon", "s3cret", app_mailbox="shared@x.test")
    endpoint.add_client("no-permission", "s3cret")  # consented, but no mailbox permission
    form = {"grant_type": "client_credentials", "client_secret": "s3cret", "scope": oauth.MICROSOFT_APP_SCOPE}

    status, body, _ = _post(endpoint.token_url, {**form, "client_id": "daemon"})
    assert status == 200 and "refresh_token" not in body and body["scope"] == oauth.MICROSOFT_APP_SCOPE
    assert endpoint.mailbox_for(body["access_token"]) == "shared@x.test"
    # A token is issued, yet it opens no mailbox: introspection says inactive.
    status, body, _ = _post(endpoint.token_url, {**form, "client_id": "no-permission"})
    assert status == 200
    assert endpoint.introspect(body["access_token"]) == {"active": False}


def test_token_endpoint_jwt_bearer(token_endpoint: Callable[..., TokenEndpoint]) -> None:
    endpoint = token_endpoint()
    endpoint.add_mailbox("user@x.test")
    now = int(time.time())
    claims = {
        "iss": "sa@project.iam.gserviceaccount.com",
        "sub": "user@x.test",
        "scope": oauth.GOOGLE_SCOPE,
        "aud": endpoint.token_url,
        "iat": now,
        "exp": now + 3600,
    }

    def grant(assertion: str) -> tuple[int, Any]:
        return _post(endpoint.token_url, {"grant_type": oauth.JWT_BEARER, "assertion": assertion})[:2]

    # No key registered for the issuer: any decodable JWT naming a known mailbox will do.
    status, body = grant(make_jwt(claims))
    assert status == 200 and endpoint.mailbox_for(body["access_token"]) == "user@x.test"
    assert grant(make_jwt({**claims, "sub": "stranger@x.test"})) == (
        400,
        {"error": "invalid_grant", "error_description": "Invalid email or User ID"},
    )
    assert grant(make_jwt({**claims, "exp": now + 7200}))[1]["error_description"].startswith("Invalid JWT: ")
    assert grant("not-a-jwt")[1]["error"] == "invalid_grant"

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    endpoint.add_jwt_key(claims["iss"], key.public_key())
    assert grant(make_jwt(claims, key))[0] == 200
    assert grant(make_jwt(claims)) == (
        400,
        {"error": "invalid_grant", "error_description": "Invalid JWT Signature."},
    )


@pytest.mark.parametrize(
    ("reply", "status", "error"),
    [
        (oauth.GOOGLE_INVALID_GRANT, 400, "invalid_grant"),
        (oauth.MS_REFRESH_TOKEN_EXPIRED, 400, "invalid_grant"),
        (oauth.MS_REFRESH_TOKEN_REVOKED, 400, "invalid_grant"),
        (oauth.MS_CONSENT_MISSING, 400, "invalid_grant"),
        (oauth.MS_MFA_REQUIRED, 400, "invalid_grant"),
        (oauth.MS_CONDITIONAL_ACCESS, 400, "invalid_grant"),
        (oauth.CONSENT_REQUIRED, 400, "consent_required"),
        (oauth.INTERACTION_REQUIRED, 400, "interaction_required"),
        (oauth.MS_BAD_CLIENT_SECRET, 401, "invalid_client"),
        (oauth.MS_CLIENT_SECRET_EXPIRED, 401, "invalid_client"),
        (oauth.GOOGLE_CLIENT_NOT_FOUND, 401, "invalid_client"),
        (oauth.GOOGLE_UNAUTHORIZED_CLIENT, 401, "unauthorized_client"),
        (oauth.MS_UNKNOWN_CLIENT, 400, "unauthorized_client"),
        (oauth.MS_INVALID_SCOPE, 400, "invalid_scope"),
        (oauth.GOOGLE_INVALID_SCOPE, 400, "invalid_scope"),
        (oauth.TEMPORARILY_UNAVAILABLE, 503, "temporarily_unavailable"),
        (oauth.HTTP_500, 500, None),
        (oauth.HTTP_503, 503, None),
        (oauth.NOT_JSON, 200, None),
        (oauth.rate_limited(17), 429, "temporarily_unavailable"),
    ],
)
def test_token_endpoint_failures_on_demand(
    token_endpoint: Callable[..., TokenEndpoint], reply: oauth.Reply, status: int, error: str | None
) -> None:
    endpoint = token_endpoint()
    endpoint.add_client("app", "s3cret")
    refresh = endpoint.issue_refresh_token("owner@x.test", "app")
    endpoint.fail_with(reply, times=1)
    form = {
        "grant_type": "refresh_token",
        "client_id": "app",
        "client_secret": "s3cret",
        "refresh_token": refresh,
    }
    got_status, body, headers = _post(endpoint.token_url, form)
    assert got_status == status
    if error is None:
        assert isinstance(body, bytes) and body.startswith(b"<!DOCTYPE html>")  # not JSON
    else:
        assert body["error"] == error
    if status == 429:
        assert headers["Retry-After"] == "17"
    assert _post(endpoint.token_url, form)[0] == 200  # times=1: then back to normal
    assert len(endpoint.token_requests) == 2


def test_token_endpoint_hangs_until_stopped(token_endpoint: Callable[..., TokenEndpoint]) -> None:
    endpoint = token_endpoint()
    endpoint.fail_with(HANG)
    connection = http.client.HTTPConnection(endpoint.host, endpoint.port, timeout=5)
    connection.request(
        "POST",
        "/token",
        body="grant_type=refresh_token",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    wait_until(lambda: len(endpoint.token_requests) == 1, timeout=5, what="the request to arrive")
    assert endpoint.token_requests[0].status is None  # unanswered
    connection.sock.settimeout(0.2)
    with pytest.raises(TimeoutError):
        connection.getresponse()
    started = time.monotonic()
    endpoint.stop()  # must not wait for the hung request
    assert time.monotonic() - started < 2
    connection.sock.settimeout(5)
    assert connection.sock.recv(100) == b""
    connection.close()


# -- OAuth2: Dovecot ---------------------------------------------------------------------------------


def _xoauth2(user: str, token: str) -> bytes:
    return f"user={user}\x01auth=Bearer {token}\x01\x01".encode()


def _oauthbearer(user: str, token: str, port: int) -> bytes:
    return f"n,a={user},\x01host=127.0.0.1\x01port={port}\x01auth=Bearer {token}\x01\x01".encode()


class _SaslClient:
    """An imaplib authobject: sends ``response`` to the first (empty) ``+``, ``answer`` to a later one."""

    def __init__(self, response: bytes, answer: bytes) -> None:
        self.response, self.answer = response, answer
        self.challenges: list[bytes] = []

    def __call__(self, challenge: bytes) -> bytes:
        self.challenges.append(challenge)
        return self.response if len(self.challenges) == 1 and not challenge else self.answer


def _imaps(dovecot: Dovecot, ca_file: str) -> imaplib.IMAP4_SSL:
    return imaplib.IMAP4_SSL(
        dovecot.host, dovecot.imaps_port, ssl_context=_client_context(ca_file), timeout=5
    )


def test_dovecot_xoauth2_good_token(
    oauth_dovecot: Dovecot, oauth_provider: TokenEndpoint, oauth_user: OAuthAccount, ca_file: str
) -> None:
    token = oauth_provider.issue_access_token(oauth_user.email)
    with _imaps(oauth_dovecot, ca_file) as client:
        assert {"AUTH=XOAUTH2", "AUTH=OAUTHBEARER", "AUTH=PLAIN", "SASL-IR"} <= set(client.capabilities)
        assert client.authenticate("XOAUTH2", _SaslClient(_xoauth2(oauth_user.email, token), b""))[0] == "OK"
        assert client.select("INBOX") == ("OK", [b"0"])
    assert oauth_provider.introspection_requests[-1].form["token"] == token
    # The password passdb still serves LOGIN.
    with _imaps(oauth_dovecot, ca_file) as client:
        assert client.login(oauth_user.email, oauth_user.password)[0] == "OK"


@pytest.mark.parametrize(
    ("mechanism", "answer", "error"),
    [
        ("XOAUTH2", b"", {"status": "401", "schemes": "bearer", "scope": "mail"}),
        ("OAUTHBEARER", b"\x01", {"status": "invalid_token"}),  # RFC 7628's status word
    ],
)
@pytest.mark.parametrize("why", ["revoked", "other mailbox", "password"])
def test_dovecot_oauth_bad_token(
    oauth_dovecot: Dovecot,
    oauth_provider: TokenEndpoint,
    oauth_user: OAuthAccount,
    ca_file: str,
    mechanism: str,
    answer: bytes,
    error: dict[str, str],
    why: str,
) -> None:
    if why == "password":
        token = oauth_user.password
    else:
        token = oauth_provider.issue_access_token(oauth_user.email if why == "revoked" else "someone@x.test")
        if why == "revoked":
            oauth_provider.revoke(token)
    if mechanism == "XOAUTH2":
        response = _xoauth2(oauth_user.email, token)
    else:
        response = _oauthbearer(oauth_user.email, token, oauth_dovecot.imaps_port)
    sasl = _SaslClient(response, answer)  # imaplib base64-encodes: b"\x01" goes out as "AQ=="
    with _imaps(oauth_dovecot, ca_file) as client, pytest.raises(imaplib.IMAP4.error) as failed:
        client.authenticate(mechanism, sasl)
    assert str(failed.value) == "[AUTHENTICATIONFAILED] Authentication failed."
    assert json.loads(sasl.challenges[1]) == error
    assert len(sasl.challenges) == 2


def _sasl_ir(client: imaplib.IMAP4, mechanism: str, response: bytes, answer: bytes) -> tuple[str, Any]:
    """AUTHENTICATE with SASL-IR (imaplib has no API for it), answering a later ``+`` with ``answer``."""
    client.literal = imaplib._Authenticator(lambda challenge: answer).process
    initial = base64.b64encode(response).decode()
    typ, data = client._simple_command("AUTHENTICATE", mechanism, initial)
    if typ == "OK":
        client.state = "AUTH"
    return typ, data


def test_dovecot_xoauth2_sasl_ir_3kb_token(
    oauth_dovecot: Dovecot, oauth_provider: TokenEndpoint, oauth_user: OAuthAccount, ca_file: str
) -> None:
    token = oauth_provider.issue_access_token(oauth_user.email, size=3072)
    response = _xoauth2(oauth_user.email, token)
    assert len(base64.b64encode(response)) > 4096  # one ~4.2 KB command line
    with _imaps(oauth_dovecot, ca_file) as client:
        assert "SASL-IR" in client.capabilities
        assert _sasl_ir(client, "XOAUTH2", response, b"")[0] == "OK"
        assert client.select("INBOX")[0] == "OK"
    oauth_provider.revoke(token)
    with _imaps(oauth_dovecot, ca_file) as client:
        typ, data = _sasl_ir(client, "XOAUTH2", response, b"")  # "+ <json>", "", then NO
        assert (typ, data) == ("NO", [b"[AUTHENTICATIONFAILED] Authentication failed."])


def test_dovecot_oauth_introspection_down(
    oauth_dovecot: Dovecot, oauth_provider: TokenEndpoint, oauth_user: OAuthAccount, ca_file: str
) -> None:
    token = oauth_provider.issue_access_token(oauth_user.email)
    oauth_provider.fail_with(oauth.HTTP_503, on="introspect")
    with _imaps(oauth_dovecot, ca_file) as client, pytest.raises(imaplib.IMAP4.error) as failed:
        client.authenticate("XOAUTH2", _SaslClient(_xoauth2(oauth_user.email, token), b""))
    assert str(failed.value).startswith("[UNAVAILABLE] Temporary authentication failure.")


def test_dovecot_oauth_not_offered_before_starttls(oauth_dovecot: Dovecot, ca_file: str) -> None:
    with imaplib.IMAP4(oauth_dovecot.host, oauth_dovecot.imap_port, timeout=5) as client:
        assert "AUTH=XOAUTH2" not in client.capabilities
        client.starttls(ssl_context=_client_context(ca_file))
        assert {"AUTH=XOAUTH2", "AUTH=OAUTHBEARER"} <= set(client.capabilities)


def test_dovecot_24_config_renders_oauth2(tmp_path: Path, pki: PKI) -> None:
    """The 2.4 OAuth2 lines (not run here): a top-level oauth2 { } filter, no oauth2 passdb."""
    from tests.servers.dovecot import _render_config_24

    server = Dovecot(tmp_path, pki.valid, oauth2_introspection_url="http://127.0.0.1:1/introspect")
    config = _render_config_24(server)
    lines = [line.strip() for line in config.splitlines()]
    assert "auth_mechanisms = plain login xoauth2 oauthbearer" in lines
    block = config.split("\noauth2 {\n", 1)[1].split("}", 1)[0].split("\n")
    assert [line.strip() for line in block if line.strip()] == [
        "introspection_mode = post",
        "introspection_url = http://127.0.0.1:1/introspect",
        "username_attribute = username",
        "active_attribute = active",
        "active_value = true",
        "force_introspection = yes",
    ]
    assert "driver = oauth2" not in lines
    assert "auth_mechanisms = plain login" in _render_config_24(Dovecot(tmp_path, pki.valid)).splitlines()


# -- OAuth2: aiosmtpd ------------------------------------------------------------------------------


def _smtp_tls(server: SmtpServer, ca_file: str) -> smtplib.SMTP:
    client = smtplib.SMTP(server.host, server.port, timeout=5)
    client.starttls(context=_client_context(ca_file))
    client.ehlo()
    return client


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_smtp_xoauth2_continuation_line_gmail_style(
    smtp_server: Callable[..., SmtpServer], token_endpoint: Callable[..., TokenEndpoint], ca_file: str
) -> None:
    endpoint = token_endpoint(token_size=3072)
    good = endpoint.issue_access_token("user@x.test")
    srv = smtp_server(auth_mechanisms=["PLAIN", "XOAUTH2", "OAUTHBEARER"], oauth=endpoint)
    with _smtp_tls(srv, ca_file) as client:
        assert client.esmtp_features["auth"].split() == ["OAUTHBEARER", "PLAIN", "XOAUTH2"]
        assert client.docmd("AUTH", "XOAUTH2") == (334, b"")
        response = _b64(_xoauth2("user@x.test", good))
        assert len(response) > 4096
        assert client.docmd(response) == (235, b"2.7.0 Authentication successful")

    endpoint.revoke(good)
    with _smtp_tls(srv, ca_file) as client:
        assert client.docmd("AUTH", "XOAUTH2") == (334, b"")
        code, challenge = client.docmd(_b64(_xoauth2("user@x.test", good)))
        assert code == 334
        assert (
            base64.b64decode(challenge)
            == b'{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}'
        )
        code, message = client.docmd("")  # XOAUTH2's answer to the error challenge: an empty line
        assert code == 535  # smtplib joins the two lines of the 535 reply, codes dropped
        assert message == b"\n".join(line[4:].encode() for line in GMAIL_OAUTH_FAILURE.split("\r\n"))
    assert srv.oauth_attempts == [
        OAuthAttempt("XOAUTH2", "continuation", "user@x.test", "accepted"),
        OAuthAttempt("XOAUTH2", "continuation", "user@x.test", "rejected", b""),
    ]


def test_smtp_xoauth2_inline_and_line_limit(smtp_server: Callable[..., SmtpServer], ca_file: str) -> None:
    short, long = "short-token", "L" * 2048
    srv = smtp_server(auth_mechanisms=["XOAUTH2"], oauth={short: "user@x.test", long: "user@x.test"})
    with _smtp_tls(srv, ca_file) as client:
        too_long = _b64(_xoauth2("user@x.test", long))
        assert client.docmd("AUTH", f"XOAUTH2 {too_long}") == (500, AUTH_LINE_TOO_LONG[4:].encode())
        assert client.docmd("AUTH", f"XOAUTH2 {_b64(_xoauth2('user@x.test', short))}")[0] == 235
    # smtplib's own auth() sends the response inline too.
    with _smtp_tls(srv, ca_file) as client:
        assert (
            client.auth("XOAUTH2", lambda challenge=None: _xoauth2("user@x.test", short).decode())[0] == 235
        )
    assert [(a.via, a.user, a.outcome) for a in srv.oauth_attempts] == [
        ("inline", "user@x.test", "too long"),
        ("inline", "user@x.test", "accepted"),
        ("inline", "user@x.test", "accepted"),
    ]


def test_smtp_oauth_microsoft_style_fails_at_once(
    smtp_server: Callable[..., SmtpServer], token_endpoint: Callable[..., TokenEndpoint], ca_file: str
) -> None:
    endpoint = token_endpoint(style="microsoft")
    token = endpoint.issue_access_token("someone-else@x.test")
    srv = smtp_server(auth_mechanisms=["XOAUTH2"], oauth=endpoint, oauth_style="microsoft")
    with _smtp_tls(srv, ca_file) as client:
        assert client.docmd("AUTH", "XOAUTH2") == (334, b"")
        assert client.docmd(_b64(_xoauth2("user@x.test", token))) == (
            535,
            MICROSOFT_OAUTH_FAILURE[4:].encode(),
        )
        assert client.noop()[0] == 250  # no challenge was pending
    assert srv.oauth_attempts == [OAuthAttempt("XOAUTH2", "continuation", "user@x.test", "rejected")]


def test_smtp_oauthbearer(smtp_server: Callable[..., SmtpServer], ca_file: str) -> None:
    srv = smtp_server(auth_mechanisms=["OAUTHBEARER"], oauth={"good": "user@x.test"})
    with _smtp_tls(srv, ca_file) as client:
        assert (
            client.docmd("AUTH", f"OAUTHBEARER {_b64(_oauthbearer('user@x.test', 'good', srv.port))}")[0]
            == 235
        )
    with _smtp_tls(srv, ca_file) as client:
        code, challenge = client.docmd(
            "AUTH", f"OAUTHBEARER {_b64(_oauthbearer('user@x.test', 'bad', srv.port))}"
        )
        assert code == 334 and json.loads(base64.b64decode(challenge))["status"] == "401"
        assert client.docmd("AQ==")[0] == 535
    assert srv.oauth_attempts[-1] == OAuthAttempt("OAUTHBEARER", "inline", "user@x.test", "rejected", b"\x01")
    assert srv.logins == [("OAUTHBEARER", "user@x.test"), ("OAUTHBEARER", "user@x.test")]


def test_listening_ports_lists_this_process_listening_sockets_only() -> None:
    with socket.socket() as listener, socket.socket() as bound:
        listener.bind((LOOPBACK, 0))
        listener.listen()
        bound.bind((LOOPBACK, 0))  # bound, never listening: serves nothing
        port = listener.getsockname()[1]
        ports = listening_ports(os.getpid())
        assert port in ports and bound.getsockname()[1] not in ports
    assert port not in listening_ports(os.getpid())
