"""A stand-in for Google's and Microsoft's OAuth2 token endpoints, plus RFC 7662 introspection.

``TokenEndpoint`` is a standard-library HTTP server (``http.server`` in a thread) on
127.0.0.1:<port from the OS>, plain HTTP or, with ``ssl_context``, HTTPS. What it imitates, from /work/shared/reference/oauth2.md
("Getting tokens" and the table of token endpoint errors):

* ``POST .../token`` (any path ending in ``/token``, so a test may use a Microsoft-style
  ``/{tenant}/oauth2/v2.0/token``), form-encoded, client authentication by form fields
  (``client_secret_post``) or an HTTP Basic header (``client_secret_basic``, authlib's default):

  - ``grant_type=refresh_token`` (client_id, client_secret or none for a public client,
    refresh_token, scope). Every refresh returns a new refresh token and kills the old one
    (Microsoft's rotation; ``rotate_refresh_tokens=False`` gives Google's "no new refresh
    token"). Microsoft style also insists on ``scope`` (AADSTS900144).
  - ``grant_type=client_credentials`` (client_id, client_secret, scope): Microsoft's app-only
    flow. The token opens the client's ``app_mailbox``; without one a token is still issued but
    opens nothing, which is how Exchange behaves without the service principal's permission.
  - ``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`` (assertion): Google's
    service accounts. Any JWT whose header and payload decode and whose ``sub`` is a known
    mailbox is accepted; ``exp`` must be in the future and at most an hour after ``iat``; if a
    public key is registered for its ``iss`` (``add_jwt_key``) the RS256 signature must verify.

  Success is ``{"access_token", "token_type": "Bearer", "expires_in", "scope"}`` (plus
  ``refresh_token`` when rotating). Access tokens are random, ``token_size`` characters
  (default 2500: real ones are 1.5-3 KB). Natural failures (unknown client, wrong secret, dead
  refresh token, bad JWT) use the ``style``'s error shape: Google's short descriptions or
  Microsoft's AADSTS text with ``error_codes``, ``trace_id``, ``correlation_id`` and so on.

* ``POST .../introspect`` with ``token=...`` (Dovecot's ``introspection_mode = post``):
  ``{"active": true, "username": <mailbox>, ...}`` for a live token, else ``{"active": false}``.

* Any error shape on demand: ``fail_with(reply)`` with one of the canned replies below (OAuth
  JSON errors with Google's and Microsoft's descriptions, HTTP 500/503, a body that is not
  JSON, 429 with Retry-After) or ``HANG`` (read the request, never answer; ``stop()`` ends it).

Every request is recorded (``requests``: path, form fields with secrets, headers, the reply's
status), so tests can count token fetches. The test side can also mint, revoke and expire
tokens directly (``issue_refresh_token``, ``issue_access_token``, ``revoke``, ``expire``).
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, NamedTuple
from urllib.parse import parse_qsl, unquote_plus, urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.servers.lifecycle import StartStop
from tests.servers.ports import LOOPBACK

Style = Literal["google", "microsoft"]
Where = Literal["token", "introspect"]

REFRESH_TOKEN = "refresh_token"
CLIENT_CREDENTIALS = "client_credentials"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"

GOOGLE_SCOPE = "https://mail.google.com/"
MICROSOFT_SCOPE = (
    "https://outlook.office.com/IMAP.AccessAsUser.All https://outlook.office.com/SMTP.Send offline_access"
)
MICROSOFT_APP_SCOPE = "https://outlook.office365.com/.default"
DEFAULT_TOKEN_SIZE = 2500
_MAX_BODY = 1 << 20
_JWT_MAX_LIFETIME = 3600  # Google: exp at most an hour after iat


# -- replies -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """An HTTP reply: status, body, content type, extra headers."""

    status: int
    body: bytes
    content_type: str = "application/json; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def json(self) -> Any:
        """The body parsed as JSON (for assertions in tests)."""
        return json.loads(self.body)


class _Hang:
    def __repr__(self) -> str:
        return "HANG"


HANG = _Hang()
"""Read the request and never answer; the connection stays open until the client or stop() ends it."""

Failure = Reply | _Hang


def json_reply(status: int, payload: Mapping[str, Any], *headers: tuple[str, str]) -> Reply:
    return Reply(status, json.dumps(payload).encode(), headers=(("Cache-Control", "no-store"), *headers))


def oauth_error(error: str, description: str | None = None, *, status: int = 400) -> Reply:
    """An RFC 6749 error as Google words it: ``{"error", "error_description"}``."""
    payload = {"error": error}
    if description is not None:
        payload["error_description"] = description
    return json_reply(status, payload)


# Fixed ids so a canned reply is the same bytes every time; Microsoft sends fresh ones.
_MS_TRACE_ID = "0b9c3bd6-1f0e-4c2a-9d55-7d0f6e1a2b00"
_MS_CORRELATION_ID = "5e3f1a22-8c4d-4b7e-a1f0-2c9d8e7b6a11"
_MS_TIMESTAMP = "2026-01-15 10:20:30Z"


def microsoft_error(
    error: str, code: int, text: str, *, status: int = 400, suberror: str | None = None
) -> Reply:
    """An error as Microsoft's identity platform words it (AADSTS number in text and error_codes)."""
    payload: dict[str, Any] = {
        "error": error,
        "error_description": (
            f"AADSTS{code}: {text}\r\nTrace ID: {_MS_TRACE_ID}\r\n"
            f"Correlation ID: {_MS_CORRELATION_ID}\r\nTimestamp: {_MS_TIMESTAMP}"
        ),
        "error_codes": [code],
        "timestamp": _MS_TIMESTAMP,
        "trace_id": _MS_TRACE_ID,
        "correlation_id": _MS_CORRELATION_ID,
        "error_uri": f"https://login.microsoftonline.com/error?code={code}",
    }
    if suberror is not None:
        payload["suberror"] = suberror
    return json_reply(status, payload)


