"""Error codes, reasons, and the exceptions a check raises.

Like aiosmtplib's hierarchy, each exception also inherits the builtin it means (TimeoutError,
ConnectionError, PermissionError), so callers that only know the builtins still do the right
thing, and each carries the server's reply when there was one.

Two separate trees. A CheckError is a verdict on an inbox and ends up in its result; an
InboxcheckError is a problem with what a person gave or set up, which the command line prints as
one line with exit 2. The CLI catches InboxcheckError alone, so a new such error only has to
derive from it (worker/ defines most of them; jobs/ never imports worker/).

    Exception                      builtin base       error code / where defined
    ├── CheckError                                    a verdict, kept in the result
    │   ├── CheckTimeout           TimeoutError       TIMEOUT
    │   ├── HostNotFound           ConnectionError    HOST_NOT_FOUND
    │   ├── CheckConnectionError   ConnectionError    CONNECTION_FAILED
    │   ├── TlsError               -                  SSL_ERROR
    │   └── AuthFailed             PermissionError    AUTH_FAILED
    └── InboxcheckError                               for a person: the CLI prints it, exit 2
        ├── RequestError           ValueError         jobs.request
        ├── SettingsError          ValueError         worker.settings
        │   └── LocalRedisError    -                  worker.runtime.local_redis
        ├── ClientError            -                  worker.cli.client
        │   └── CredentialsRefused -                  worker.cli.client
        ├── PlaintextRefused       -                  worker.messages.payload (RegistryError)
        ├── PayloadRejected        -                  worker.messages.payload (INVALID_REQUEST)
        ├── SecretKeyError         ValueError         worker.messages.sealing
        ├── SealError              -                  worker.messages.sealing
        ├── ResultError            ValueError         worker.messages.envelope
        └── WebhookError           -                  worker.webhooks.endpoints
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    # jobs.steps imports this module; the annotation alone needs Step.
    from jobs.steps import Step


class ErrorCode(StrEnum):
    """The product reference's five codes, plus the worker's code for unusable payloads."""

    AUTH_FAILED = "AUTH_FAILED"
    CONNECTION_FAILED = "CONNECTION_FAILED"
    TIMEOUT = "TIMEOUT"
    HOST_NOT_FOUND = "HOST_NOT_FOUND"
    SSL_ERROR = "SSL_ERROR"
    INVALID_REQUEST = "INVALID_REQUEST"


class Reason(StrEnum):
    """What exactly went wrong: refines an ErrorCode so the user knows what to do."""

    # HOST_NOT_FOUND
    NO_SUCH_HOST = "NO_SUCH_HOST"
    DNS_UNAVAILABLE = "DNS_UNAVAILABLE"
    # TIMEOUT
    CONNECT_TIMEOUT = "CONNECT_TIMEOUT"
    NO_GREETING = "NO_GREETING"
    TLS_HANDSHAKE_TIMEOUT = "TLS_HANDSHAKE_TIMEOUT"
    RESPONSE_TIMEOUT = "RESPONSE_TIMEOUT"
    # CONNECTION_FAILED
    CONNECTION_REFUSED = "CONNECTION_REFUSED"
    CONNECTION_CLOSED = "CONNECTION_CLOSED"
    NETWORK_UNREACHABLE = "NETWORK_UNREACHABLE"
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
    PROTOCOL_ERROR = "PROTOCOL_ERROR"
    TOO_MANY_CONNECTIONS = "TOO_MANY_CONNECTIONS"
    # Not a fault of the server: the service does not connect there (jobs.destinations).
    DESTINATION_REFUSED = "DESTINATION_REFUSED"
    # SSL_ERROR
    CERT_EXPIRED = "CERT_EXPIRED"
    CERT_UNTRUSTED = "CERT_UNTRUSTED"
    HOSTNAME_MISMATCH = "HOSTNAME_MISMATCH"
    TLS_MODE_MISMATCH = "TLS_MODE_MISMATCH"
    STARTTLS_UNAVAILABLE = "STARTTLS_UNAVAILABLE"
    TLS_HANDSHAKE_FAILED = "TLS_HANDSHAKE_FAILED"
    TLS_REQUIRED = "TLS_REQUIRED"
    # AUTH_FAILED
    INVALID_CREDENTIALS = "INVALID_CREDENTIALS"
    APP_PASSWORD_REQUIRED = "APP_PASSWORD_REQUIRED"
    WEB_LOGIN_REQUIRED = "WEB_LOGIN_REQUIRED"
    IMAP_DISABLED = "IMAP_DISABLED"
    SMTP_AUTH_DISABLED = "SMTP_AUTH_DISABLED"
    BASIC_AUTH_DISABLED = "BASIC_AUTH_DISABLED"
    AUTH_MECHANISM_UNSUPPORTED = "AUTH_MECHANISM_UNSUPPORTED"
    TOO_MANY_ATTEMPTS = "TOO_MANY_ATTEMPTS"
    TEMPORARY_AUTH_FAILURE = "TEMPORARY_AUTH_FAILURE"
    MAILBOX_UNAVAILABLE = "MAILBOX_UNAVAILABLE"
    # The OAuth2 token endpoint refused (jobs.token_errors): the inbox owner must sign in again,
    # consent or an interactive sign-in is needed, or the platform's OAuth app is broken.
    OAUTH_REAUTH_REQUIRED = "OAUTH_REAUTH_REQUIRED"
    OAUTH_CONSENT_REQUIRED = "OAUTH_CONSENT_REQUIRED"
    OAUTH_APP_MISCONFIGURED = "OAUTH_APP_MISCONFIGURED"
    # LOGIN accepted, then every command refused (Microsoft 365's "authenticated but not connected").
    AUTHENTICATED_NOT_CONNECTED = "AUTHENTICATED_NOT_CONNECTED"
    # INVALID_REQUEST (worker only)
    MALFORMED_PAYLOAD = "MALFORMED_PAYLOAD"
    SEALED_CREDENTIALS = "SEALED_CREDENTIALS"


# Outcomes worth another attempt later: the same request may well succeed.
RETRYABLE_REASONS: frozenset[Reason] = frozenset(
    {
        Reason.DNS_UNAVAILABLE,
        Reason.CONNECT_TIMEOUT,
        Reason.NO_GREETING,
        Reason.TLS_HANDSHAKE_TIMEOUT,
        Reason.RESPONSE_TIMEOUT,
        Reason.CONNECTION_REFUSED,
        Reason.CONNECTION_CLOSED,
        Reason.NETWORK_UNREACHABLE,
        Reason.SERVICE_UNAVAILABLE,
        Reason.TOO_MANY_CONNECTIONS,
        Reason.TOO_MANY_ATTEMPTS,
        Reason.TEMPORARY_AUTH_FAILURE,
    }
)


@dataclass(frozen=True, slots=True)
class Reply:
    """What the server said, with secrets already scrubbed from the text."""

    code: int | None = None  # SMTP reply code
    status: str | None = None  # IMAP status: NO, BAD, BYE
    enhanced_code: str | None = None  # RFC 3463, e.g. 5.7.8
    text: str = ""

    @property
    def temporary(self) -> bool:
        return self.code is not None and 400 <= self.code < 500


class InboxcheckError(Exception):
    """A problem a person caused or has to act on (a bad request, unusable settings or key,
    Redis out of reach). Its message is written for people and never carries a secret or an
    input value, so it can be printed as it is."""


class CheckError(Exception):
    """A protocol check failed at `step` for `reason`."""

    code: ClassVar[ErrorCode]

    def __init__(
        self,
        reason: Reason,
        detail: str,
        *,
        step: Step | None = None,
        reply: Reply | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.step = step
        self.reply = reply
        self.retry_after_s = retry_after_s

    @property
    def retryable(self) -> bool:
        if self.reason in RETRYABLE_REASONS:
            return True
        return self.reply is not None and self.reply.temporary


class CheckTimeout(CheckError, TimeoutError):
    code = ErrorCode.TIMEOUT


class HostNotFound(CheckError, ConnectionError):
    code = ErrorCode.HOST_NOT_FOUND


class CheckConnectionError(CheckError, ConnectionError):
    code = ErrorCode.CONNECTION_FAILED


class TlsError(CheckError):
    code = ErrorCode.SSL_ERROR


class AuthFailed(CheckError, PermissionError):
    code = ErrorCode.AUTH_FAILED


ERROR_CLASS_BY_REASON: dict[Reason, type[CheckError]] = {
    Reason.NO_SUCH_HOST: HostNotFound,
    Reason.DNS_UNAVAILABLE: HostNotFound,
    Reason.CONNECT_TIMEOUT: CheckTimeout,
    Reason.NO_GREETING: CheckTimeout,
    Reason.TLS_HANDSHAKE_TIMEOUT: CheckTimeout,
    Reason.RESPONSE_TIMEOUT: CheckTimeout,
    Reason.CONNECTION_REFUSED: CheckConnectionError,
    Reason.CONNECTION_CLOSED: CheckConnectionError,
    Reason.NETWORK_UNREACHABLE: CheckConnectionError,
    Reason.SERVICE_UNAVAILABLE: CheckConnectionError,
    Reason.PROTOCOL_ERROR: CheckConnectionError,
    Reason.TOO_MANY_CONNECTIONS: CheckConnectionError,
    Reason.DESTINATION_REFUSED: CheckConnectionError,
    Reason.CERT_EXPIRED: TlsError,
    Reason.CERT_UNTRUSTED: TlsError,
    Reason.HOSTNAME_MISMATCH: TlsError,
    Reason.TLS_MODE_MISMATCH: TlsError,
    Reason.STARTTLS_UNAVAILABLE: TlsError,
    Reason.TLS_HANDSHAKE_FAILED: TlsError,
    Reason.TLS_REQUIRED: TlsError,
    Reason.INVALID_CREDENTIALS: AuthFailed,
    Reason.APP_PASSWORD_REQUIRED: AuthFailed,
    Reason.WEB_LOGIN_REQUIRED: AuthFailed,
    Reason.IMAP_DISABLED: AuthFailed,
    Reason.SMTP_AUTH_DISABLED: AuthFailed,
    Reason.BASIC_AUTH_DISABLED: AuthFailed,
    Reason.AUTH_MECHANISM_UNSUPPORTED: AuthFailed,
    Reason.TOO_MANY_ATTEMPTS: AuthFailed,
    Reason.TEMPORARY_AUTH_FAILURE: AuthFailed,
    Reason.MAILBOX_UNAVAILABLE: AuthFailed,
    Reason.OAUTH_REAUTH_REQUIRED: AuthFailed,
    Reason.OAUTH_CONSENT_REQUIRED: AuthFailed,
    Reason.OAUTH_APP_MISCONFIGURED: AuthFailed,
    Reason.AUTHENTICATED_NOT_CONNECTED: AuthFailed,
}


def check_error(reason: Reason, detail: str, **kwargs: object) -> CheckError:
    """The right CheckError subclass for `reason`."""
    return ERROR_CLASS_BY_REASON[reason](reason, detail, **kwargs)  # type: ignore[arg-type]
