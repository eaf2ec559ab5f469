"""Hostile servers: ones that send without end, or a byte at a time, for FakeServer.

Each factory returns a handler. The floods write as fast as the client reads and stop when the
client goes; the drips send one byte per interval, forever. Used by the bound tests and by the
benchmark's hostile and soak runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from tests.servers.tcp import Handler

IMAP_GREETING = b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hostile ready\r\n"
SMTP_GREETING = b"220 hostile.test ESMTP\r\n"
FLOOD_WRITE_BYTES = 64 * 1024
DRIP_EVERY_S = 0.5


def _gone(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    return writer.is_closing() or reader.at_eof() or reader.exception() is not None


async def _flood(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, unit: bytes, total: int | None
) -> None:
    """`unit` over and over until the client leaves, or until `total` bytes and then silence."""
    chunk = unit * max(1, FLOOD_WRITE_BYTES // len(unit))
    sent = 0
    while not _gone(reader, writer) and (total is None or sent < total):
        part = chunk if total is None else chunk[: total - sent]
        writer.write(part)
        sent += len(part)
        await writer.drain()
        # A TLS transport whose peer is gone neither pauses nor raises: yield so the loop sees it.
        await asyncio.sleep(0)
    while await reader.read(FLOOD_WRITE_BYTES):
        pass


async def _drip(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes, every_s: float
) -> None:
    """`data` one byte at a time, then the last byte over and over, until the client leaves."""
    position = 0
    while not _gone(reader, writer):
        writer.write(data[position : position + 1])
        await writer.drain()
        position = min(position + 1, len(data) - 1)
        await asyncio.sleep(every_s)


async def _answer_imap_capability(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> str:
    """Answer a CAPABILITY the client may send after the greeting (which announces them, so the
    check does not); the tag of the command after it (LOGIN)."""
    tag, _, command = (await reader.readline()).partition(b" ")
    if command.upper().startswith(b"CAPABILITY"):
        writer.write(f"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n{tag.decode()} OK done\r\n".encode())
        await writer.drain()
        tag = (await reader.readline()).split(b" ", 1)[0]
    return tag.decode()


def imap_flood(
    unit: bytes, *, head: bytes = b"", at_login: bool = False, total: int | None = None
) -> Handler:
    """Sends `head`, then `unit` without end (or `total` bytes of it, then silence): from the
    first byte, or in answer to the command after the greeting's CAPABILITY (LOGIN) when
    `at_login`."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if at_login:
            writer.write(IMAP_GREETING)
            await _answer_imap_capability(reader, writer)
        writer.write(head)
        await _flood(reader, writer, unit, total)

    return handler


def smtp_flood(unit: bytes, *, total: int | None = None) -> Handler:
    """Greets, then answers EHLO with `unit` without end (e.g. b"250-PIPELINING\\r\\n"), or with
    `total` bytes of it and then silence."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(SMTP_GREETING)
        await reader.readline()
        await _flood(reader, writer, unit, total)

    return handler


def drip(data: bytes, *, after_line: bytes = b"", every_s: float = DRIP_EVERY_S) -> Handler:
    """Sends `after_line` whole (a greeting) and waits for a command if it is given, then `data`
    one byte every `every_s` seconds, forever."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if after_line:
            writer.write(after_line)
            await reader.readline()
        await _drip(reader, writer, data, every_s)

    return handler


def slow_replies(replies: Sequence[bytes], seconds_each: float) -> Handler:
    """A dialogue whose every reply is whole and correct but dripped over `seconds_each`: the
    first on connect, each next one after a command from the client; then silence."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for number, reply in enumerate(replies):
            if number:
                await reader.readline()
            for byte in range(len(reply)):
                writer.write(reply[byte : byte + 1])
                await writer.drain()
                await asyncio.sleep(seconds_each / len(reply))
        while await reader.read(FLOOD_WRITE_BYTES):
            pass

    return handler