def rate_limited(retry_after: int | str = 30) -> Reply:
    """HTTP 429 with ``Retry-After: <seconds or an HTTP date>``."""
    return json_reply(
        429,
        {"error": "temporarily_unavailable", "error_description": "Too many requests"},
        ("Retry-After", str(retry_after)),
    )


def _html(status: int, title: str) -> Reply:
    body = f"<!DOCTYPE html><html><head><title>{title}</title></head><body><h1>{title}</h1></body></html>"
    return Reply(status, body.encode(), content_type="text/html; charset=utf-8")


# The refresh token is dead: the inbox owner must sign in again.
GOOGLE_INVALID_GRANT = oauth_error("invalid_grant", "Token has been expired or revoked.")
MS_REFRESH_TOKEN_EXPIRED = microsoft_error(
    "invalid_grant",
    700082,
    "The refresh token has expired due to inactivity. The token was issued on 2025-10-01T00:00:00Z "
    "and was inactive for 90.00:00:00.",
)
MS_REFRESH_TOKEN_REVOKED = microsoft_error(
    "invalid_grant",
    50173,
    "The provided grant has expired due to it being revoked, a fresh auth token is needed.",
)
# Consent or an interactive sign-in is needed: the inbox owner or the tenant admin must act.
MS_CONSENT_MISSING = microsoft_error(
    "invalid_grant",
    65001,
    "The user or administrator has not consented to use the application with ID "
    "'00000000-0000-0000-0000-000000000001'. Send an interactive authorization request for this "
    "user and resource.",
    suberror="consent_required",
)
MS_MFA_REQUIRED = microsoft_error(
    "invalid_grant",
    50076,
    "Due to a configuration change made by your administrator, or because you moved to a new "
    "location, you must use multi-factor authentication to access 'https://outlook.office.com'.",
)
MS_CONDITIONAL_ACCESS = microsoft_error(
    "invalid_grant",
    53003,
    "Access has been blocked by Conditional Access policies. The access policy does not allow token issuance.",
)
CONSENT_REQUIRED = microsoft_error(
    "consent_required",
    65001,
    "The user or administrator has not consented to use the application. Send an interactive "
    "authorization request for this user and resource.",
)
INTERACTION_REQUIRED = microsoft_error(
    "interaction_required",
    50079,
    "Due to a configuration change made by your administrator, or because you moved to a new "
    "location, you must enroll in multi-factor authentication.",
)
# The platform's OAuth app is misconfigured: every inbox of that app fails.
MS_BAD_CLIENT_SECRET = microsoft_error(
    "invalid_client",
    7000215,
    "Invalid client secret provided. Ensure the secret being sent in the request is the client "
    "secret value, not the client secret ID.",
    status=401,
)
MS_CLIENT_SECRET_EXPIRED = microsoft_error(
    "invalid_client",
    7000222,
    "The provided client secret keys for app '00000000-0000-0000-0000-000000000001' are expired.",
    status=401,
)
MS_UNKNOWN_CLIENT = microsoft_error(
    "unauthorized_client",
    700016,
    "Application with identifier '00000000-0000-0000-0000-000000000001' was not found in the "
    "directory. This can happen if the application has not been installed by the administrator "
    "of the tenant or consented to by any user in the tenant.",
)
MS_INVALID_SCOPE = microsoft_error(
    "invalid_scope", 70011, "The provided value for the input parameter 'scope' is not valid."
)
GOOGLE_CLIENT_NOT_FOUND = oauth_error("invalid_client", "The OAuth client was not found.", status=401)
GOOGLE_BAD_CLIENT_SECRET = oauth_error("invalid_client", "Unauthorized", status=401)
GOOGLE_UNAUTHORIZED_CLIENT = oauth_error(
    "unauthorized_client",
    "Client is unauthorized to retrieve access tokens using this method, or client not authorized "
    "for any of the scopes requested.",
    status=401,
)
GOOGLE_INVALID_SCOPE = oauth_error("invalid_scope", "Some requested scopes were invalid.")
# The endpoint is down: nobody must act, retry later.
TEMPORARILY_UNAVAILABLE = oauth_error(
    "temporarily_unavailable", "The server is temporarily too busy to handle the request.", status=503
)
HTTP_500 = _html(500, "500 Internal Server Error")
HTTP_503 = _html(503, "503 Service Unavailable")
NOT_JSON = _html(200, "Sign in to your account")
RATE_LIMITED = rate_limited(30)


