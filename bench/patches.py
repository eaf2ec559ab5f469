"""Variations applied inside bench processes only, to show a figure beside the shipped one.

The project ships the 16 KiB buffer (jobs/tls.py); the memory rows set other sizes with this.
"""

from __future__ import annotations

# --- 1. memory: asyncio's TLS read buffer ---------------------------------------------------------
# CPython 3.11 Lib/asyncio/sslproto.py: SSLProtocol.max_size = 256 * 1024, and __init__ does
# `self._ssl_buffer = bytearray(self.max_size)` -- a zero-filled, so fully resident, 256 KiB per TLS
# connection (a check holds two). It is also the size of every SSLObject.read() in the copying
# read path these libraries use (plain Protocols). A TLS record carries at most 16 KiB of plaintext.


def shrink_ssl_buffer(size: int) -> None:
    import asyncio.sslproto

    asyncio.sslproto.SSLProtocol.max_size = size
