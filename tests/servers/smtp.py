"""A real SMTP server (aiosmtpd) on 127.0.0.1 with scripted authentication.

aiosmtpd's Controller runs the server's own event loop in a thread, so the
server works the same from sync and async tests.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import ssl
import threading
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import (
    MISSING,
    SMTP,
    AuthResult,
    Envelope,
    LoginPassword,
    Session,
    TLSSetupException,
    auth_mechanism,
    syntax,
)

from tests.servers.certs import ServerCert
from tests.servers.lifecycle import StartStop
from tests.servers.ports import LOOPBACK

SmtpMode = Literal["starttls", "ssl", "plain"]
BUILTIN_MECHANISMS = ("PLAIN", "LOGIN")  # aiosmtpd's own
SUPPORTED_MECHANISMS = (*BUILTIN_MECHANISMS, "CRAM-MD5")  # CRAM-MD5: ours, only on request
DEFAULT_FAILURE_REPLY = "535 5.7.8 Authentication credentials invalid"  # aiosmtpd's default
SERVER_NAME = "smtp.inboxcheck.test"


class _DropExpectedNoise(logging.Filter):
    """Hide what aiosmtpd logs for situations tests create on purpose.

    A client rejecting our certificate mid-STARTTLS is logged as an error with
    a traceback, and every successful AUTH warns about a deprecated attribute
    aiosmtpd sets itself. Anything else still gets through.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, (TLSSetupException, ssl.SSLError, ConnectionError)):
            return False
        return "login_data is deprecated" not in record.getMessage()


logging.getLogger("mail.log").addFilter(_DropExpectedNoise())


class SmtpServer(StartStop):
    """aiosmtpd on 127.0.0.1:<free port> in mode "starttls", "ssl" or "plain".

    AUTH PLAIN and LOGIN are offered (restrict with ``auth_mechanisms``;
    "CRAM-MD5" only if listed). ``users`` is checked at every AUTH and may be
    changed while running. A failed AUTH is answered with
    ``auth_failure_reply`` verbatim (may be multi-line, "534-...\\r\\n534 ...").
    ``auth_attempts`` counts every AUTH command received, rejected ones included.
    """

    host: str = LOOPBACK

    def __init__(
        self,
        *,
        mode: SmtpMode = "starttls",
        users: Mapping[str, str] | None = None,
        cert: ServerCert | None = None,
        auth_mechanisms: Iterable[str] = BUILTIN_MECHANISMS,
        auth_failure_reply: str = DEFAULT_FAILURE_REPLY,
        hostname: str = SERVER_NAME,
    ) -> None:
        if mode not in ("starttls", "ssl", "plain"):
            raise ValueError(f"unknown SMTP mode {mode!r}")
        if mode != "plain" and cert is None:
            raise ValueError(f"mode {mode!r} needs a server cert")
        mechanisms = tuple(m.upper() for m in auth_mechanisms)
        unknown = set(mechanisms) - set(SUPPORTED_MECHANISMS)
        if unknown:
            raise ValueError(f"unsupported AUTH mechanisms {sorted(unknown)}")
        self.mode: SmtpMode = mode
        self.users: dict[str, str] = dict(users or {})
        self.cert = cert
        self.auth_mechanisms = mechanisms
        self.auth_failure_reply = auth_failure_reply
        self.hostname = hostname
        self.port: int = 0
        self.auth_attempts: int = 0
        self.logins: list[tuple[str, str]] = []  # (mechanism, login) per checked credential
        self.messages: list[Envelope] = []
        self._lock = threading.Lock()  # counters are bumped in the server thread
        self._controller: _Controller | None = None

    def start(self) -> SmtpServer:
        """Start serving; returns self once the server has answered a probe."""
        if self._controller is not None:
            raise RuntimeError("SMTP server already running")
        tls = self.cert.ssl_context if self.cert is not None else None
        controller = _Controller(
            owner=self,
            handler=_Handler(self),
            ssl_context=tls if self.mode == "ssl" else None,
            server_hostname=self.hostname,
            tls_context=tls if self.mode == "starttls" else None,
            require_starttls=self.mode == "starttls",
            # Implicit TLS is invisible to aiosmtpd's "has TLS" check, so with
            # the default it would refuse AUTH on an encrypted connection.
            auth_require_tls=self.mode == "starttls",
            auth_exclude_mechanism=[m for m in SUPPORTED_MECHANISMS if m not in self.auth_mechanisms],
            authenticator=self._authenticate,
        )
        controller.start()
        self._controller = controller
        return self

    def stop(self) -> None:
        """Stop the server thread (open client connections are dropped)."""
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    # -- called from the server thread -------------------------------------------

    def _count_auth(self) -> None:
        with self._lock:
            self.auth_attempts += 1

    def _verdict(self, mechanism: str, login: str, password_ok: bool) -> AuthResult:
        """Record a login attempt and turn the verdict into aiosmtpd's reply."""
        with self._lock:
            self.logins.append((mechanism, login))
        if password_ok:
            return AuthResult(success=True, auth_data=login)
        # handled=False + message: aiosmtpd pushes exactly this line as the reply.
        return AuthResult(success=False, handled=False, message=self.auth_failure_reply)

    def _authenticate(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        login = auth_data.login.decode("utf-8", "replace")
        password = auth_data.password.decode("utf-8", "replace")
        expected = self.users.get(login)
        ok = expected is not None and hmac.compare_digest(expected.encode(), password.encode())
        return self._verdict(mechanism, login, ok)


class _CountingSMTP(SMTP):
    """aiosmtpd's SMTP, counting AUTH commands before any check can reject them."""

    def __init__(self, *args: Any, owner: SmtpServer, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._owner = owner

    @syntax("AUTH <mechanism>")
    async def smtp_AUTH(self, arg: str) -> None:
        self._owner._count_auth()
        await super().smtp_AUTH(arg)


class _Controller(Controller):
    def __init__(self, *, owner: SmtpServer, handler: Any, **kwargs: Any) -> None:
        super().__init__(handler, hostname=LOOPBACK, port=0, **kwargs)
        self._owner = owner

    def factory(self) -> SMTP:
        return _CountingSMTP(self.handler, owner=self._owner, **self.SMTP_kwargs)

    def _create_server(self) -> Any:
        # Port 0 needs the real port read back before Controller.start() probes it.
        return self._bind_free_port()

    async def _bind_free_port(self) -> Any:
        server = await self.loop.create_server(
            self._factory_invoker, host=self.hostname, port=0, ssl=self.ssl_context
        )
        self.port = int(server.sockets[0].getsockname()[1])
        self._owner.port = self.port
        return server


class _Handler:
    """Accepts any mail; implements CRAM-MD5 (offered only when asked for)."""

    def __init__(self, owner: SmtpServer) -> None:
        self._owner = owner

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self._owner.messages.append(envelope)
        return "250 2.0.0 OK queued"

    @auth_mechanism("CRAM-MD5")
    async def auth_CRAM_MD5(self, server: SMTP, args: list[str]) -> AuthResult:
        challenge = f"<{secrets.token_hex(8)}@{self._owner.hostname}>".encode()
        response = await server.challenge_auth(challenge)
        if response is MISSING:
            return AuthResult(success=False, handled=True)  # 501 already sent
        assert isinstance(response, bytes)
        login, _, digest = response.decode("utf-8", "replace").rpartition(" ")
        password = self._owner.users.get(login)
        ok = password is not None and hmac.compare_digest(
            hmac.new(password.encode(), challenge, hashlib.md5).hexdigest(), digest
        )
        return self._owner._verdict("CRAM-MD5", login, ok)