# -- what the endpoint knows -------------------------------------------------------------------


class OAuthAccount(NamedTuple):
    """A mailbox with a password and an OAuth client + refresh token (the ``oauth_user`` fixture)."""

    email: str
    password: str
    client_id: str
    client_secret: str
    refresh_token: str


@dataclass
class Client:
    """A registered OAuth client; ``secret=None`` is a public client."""

    client_id: str
    secret: str | None = None
    app_mailbox: str | None = None  # what its client_credentials tokens open


@dataclass
class _Grant:
    mailbox: str | None
    client_id: str | None
    scope: str
    expires_at: float = float("inf")  # time.monotonic()
    revoked: bool = False

    @property
    def active(self) -> bool:
        return not self.revoked and time.monotonic() < self.expires_at


@dataclass
class OAuthRequest:
    """One HTTP request as the endpoint saw it; ``status`` is None while unanswered (or hung)."""

    method: str
    path: str
    form: dict[str, str]
    headers: dict[str, str]
    status: int | None = None

    @property
    def grant_type(self) -> str | None:
        return self.form.get("grant_type")

    @property
    def client_id(self) -> str | None:
        """From the form, else from an HTTP Basic header."""
        basic = _basic_credentials(self.headers.get("authorization"))
        return self.form.get("client_id") or (basic[0] if basic else None)


@dataclass
class _FailurePlan:
    reply: Failure
    remaining: int | None  # None: until cleared


@dataclass
class _State:
    clients: dict[str, Client] = field(default_factory=dict)
    mailboxes: set[str] = field(default_factory=set)
    access: dict[str, _Grant] = field(default_factory=dict)
    refresh: dict[str, _Grant] = field(default_factory=dict)
    jwt_keys: dict[str, rsa.RSAPublicKey] = field(default_factory=dict)
    failures: dict[str, list[_FailurePlan]] = field(default_factory=dict)


