"""TLS client contexts, what a handshake tells about the server, and what a failed one means."""

from __future__ import annotations

import asyncio.sslproto
import ssl
from datetime import UTC, datetime
from functools import lru_cache

from cryptography import x509

from jobs.bounds import CERT_CHAIN_TOO_LONG
from jobs.errors import CheckError, Reason, check_error
from jobs.result import TlsInfo

# OpenSSL verify codes (include/openssl/x509_vfy.h) that name a certificate problem exactly.
_X509_EXPIRED = 10
_X509_NOT_YET_VALID = 9
_X509_HOSTNAME_MISMATCH = 62
_X509_IP_ADDRESS_MISMATCH = 64
_X509_UNTRUSTED = frozenset({2, 18, 19, 20, 21, 27})

# A TLS client that gets a plaintext greeting back sees one of these: the port is not TLS.
_PLAINTEXT_PEER = (
    "WRONG_VERSION_NUMBER",
    "UNKNOWN_PROTOCOL",
    "RECORD_LAYER_FAILURE",
    "PACKET_LENGTH_TOO_LONG",
    "HTTP_REQUEST",
    "record layer failure",
)

# OpenSSL's reason for a handshake message past its bound: in practice the certificate chain, the
# one message a server can make as long as it likes (jobs.bounds.TLS_MAX_CERT_CHAIN_BYTES).
_MESSAGE_TOO_LONG = "EXCESSIVE_MESSAGE_SIZE"

# A TLS record carries at most 16 KiB of plaintext, so reads of this size lose nothing (a longer
# reply takes more reads); it sizes each SSLObject.read(), it limits no message.
TLS_READ_BUFFER = 16 * 1024


def use_small_tls_read_buffers() -> None:
    """Make asyncio's TLS transports read into TLS_READ_BUFFER-sized buffers, process-wide.

    asyncio's SSLProtocol zero-fills a read buffer of `max_size` (256 KiB) for every TLS
    connection, and a check holds two: most of a worker's memory at a few hundred checks at once.
    A class attribute of asyncio's, so this changes every TLS connection of the process: called
    where the worker and the CLI start, never on import, so a service that imports the engine
    keeps its asyncio as it was. Guarded by tests/worker/runtime/test_patched_internals.py.
    """
    if getattr(asyncio.sslproto.SSLProtocol, "max_size", 0) > TLS_READ_BUFFER:
        asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER


@lru_cache(maxsize=8)
def client_context(ca_file: str | None = None) -> ssl.SSLContext:
    """A verifying client context, built once per process: loading the system trust store costs
    milliseconds that a check should not pay every time."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context


@lru_cache(maxsize=1)
def probe_context() -> ssl.SSLContext:
    """Only asks "does this port speak TLS?", so it trusts anything and sends no secret."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


# A worker meets the same few provider certificates over and over.
_CERT_CACHE_SIZE = 1024


@lru_cache(maxsize=_CERT_CACHE_SIZE)
def _not_after(der: bytes) -> datetime:
    # getpeercert() decodes the whole certificate into a dict on every call; the DER
    # bytes come for free, and a cache keyed by them decodes each certificate once.
    return x509.load_der_x509_certificate(der).not_valid_after_utc


def tls_info(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> TlsInfo | None:
    if ssl_object is None:
        return None
    cipher = ssl_object.cipher()
    not_after = None
    days_left = None
    der = ssl_object.getpeercert(binary_form=True)
    if der:
        not_after = _not_after(der)
        days_left = (not_after - datetime.now(UTC)).days
    return TlsInfo(
        version=ssl_object.version(),
        cipher=cipher[0] if cipher else None,
        cert_not_after=not_after,
        cert_days_left=days_left,
    )


def ssl_error(exc: ssl.SSLError, where: str) -> CheckError:
    """Name the exact certificate or handshake problem behind an ssl.SSLError."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = exc.verify_code
        message = exc.verify_message
        if code == _X509_EXPIRED:
            return check_error(Reason.CERT_EXPIRED, f"{where}: certificate has expired")
        if code in (_X509_HOSTNAME_MISMATCH, _X509_IP_ADDRESS_MISMATCH):
            return check_error(Reason.HOSTNAME_MISMATCH, f"{where}: {message}")
        if code in _X509_UNTRUSTED:
            return check_error(Reason.CERT_UNTRUSTED, f"{where}: {message}")
        if code == _X509_NOT_YET_VALID:
            return check_error(Reason.TLS_HANDSHAKE_FAILED, f"{where}: certificate is not yet valid")
        return check_error(Reason.TLS_HANDSHAKE_FAILED, f"{where}: certificate rejected: {message}")
    text = f"{exc.reason or ''} {exc}"
    if any(marker in text for marker in _PLAINTEXT_PEER):
        return check_error(
            Reason.TLS_MODE_MISMATCH,
            f"{where} does not speak implicit TLS on this port; use STARTTLS (or the TLS port)",
        )
    if exc.reason == _MESSAGE_TOO_LONG:
        return check_error(
            Reason.TLS_HANDSHAKE_FAILED, f"TLS handshake with {where} failed: {CERT_CHAIN_TOO_LONG}"
        )
    return check_error(Reason.TLS_HANDSHAKE_FAILED, f"TLS handshake with {where} failed: {exc.reason or exc}")
