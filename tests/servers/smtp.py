"""A real SMTP server (aiosmtpd) on 127.0.0.1 with scripted authentication.

aiosmtpd's Controller runs the server's own event loop in a thread, so the
server works the same from sync and async tests.

OAuth2 (``auth_mechanisms`` with "XOAUTH2" and/or "OAUTHBEARER", and ``oauth``:
a TokenEndpoint from oauth.py or a dict token -> mailbox) imitates the dialogues in
/work/shared/reference/oauth2.md ("The two SASL mechanisms", "Line length"):

* The response may come inline (``AUTH XOAUTH2 <b64>``) or on its own line after
  ``334 `` (``AUTH XOAUTH2``, then the response). A token is good when it is live and
  its mailbox is the ``user=`` (XOAUTH2) or ``a=`` (OAUTHBEARER) name, case-insensitively
  (an OAUTHBEARER response without ``a=`` takes the token's mailbox, as RFC 7628 allows).
* A bad token, ``oauth_style="gmail"``: ``334 <base64 {"status":"401","schemes":"bearer",
  "scope":"https://mail.google.com/"}>``, then whatever line the client answers (XOAUTH2:
  empty; OAUTHBEARER: ``AQ==``; kept in the attempt's ``error_answer``), then
  ``GMAIL_OAUTH_FAILURE`` (535-5.7.8 Username and Password not accepted...).
  ``oauth_style="microsoft"``: ``535 5.7.3 Authentication unsuccessful`` at once.
* Line lengths: the continuation line may be up to ``OAUTH_LINE_LIMIT`` octets (aiosmtpd's
  1001-octet stream limit is raised for this server). An ``AUTH`` command line longer than
  ``MAX_AUTH_LINE`` (512 octets with its CRLF: RFC 4954 section 4 and RFC 5321 4.5.3.1.4)
  is refused with ``AUTH_LINE_TOO_LONG`` = ``500 5.5.6 Authentication Exchange line is too
  long``, RFC 4954 section 6's code for this, before the response is looked at. (Postfix's
  own behaviour differs: it truncates lines at 2048 octets and answers ``535 5.7.8 Error:
  authentication failed: Invalid base64 data in initial response``; pass
  ``auth_line_too_long_reply`` to imitate that.)
* Every OAuth AUTH is recorded in ``oauth_attempts`` (mechanism, inline or continuation,
  the decoded user, the outcome, the answer to the error challenge).
"""

from __future__ import annotations

import base64
import binascii
import collections
import hashlib
import hmac
import json
import logging
import secrets
import ssl
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

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
OAuthStyle = Literal["gmail", "microsoft"]
BUILTIN_MECHANISMS = ("PLAIN", "LOGIN")  # aiosmtpd's own
OAUTH_MECHANISMS = ("XOAUTH2", "OAUTHBEARER")  # ours, only on request and with ``oauth``
SUPPORTED_MECHANISMS = (*BUILTIN_MECHANISMS, "CRAM-MD5", *OAUTH_MECHANISMS)  # CRAM-MD5: ours too
DEFAULT_FAILURE_REPLY = "535 5.7.8 Authentication credentials invalid"  # aiosmtpd's default
SERVER_NAME = "smtp.inboxcheck.test"

GMAIL_OAUTH_ERROR = {"status": "401", "schemes": "bearer", "scope": "https://mail.google.com/"}
GMAIL_OAUTH_FAILURE = (
    "535-5.7.8 Username and Password not accepted. For more information, go to\r\n"
    "535 5.7.8  https://support.google.com/mail/?p=BadCredentials - gsmtp"
)
MICROSOFT_OAUTH_FAILURE = "535 5.7.3 Authentication unsuccessful"
AUTH_LINE_TOO_LONG = "500 5.5.6 Authentication Exchange line is too long"
MAX_AUTH_LINE = 512  # octets, CRLF included
OAUTH_LINE_LIMIT = 64 * 1024  # what this server reads in one line once OAuth is on


class TokenLookup(Protocol):
    """What SmtpServer needs of a token store: the mailbox a live token opens, else None."""

    def mailbox_for(self, token: str) -> str | None: ...


