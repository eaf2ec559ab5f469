"""Fixtures: real and fake servers on 127.0.0.1 for inboxcheck's tests.

The servers themselves live in tests/servers/; this file only scopes and
cleans them up. Every server binds an OS-assigned port on 127.0.0.1.
"""

from __future__ import annotations

import itertools
import os
import secrets
import ssl
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.servers.certs import PKI, CertName, ServerCert
from tests.servers.dns import DnsServer
from tests.servers.dns import Mode as DnsMode
from tests.servers.dovecot import Account, Dovecot, DovecotNotInstalled
from tests.servers.fakes import FakeServer, Handler
from tests.servers.oauth import OAuthAccount, TokenEndpoint
from tests.servers.redis import RedisNotInstalled, RedisServer
from tests.servers.smtp import SmtpMode, SmtpServer

_account_numbers = itertools.count(1)
_Server = TypeVar("_Server")


@pytest.fixture(autouse=True)
def _no_inboxcheck_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a test builds takes its settings from the test, never from the shell running the suite."""
    for name in list(os.environ):
        if name.startswith("INBOXCHECK_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    """Trusted CA plus server certs: valid, wrong_host, expired, untrusted."""
    return PKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def ca_file(pki: PKI) -> str:
    """Path of the CA PEM that clients under test should trust (and nothing else)."""
    return str(pki.ca_file)


@pytest.fixture
def smtp_server(pki: PKI) -> Iterator[Callable[..., SmtpServer]]:
    """Factory: ``smtp_server(mode="starttls", users={...}, cert="valid", **options)``.

    Returns a started SmtpServer; all are stopped after the test. ``cert`` is
    a cert name or a ServerCert (ignored in "plain" mode); other options go to
    SmtpServer (auth_mechanisms, auth_failure_reply, hostname; for OAuth
    ``auth_mechanisms=["XOAUTH2", "OAUTHBEARER"], oauth=<TokenEndpoint or dict>,
    oauth_style="gmail"|"microsoft"``).
    """
    started: list[SmtpServer] = []

    def start(
        *,
        mode: SmtpMode = "starttls",
        users: Mapping[str, str] | None = None,
        cert: CertName | ServerCert = "valid",
        **options: Any,
    ) -> SmtpServer:
        server = SmtpServer(
            mode=mode,
            users=users,
            cert=None if mode == "plain" else pki.cert(cert),
            **options,
        )
        started.append(server)
        return server.start()

    yield start
    for server in reversed(started):
        server.stop()


def _start_or_fail(start: Callable[[], _Server]) -> _Server:
    """Run ``start``; a missing server binary fails the test with the setup hint.

    A failure, not a skip: CI without Dovecot or Redis must not pass by testing nothing.
    """
    try:
        return start()
    except (DovecotNotInstalled, RedisNotInstalled) as exc:
        missing = str(exc)
    pytest.fail(missing, pytrace=False)


@pytest.fixture(scope="session")
def dovecot(tmp_path_factory: pytest.TempPathFactory, pki: PKI) -> Iterator[Dovecot]:
    """One Dovecot for the session, with the valid cert; add users with ``imap_user``."""
    server = _start_or_fail(Dovecot(tmp_path_factory.mktemp("dovecot"), pki.valid).start)
    yield server
    server.stop()


@pytest.fixture
def imap_user(dovecot: Dovecot) -> Iterator[Account]:
    """A fresh ``(email, password)`` account on the shared Dovecot, removed afterwards."""
    account = Account(
        f"user{next(_account_numbers)}-{secrets.token_hex(3)}@inboxcheck.test",
        secrets.token_urlsafe(12),
    )
    dovecot.set_user(*account)
    yield account
    dovecot.remove_user(account.email)


@pytest.fixture
def dovecot_factory(tmp_path_factory: pytest.TempPathFactory, pki: PKI) -> Iterator[Callable[..., Dovecot]]:
    """Factory: ``dovecot_factory(cert="expired", users={...})`` -> a started extra Dovecot."""
    started: list[Dovecot] = []

    def start(cert: CertName | ServerCert = "valid", users: Mapping[str, str] | None = None) -> Dovecot:
        server_cert = pki.cert(cert)
        server = Dovecot(tmp_path_factory.mktemp(f"dovecot-{server_cert.name}"), server_cert)
        for name, password in (users or {}).items():
            server.set_user(name, password)
        started.append(server)
        return _start_or_fail(server.start)

    yield start
    for server in reversed(started):
        server.stop()


@pytest.fixture
def token_endpoint() -> Iterator[Callable[..., TokenEndpoint]]:
    """Factory: ``token_endpoint(style="google", token_size=..., ...)`` -> a started TokenEndpoint.

    Each test gets its own (failures, tokens and recorded requests start empty); all are
    stopped after the test, hung requests included.
    """
    started: list[TokenEndpoint] = []

    def start(**options: Any) -> TokenEndpoint:
        server = TokenEndpoint(**options)
        started.append(server)
        return server.start()

    yield start
    for server in reversed(started):
        server.stop()


@pytest.fixture(scope="session")
def oauth_provider() -> Iterator[TokenEndpoint]:
    """The (Google-style) token endpoint whose introspection ``oauth_dovecot`` asks.

    Shared by the session: take mailboxes through ``oauth_user``, which clears any
    ``fail_with`` and kills the mailbox's tokens afterwards.
    """
    server = TokenEndpoint().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def oauth_dovecot(
    tmp_path_factory: pytest.TempPathFactory, pki: PKI, oauth_provider: TokenEndpoint
) -> Iterator[Dovecot]:
    """A Dovecot offering XOAUTH2 and OAUTHBEARER, checking tokens with ``oauth_provider``."""
    server = Dovecot(
        tmp_path_factory.mktemp("dovecot-oauth"),
        pki.valid,
        oauth2_introspection_url=oauth_provider.introspection_url,
    )
    yield _start_or_fail(server.start)
    server.stop()


@pytest.fixture
def oauth_user(oauth_dovecot: Dovecot, oauth_provider: TokenEndpoint) -> Iterator[OAuthAccount]:
    """A fresh mailbox on ``oauth_dovecot`` (password too) with its own OAuth client and refresh token.

    Mint access tokens with ``oauth_provider.issue_access_token(user.email)`` or fetch them
    from ``oauth_provider.token_url`` with the refresh token.
    """
    n = next(_account_numbers)
    email = f"oauth{n}-{secrets.token_hex(3)}@inboxcheck.test"
    client_id, client_secret = f"client-{n}", secrets.token_urlsafe(12)
    oauth_provider.add_client(client_id, client_secret)
    account = OAuthAccount(
        email,
        secrets.token_urlsafe(12),
        client_id,
        client_secret,
        oauth_provider.issue_refresh_token(email, client_id),
    )
    oauth_dovecot.set_user(email, account.password)
    yield account
    oauth_provider.clear_failures()
    oauth_provider.revoke_mailbox(email)
    oauth_dovecot.remove_user(email)


@pytest.fixture
def dns_server() -> Iterator[Callable[..., DnsServer]]:
    """Factory: ``dns_server(records={name: [address, ...]}, mode="answer"|"servfail"|"silent")``,
    a started DnsServer (tests.servers.dns); all are stopped after the test."""
    started: list[DnsServer] = []

    def start(records: Mapping[str, Sequence[str]] | None = None, mode: DnsMode = "answer") -> DnsServer:
        server = DnsServer(records, mode).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def fake_server() -> Iterator[Callable[..., FakeServer]]:
    """Factory: ``fake_server(handler, ssl_context=None)`` -> a started FakeServer.

    After the test all are stopped, and a handler that crashed fails the test.
    """
    started: list[FakeServer] = []

    def start(handler: Handler, *, ssl_context: ssl.SSLContext | None = None) -> FakeServer:
        server = FakeServer(handler, ssl_context=ssl_context)
        started.append(server)
        return server.start()

    yield start
    errors: list[BaseException] = []
    for server in reversed(started):
        server.stop()
        errors.extend(server.errors)
    if errors:
        pytest.fail(f"fake server handler crashed: {errors!r}", pytrace=False)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A started redis-server for this test; ``.stop()``/``.start()`` keep its port."""
    server = _start_or_fail(RedisServer(tmp_path / "redis").start)
    yield server
    server.stop()