class TokenEndpoint(StartStop):
    """A token endpoint and introspection endpoint on 127.0.0.1; see the module docstring.

    Options: ``style`` ("google" or "microsoft": the wording of natural errors, the shape of
    tokens, Microsoft's required scope on refresh), ``token_size`` (access token length),
    ``expires_in`` (seconds, reported and enforced), ``rotate_refresh_tokens``.
    Attributes for tests: ``token_url``, ``introspection_url``, ``requests``, ``token_requests``,
    ``introspection_requests``; all state may be changed while it runs.
    """

    host: str = LOOPBACK

    def __init__(
        self,
        *,
        style: Style = "google",
        token_size: int = DEFAULT_TOKEN_SIZE,
        expires_in: int = 3599,
        rotate_refresh_tokens: bool = True,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if style not in ("google", "microsoft"):
            raise ValueError(f"unknown token endpoint style {style!r}")
        if token_size < 16:
            raise ValueError("token_size must be at least 16")
        self.style: Style = style
        self.token_size = token_size
        self.expires_in = expires_in
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.ssl_context = ssl_context
        self.port: int = 0
        self.requests: list[OAuthRequest] = []
        self._state = _State()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _HttpServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> TokenEndpoint:
        if self._server is not None:
            raise RuntimeError("token endpoint already running")
        self._stopping.clear()
        server = _HttpServer(self)
        if self.ssl_context is not None:
            # The handshake runs in each handler's thread (first read), never in the accept loop.
            server.socket = self.ssl_context.wrap_socket(
                server.socket, server_side=True, do_handshake_on_connect=False
            )
        self.port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="oauth-endpoint", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: hung requests end, open connections are dropped, the thread joins."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._stopping.set()  # wakes HANG handlers
        server.shutdown()  # serve_forever returns
        server.drop_connections()  # unblocks handlers waiting for a keep-alive request
        server.server_close()
        thread.join(10)
        self._server = self._thread = None

    @property
    def base_url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://{self.host}:{self.port}"

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/token"

    @property
    def introspection_url(self) -> str:
        return f"{self.base_url}/introspect"

    # -- set-up by tests -----------------------------------------------------------------------

    def add_client(
        self, client_id: str, secret: str | None = None, *, app_mailbox: str | None = None
    ) -> Client:
        """Register a client (``secret=None``: public). ``app_mailbox``: what client_credentials opens."""
        client = Client(client_id, secret, app_mailbox)
        with self._lock:
            self._state.clients[client_id] = client
            if app_mailbox is not None:
                self._state.mailboxes.add(app_mailbox)
        return client

    def add_mailbox(self, mailbox: str) -> None:
        """Make ``mailbox`` known (a JWT's ``sub`` must name one)."""
        with self._lock:
            self._state.mailboxes.add(mailbox)

    def add_jwt_key(self, issuer: str, public_key: rsa.RSAPublicKey | bytes) -> None:
        """From now on, JWTs from ``issuer`` must carry a valid RS256 signature by this key."""
        key = serialization.load_pem_public_key(public_key) if isinstance(public_key, bytes) else public_key
        if not isinstance(key, rsa.RSAPublicKey):
            raise TypeError("only RSA keys (RS256) are supported")
        with self._lock:
            self._state.jwt_keys[issuer] = key

    def issue_refresh_token(self, mailbox: str, client_id: str, scope: str | None = None) -> str:
        """A refresh token for ``mailbox`` and ``client_id``, as if the owner had just consented."""
        token = self._new_refresh_token()
        with self._lock:
            self._state.mailboxes.add(mailbox)
            self._state.refresh[token] = _Grant(mailbox, client_id, scope or self._default_scope())
        return token

    def issue_access_token(
        self,
        mailbox: str | None,
        *,
        client_id: str | None = None,
        scope: str | None = None,
        size: int | None = None,
    ) -> str:
        """An access token for ``mailbox`` minted without HTTP (for SMTP/IMAP tests)."""
        with self._lock:
            if mailbox is not None:
                self._state.mailboxes.add(mailbox)
            return self._mint_access(mailbox, client_id, scope or self._default_scope(), size)

    def revoke(self, token: str) -> None:
        """Kill an access or refresh token: introspection says inactive, a refresh fails."""
        with self._lock:
            grant = self._state.access.get(token) or self._state.refresh.get(token)
            if grant is None:
                raise KeyError("unknown token")
            grant.revoked = True

    def expire(self, token: str) -> None:
        """Make an access or refresh token expired (as if its lifetime had passed)."""
        with self._lock:
            grant = self._state.access.get(token) or self._state.refresh.get(token)
            if grant is None:
                raise KeyError("unknown token")
            grant.expires_at = time.monotonic()

    def revoke_mailbox(self, mailbox: str) -> None:
        """Kill every token of ``mailbox`` (fixture clean-up)."""
        with self._lock:
            for grant in (*self._state.access.values(), *self._state.refresh.values()):
                if grant.mailbox == mailbox:
                    grant.revoked = True

    def fail_with(self, reply: Failure, *, times: int | None = None, on: Where = "token") -> None:
        """Answer the next ``times`` requests to ``on`` (all of them if None) with ``reply``.

        Plans queue up: ``fail_with(HTTP_503, times=1); fail_with(GOOGLE_INVALID_GRANT)`` answers
        503 once, then invalid_grant until ``clear_failures()``.
        """
        if on not in ("token", "introspect"):
            raise ValueError(f"unknown endpoint {on!r}")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            self._state.failures.setdefault(on, []).append(_FailurePlan(reply, times))

    def clear_failures(self) -> None:
        with self._lock:
            self._state.failures.clear()

    # -- queries ---------------------------------------------------------------------------------

    @property
    def token_requests(self) -> list[OAuthRequest]:
        """Requests to a ``.../token`` path, in arrival order."""
        with self._lock:
            return [r for r in self.requests if r.path.endswith("/token")]

    @property
    def introspection_requests(self) -> list[OAuthRequest]:
        with self._lock:
            return [r for r in self.requests if r.path.endswith("/introspect")]

    @property
    def issued_access_tokens(self) -> list[str]:
        """Every access token minted so far (for tests that look for them where they must not be)."""
        with self._lock:
            return list(self._state.access)

    def mailbox_for(self, token: str) -> str | None:
        """The mailbox a live access token opens, else None."""
        with self._lock:
            grant = self._state.access.get(token)
            return grant.mailbox if grant is not None and grant.active else None

    def introspect(self, token: str) -> dict[str, Any]:
        """The RFC 7662 answer for ``token``, as ``POST /introspect`` gives it."""
        with self._lock:
            grant = self._state.access.get(token)
            if grant is None or not grant.active or grant.mailbox is None:
                return {"active": False}
            answer: dict[str, Any] = {
                "active": True,
                "username": grant.mailbox,
                "scope": grant.scope,
                "token_type": "Bearer",
            }
            if grant.client_id is not None:
                answer["client_id"] = grant.client_id
            if grant.expires_at != float("inf"):
                answer["exp"] = int(time.time() + grant.expires_at - time.monotonic())
            return answer

    # -- request handling (server threads) ------------------------------------------------------

    def _handle(self, handler: _RequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        if length > _MAX_BODY:
            self._send(handler, oauth_error("invalid_request", "request too large", status=413), None)
            return
        body = handler.rfile.read(length) if length else b""
        form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        path = urlsplit(handler.path).path
        request = OAuthRequest(
            handler.command, path, form, {k.lower(): v for k, v in handler.headers.items()}
        )
        with self._lock:
            self.requests.append(request)
        if handler.command != "POST":
            self._send(handler, oauth_error("invalid_request", "POST only", status=405), request)
        elif path.endswith("/token"):
            self._answer(handler, request, "token", lambda: self._token(request))
        elif path.endswith("/introspect"):
            self._answer(
                handler,
                request,
                "introspect",
                lambda: json_reply(200, self.introspect(form.get("token", ""))),
            )
        else:
            self._send(handler, _html(404, "404 Not Found"), request)

    def _answer(
        self, handler: _RequestHandler, request: OAuthRequest, where: Where, normal: Callable[[], Reply]
    ) -> None:
        failure = self._take_failure(where)
        if failure is HANG:
            self._stopping.wait()
            handler.close_connection = True
            return
        self._send(handler, failure if isinstance(failure, Reply) else normal(), request)

    def _take_failure(self, where: Where) -> Failure | None:
        with self._lock:
            plans = self._state.failures.get(where)
            if not plans:
                return None
            plan = plans[0]
            if plan.remaining is not None:
                plan.remaining -= 1
                if plan.remaining == 0:
                    plans.pop(0)
            return plan.reply

    def _send(self, handler: _RequestHandler, reply: Reply, request: OAuthRequest | None) -> None:
        handler.send_response(reply.status)
        handler.send_header("Content-Type", reply.content_type)
        handler.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers:
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(reply.body)
        if request is not None:
            request.status = reply.status

    def _token(self, request: OAuthRequest) -> Reply:
        grant_type = request.form.get("grant_type")
        if not grant_type:
            return self._missing("grant_type")
        with self._lock:
            if grant_type == REFRESH_TOKEN:
                return self._refresh(request)
            if grant_type == CLIENT_CREDENTIALS:
                return self._client_credentials(request)
            if grant_type == JWT_BEARER:
                return self._jwt_bearer(request.form)
        if self.style == "microsoft":
            return microsoft_error(
                "unsupported_grant_type",
                70003,
                f"The app requested an unsupported grant type '{grant_type}'.",
            )
        return oauth_error("unsupported_grant_type", f"Invalid grant_type: {grant_type}")

    def _refresh(self, request: OAuthRequest) -> Reply:
        client, error = self._authenticate_client(request)
        if error is not None:
            return error
        assert client is not None
        token = request.form.get("refresh_token")
        if not token:
            return self._missing("refresh_token")
        scope = request.form.get("scope")
        if self.style == "microsoft" and not scope:
            return self._missing("scope")
        grant = self._state.refresh.get(token)
        if grant is None or grant.client_id != client.client_id:
            return self._dead_refresh_token("unknown")
        if grant.revoked:
            return self._dead_refresh_token("revoked")
        if not grant.active:
            return self._dead_refresh_token("expired")
        answer = self._token_answer(grant.mailbox, client.client_id, scope or grant.scope)
        if self.rotate_refresh_tokens:
            grant.revoked = True
            new_token = self._new_refresh_token()
            self._state.refresh[new_token] = _Grant(grant.mailbox, client.client_id, grant.scope)
            answer["refresh_token"] = new_token
        return json_reply(200, answer)

    def _client_credentials(self, request: OAuthRequest) -> Reply:
        client, error = self._authenticate_client(request)
        if error is not None:
            return error
        assert client is not None
        if client.secret is None:  # public clients cannot use this grant
            return MS_UNKNOWN_CLIENT if self.style == "microsoft" else GOOGLE_UNAUTHORIZED_CLIENT
        scope = request.form.get("scope")
        if not scope:
            return self._missing("scope")
        return json_reply(200, self._token_answer(client.app_mailbox, client.client_id, scope))

    def _jwt_bearer(self, form: Mapping[str, str]) -> Reply:
        assertion = form.get("assertion")
        if not assertion:
            return self._missing("assertion")
        try:
            header, claims, signing_input, signature = _decode_jwt(assertion)
        except ValueError:
            return oauth_error("invalid_grant", "Invalid JWT Signature.")
        key = self._state.jwt_keys.get(str(claims.get("iss")))
        if key is not None:
            if header.get("alg") != "RS256":
                return oauth_error("invalid_grant", "Invalid JWT Signature.")
            try:
                key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
            except InvalidSignature:
                return oauth_error("invalid_grant", "Invalid JWT Signature.")
        now = time.time()
        exp, iat = claims.get("exp"), claims.get("iat", now)
        if (
            not isinstance(exp, (int, float))
            or not isinstance(iat, (int, float))
            or exp <= now
            or exp - iat > _JWT_MAX_LIFETIME
        ):
            return oauth_error(
                "invalid_grant",
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable "
                "timeframe. Check your iat and exp values in the JWT claim.",
            )
        sub = claims.get("sub")
        if sub not in self._state.mailboxes:
            return oauth_error("invalid_grant", "Invalid email or User ID")
        scope = str(claims.get("scope") or GOOGLE_SCOPE)
        client_id = str(claims["iss"]) if "iss" in claims else None
        return json_reply(200, self._token_answer(str(sub), client_id, scope))

    def _authenticate_client(self, request: OAuthRequest) -> tuple[Client | None, Reply | None]:
        basic = _basic_credentials(request.headers.get("authorization"))
        client_id = request.form.get("client_id") or (basic[0] if basic else None)
        secret = request.form.get("client_secret") or (basic[1] if basic else None)
        if not client_id:
            return None, self._missing("client_id")
        client = self._state.clients.get(client_id)
        if client is None:
            return None, (MS_UNKNOWN_CLIENT if self.style == "microsoft" else GOOGLE_CLIENT_NOT_FOUND)
        if client.secret is not None and (
            secret is None or not secrets.compare_digest(secret.encode(), client.secret.encode())
        ):
            return None, (MS_BAD_CLIENT_SECRET if self.style == "microsoft" else GOOGLE_BAD_CLIENT_SECRET)
        return client, None

    def _token_answer(self, mailbox: str | None, client_id: str | None, scope: str) -> dict[str, Any]:
        return {
            "access_token": self._mint_access(mailbox, client_id, scope, None),
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "scope": scope,
        }

    def _mint_access(self, mailbox: str | None, client_id: str | None, scope: str, size: int | None) -> str:
        size = size or self.token_size
        prefix = "ya29." if self.style == "google" else "eyJ0eXAiOiJKV1QifQ."
        token = prefix + _random_chars(size - len(prefix))
        expires_at = time.monotonic() + self.expires_in
        self._state.access[token] = _Grant(mailbox, client_id, scope, expires_at)
        return token

    def _new_refresh_token(self) -> str:
        if self.style == "google":
            return "1//0" + _random_chars(100)
        return "0.A" + _random_chars(700)

    def _default_scope(self) -> str:
        return GOOGLE_SCOPE if self.style == "google" else MICROSOFT_SCOPE

    def _missing(self, parameter: str) -> Reply:
        if self.style == "microsoft":
            return microsoft_error(
                "invalid_request",
                900144,
                f"The request body must contain the following parameter: '{parameter}'.",
            )
        return oauth_error("invalid_request", f"Missing required parameter: {parameter}")

    def _dead_refresh_token(self, why: Literal["unknown", "revoked", "expired"]) -> Reply:
        if self.style == "google":
            return oauth_error("invalid_grant", "Bad Request") if why == "unknown" else GOOGLE_INVALID_GRANT
        if why == "revoked":
            return MS_REFRESH_TOKEN_REVOKED
        if why == "expired":
            return MS_REFRESH_TOKEN_EXPIRED
        return microsoft_error("invalid_grant", 70000, "Provided grant is invalid or malformed.")


# -- JWT helpers (also for tests that play the client) ------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_jwt(claims: Mapping[str, Any], private_key: rsa.RSAPrivateKey | None = None) -> str:
    """An RS256 JWT of ``claims``, signed by ``private_key`` (or with a junk signature if None)."""
    header = {"alg": "RS256", "typ": "JWT"}
    signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(dict(claims)).encode())}"
    if private_key is None:
        signature = secrets.token_bytes(256)
    else:
        signature = private_key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64url(signature)}"


