"""What a TLS handshake tells about the server, read from a real handshake on loopback."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from cryptography import x509

from jobs.tls import client_context, tls_info
from tests.servers.certs import PKI


async def test_the_version_cipher_and_certificate_expiry_of_a_real_handshake(pki: PKI) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=pki.valid.ssl_context)
    port = server.sockets[0].getsockname()[1]
    async with server:
        _, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_context(str(pki.ca_file)), server_hostname="localhost"
        )
        info = tls_info(writer.get_extra_info("ssl_object"))
        writer.close()
        await writer.wait_closed()
    not_after = x509.load_pem_x509_certificate(pki.valid.cert_file.read_bytes()).not_valid_after_utc
    assert info is not None
    assert info.version == "TLSv1.3"
    assert info.cipher in {cipher["name"] for cipher in pki.valid.ssl_context.get_ciphers()}
    assert info.cert_not_after == not_after
    assert info.cert_days_left == (not_after - datetime.now(UTC)).days


def test_no_tls_no_info() -> None:
    assert tls_info(None) is None
