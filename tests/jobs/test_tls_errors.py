"""What a failed TLS handshake tells the user, for the OpenSSL verdicts the real-server tests
cannot provoke on demand (a certificate not yet valid, an unusual verify code, a bare SSLError).
The errors are built as OpenSSL reports them: reason, message and verify code."""

from __future__ import annotations

import ssl
from typing import Any, cast

import pytest

from jobs.errors import Reason
from jobs.tls import ssl_error

WHERE = "mail.example.com:993"


def _verify_failure(code: int, message: str) -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(
        1, f"[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: {message}"
    )
    error.reason = "CERTIFICATE_VERIFY_FAILED"
    error.verify_code = code
    error.verify_message = message
    return error


def _ssl_failure(reason: str | None, text: str) -> ssl.SSLError:
    error: Any = ssl.SSLError(1, text)  # typeshed's reason is never None; OpenSSL's may be
    error.reason = reason
    return cast(ssl.SSLError, error)


@pytest.mark.parametrize(
    ("code", "message", "reason", "detail"),
    [
        (10, "certificate has expired", Reason.CERT_EXPIRED, f"{WHERE}: certificate has expired"),
        (62, "Hostname mismatch", Reason.HOSTNAME_MISMATCH, f"{WHERE}: Hostname mismatch"),
        (64, "IP address mismatch", Reason.HOSTNAME_MISMATCH, f"{WHERE}: IP address mismatch"),
        (
            20,
            "unable to get local issuer certificate",
            Reason.CERT_UNTRUSTED,
            f"{WHERE}: unable to get local issuer certificate",
        ),
        (
            9,
            "certificate is not yet valid",
            Reason.TLS_HANDSHAKE_FAILED,
            f"{WHERE}: certificate is not yet valid",
        ),
        (
            26,
            "unsupported certificate purpose",
            Reason.TLS_HANDSHAKE_FAILED,
            f"{WHERE}: certificate rejected: unsupported certificate purpose",
        ),
    ],
)
def test_each_certificate_verdict_is_named(code: int, message: str, reason: Reason, detail: str) -> None:
    error = ssl_error(_verify_failure(code, message), WHERE)
    assert (error.reason, error.detail) == (reason, detail)


def test_a_plaintext_answer_to_implicit_tls_means_the_wrong_port() -> None:
    error = ssl_error(
        _ssl_failure("WRONG_VERSION_NUMBER", "[SSL: WRONG_VERSION_NUMBER] wrong version number"), WHERE
    )
    assert (error.reason, error.detail) == (
        Reason.TLS_MODE_MISMATCH,
        f"{WHERE} does not speak implicit TLS on this port; use STARTTLS (or the TLS port)",
    )


def test_any_other_handshake_failure_names_openssls_reason_or_message() -> None:
    named = ssl_error(
        _ssl_failure("SSLV3_ALERT_HANDSHAKE_FAILURE", "[SSL: SSLV3_ALERT_HANDSHAKE_FAILURE] alert"), WHERE
    )
    assert (named.reason, named.detail) == (
        Reason.TLS_HANDSHAKE_FAILED,
        f"TLS handshake with {WHERE} failed: SSLV3_ALERT_HANDSHAKE_FAILURE",
    )
    bare = _ssl_failure(None, "EOF occurred in violation of protocol")
    unnamed = ssl_error(bare, WHERE)
    assert (unnamed.reason, unnamed.detail) == (
        Reason.TLS_HANDSHAKE_FAILED,
        f"TLS handshake with {WHERE} failed: {bare}",
    )