def _decode_jwt(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    """(header, claims, signing input, signature); ValueError if it is not a decodable JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("not a JWT")
    try:
        header = json.loads(_b64url_decode(parts[0]))
        claims = json.loads(_b64url_decode(parts[1]))
        signature = _b64url_decode(parts[2])
    except (binascii.Error, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError("undecodable JWT") from exc
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise ValueError("JWT parts are not objects")
    return header, claims, f"{parts[0]}.{parts[1]}".encode("ascii"), signature


def _basic_credentials(header: str | None) -> tuple[str, str] | None:
    """(client_id, secret) from ``Authorization: Basic`` (RFC 6749 2.3.1: each form-urlencoded)."""
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, sep, secret = decoded.partition(":")
    return (unquote_plus(client_id), unquote_plus(secret)) if sep else None


def _random_chars(count: int) -> str:
    return secrets.token_urlsafe(count)[:count]


# -- the HTTP server -------------------------------------------------------------------------------


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Dovecot's HTTP client expects
    # Headers and body are two writes (two TLS records): without this, the body waits for the
    # client's delayed ACK of the headers, 40 ms a request.
    disable_nagle_algorithm = True
    server: _HttpServer

    def do_POST(self) -> None:
        self.server.endpoint._handle(self)

    do_GET = do_POST

    def log_message(self, format: str, *args: Any) -> None:
        pass  # tests read .requests instead


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() has already woken every handler; never wait on one
    allow_reuse_address = False
    request_queue_size = 128  # socketserver's 5 drops connections a burst of clients opens at once

    def __init__(self, endpoint: TokenEndpoint) -> None:
        self.endpoint = endpoint
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__((LOOPBACK, 0), _RequestHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that refuses the certificate or hangs up is the test's business, not noise