@dataclass(frozen=True)
class OAuthAttempt:
    """One XOAUTH2/OAUTHBEARER AUTH command as the server saw it.

    ``outcome``: "accepted", "rejected" (bad token or name), "too long" (AUTH line over
    MAX_AUTH_LINE), "aborted" (the client sent ``*`` or bad base64 and got a 501).
    ``error_answer`` is the decoded line the client sent after the Gmail-style error
    challenge (None if there was none).
    """

    mechanism: str
    via: Literal["inline", "continuation"]
    user: str | None
    outcome: Literal["accepted", "rejected", "too long", "aborted"]
    error_answer: bytes | None = None


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

    OAuth: list "XOAUTH2"/"OAUTHBEARER" in ``auth_mechanisms`` and give ``oauth`` (a
    TokenEndpoint, or a dict token -> mailbox; either may change while running);
    ``oauth_style`` "gmail" or "microsoft" picks the failure dialogue; ``oauth_attempts``
    records each try. See the module docstring.
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
        oauth: TokenLookup | Mapping[str, str] | None = None,
        oauth_style: OAuthStyle = "gmail",
        auth_line_too_long_reply: str = AUTH_LINE_TOO_LONG,
    ) -> None:
        if mode not in ("starttls", "ssl", "plain"):
            raise ValueError(f"unknown SMTP mode {mode!r}")
        if mode != "plain" and cert is None:
            raise ValueError(f"mode {mode!r} needs a server cert")
        mechanisms = tuple(m.upper() for m in auth_mechanisms)
        unknown = set(mechanisms) - set(SUPPORTED_MECHANISMS)
        if unknown:
            raise ValueError(f"unsupported AUTH mechanisms {sorted(unknown)}")
        if set(mechanisms) & set(OAUTH_MECHANISMS) and oauth is None:
            raise ValueError("XOAUTH2/OAUTHBEARER need oauth= (a TokenEndpoint or a dict token -> mailbox)")
        if oauth_style not in ("gmail", "microsoft"):
            raise ValueError(f"unknown oauth_style {oauth_style!r}")
        self.mode: SmtpMode = mode
        self.users: dict[str, str] = dict(users or {})
        self.cert = cert
        self.auth_mechanisms = mechanisms
        self.auth_failure_reply = auth_failure_reply
        self.hostname = hostname
        self.oauth = oauth
        self.oauth_style: OAuthStyle = oauth_style
        self.auth_line_too_long_reply = auth_line_too_long_reply
        self.port: int = 0
        self.auth_attempts: int = 0
        self.logins: list[tuple[str, str]] = []  # (mechanism, login) per checked credential
        self.oauth_attempts: list[OAuthAttempt] = []
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

    def _token_mailbox(self, token: str) -> str | None:
        if self.oauth is None:
            return None
        if isinstance(self.oauth, Mapping):
            return self.oauth.get(token)
        return self.oauth.mailbox_for(token)

    def _record_oauth(self, attempt: OAuthAttempt) -> None:
        with self._lock:
            self.oauth_attempts.append(attempt)
            if attempt.outcome in ("accepted", "rejected"):
                self.logins.append((attempt.mechanism, attempt.user or ""))

    async def _oauth_exchange(self, server: SMTP, mechanism: str, args: list[str]) -> AuthResult:
        """One XOAUTH2/OAUTHBEARER exchange, Gmail's or Microsoft's way (see the module docstring)."""
        via: Literal["inline", "continuation"] = "inline" if len(args) > 1 else "continuation"
        if via == "inline":
            blob = args[1].encode("ascii", "replace")
            try:
                response = b"" if blob == b"=" else base64.b64decode(blob, validate=True)
            except binascii.Error:
                self._record_oauth(OAuthAttempt(mechanism, via, None, "aborted"))
                await server.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        else:
            answer = await server.challenge_auth(b"", encode_to_b64=False)  # "334 "
            if answer is MISSING:  # "*" or bad base64: aiosmtpd has sent its 501
                self._record_oauth(OAuthAttempt(mechanism, via, None, "aborted"))
                return AuthResult(success=False, handled=True)
            assert isinstance(answer, bytes)
            response = answer
        user, token = _parse_xoauth2(response) if mechanism == "XOAUTH2" else _parse_oauthbearer(response)
        mailbox = self._token_mailbox(token) if token else None
        if mailbox is not None and user is None and mechanism == "OAUTHBEARER":
            user = mailbox  # RFC 7628: no authzid means the token's own identity
        if mailbox is not None and user is not None and mailbox.casefold() == user.casefold():
            self._record_oauth(OAuthAttempt(mechanism, via, user, "accepted"))
            return AuthResult(success=True, auth_data=user)
        if self.oauth_style == "microsoft":
            self._record_oauth(OAuthAttempt(mechanism, via, user, "rejected"))
            return AuthResult(success=False, handled=False, message=MICROSOFT_OAUTH_FAILURE)
        error = json.dumps(GMAIL_OAUTH_ERROR, separators=(",", ":")).encode()
        answer = await server.challenge_auth(error)
        if answer is MISSING:
            self._record_oauth(OAuthAttempt(mechanism, via, user, "aborted"))
            return AuthResult(success=False, handled=True)
        assert isinstance(answer, bytes)
        self._record_oauth(OAuthAttempt(mechanism, via, user, "rejected", answer))
        return AuthResult(success=False, handled=False, message=GMAIL_OAUTH_FAILURE)

    async def _auth_line_too_long(self, server: SMTP, arg: str) -> bool:
        """Refuse an AUTH line over MAX_AUTH_LINE octets (only reached with OAuth on); True if refused."""
        if len(f"AUTH {arg}\r\n".encode("utf-8", "surrogateescape")) <= MAX_AUTH_LINE:
            return False
        args = arg.split()
        mechanism = args[0].upper()
        if mechanism in OAUTH_MECHANISMS:
            user = None
            if len(args) == 2:
                try:
                    response = base64.b64decode(args[1], validate=True)
                except binascii.Error:
                    response = b""
                parse = _parse_xoauth2 if mechanism == "XOAUTH2" else _parse_oauthbearer
                user = parse(response)[0]
            self._record_oauth(OAuthAttempt(mechanism, "inline", user, "too long"))
        await server.push(self.auth_line_too_long_reply)
        return True

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
    """aiosmtpd's SMTP, counting AUTH commands before any check can reject them.

    With OAuth on, the stream reads lines up to OAUTH_LINE_LIMIT (a continuation line
    carries a whole token) and AUTH command lines reach smtp_AUTH whatever their length,
    which then applies MAX_AUTH_LINE itself, so that the refusal is recorded.
    """

    def __init__(self, *args: Any, owner: SmtpServer, **kwargs: Any) -> None:
        if owner.oauth is not None:
            self.line_length_limit = OAUTH_LINE_LIMIT  # read by SMTP.__init__ for its StreamReader
        super().__init__(*args, **kwargs)
        self._owner = owner
        if owner.oauth is not None:
            # An instance dict: aiosmtpd's class-level one is shared by every server.
            self.command_size_limits = collections.defaultdict(
                lambda: SMTP.command_size_limit, {"AUTH": OAUTH_LINE_LIMIT}
            )

    @syntax("AUTH <mechanism>")
    async def smtp_AUTH(self, arg: str) -> None:
        self._owner._count_auth()
        if arg and self._owner.oauth is not None and await self._owner._auth_line_too_long(self, arg):
            return
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

    @auth_mechanism("XOAUTH2")
    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        return await self._owner._oauth_exchange(server, "XOAUTH2", args)

    @auth_mechanism("OAUTHBEARER")
    async def auth_OAUTHBEARER(self, server: SMTP, args: list[str]) -> AuthResult:
        return await self._owner._oauth_exchange(server, "OAUTHBEARER", args)


def _parse_xoauth2(response: bytes) -> tuple[str | None, str | None]:
    """(user, token) from ``user=<user>^Aauth=Bearer <token>^A^A``; None for what is missing."""
    fields = dict(_kv(part) for part in response.split(b"\x01") if b"=" in part)
    return fields.get("user"), _bearer(fields.get("auth"))


def _parse_oauthbearer(response: bytes) -> tuple[str | None, str | None]:
    """(user, token) from RFC 7628's ``n,a=<user>,^Ahost=...^Aport=...^Aauth=Bearer <token>^A^A``."""
    gs2, _, rest = response.partition(b"\x01")
    user = None
    for part in gs2.decode("utf-8", "replace").split(","):
        if part.startswith("a="):
            user = part[2:].replace("=2C", ",").replace("=3D", "=")
    fields = dict(_kv(part) for part in rest.split(b"\x01") if b"=" in part)
    return user, _bearer(fields.get("auth"))


def _kv(part: bytes) -> tuple[str, str]:
    key, _, value = part.decode("utf-8", "replace").partition("=")
    return key, value


def _bearer(auth: str | None) -> str | None:
    if auth is None or not auth.lower().startswith("bearer "):
        return None
    return auth[7:]
