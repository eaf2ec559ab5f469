"""A thin session over aioimaplib's protocol, adding what the library lacks.

aioimaplib has no STARTTLS, drops a failed greeting inside a background task, leaves a command
waiting forever when the server hangs up, and lets a parse error escape from data_received with
the pending command in its text (a LOGIN, password included) for asyncio to log. This module
mends exactly those four things; the IMAP grammar stays the library's.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable
from typing import Any, Protocol, cast

from aioimaplib import aioimaplib


class Response(Protocol):
    """What aioimaplib answers a command with (the library ships no types)."""

    result: str  # OK, NO or BAD
    lines: list[bytes]


class GreetingRefused(ConnectionError):
    """The server's first line was BYE (or anything but OK/PREAUTH)."""

    def __init__(self, line: str) -> None:
        super().__init__(line)
        self.line = line


class ProtocolViolation(ConnectionError):
    """The server sent something aioimaplib could not place; the session was dropped."""


class _Protocol(aioimaplib.IMAP4ClientProtocol):  # type: ignore[misc]  # untyped library
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.greeted: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[BaseException | None] = loop.create_future()
        self.violation: str | None = None

    def data_received(self, d: bytes) -> None:
        try:
            super().data_received(d)
        except Exception as exc:  # noqa: BLE001 - whatever the parser raises ends the session
            # The exception's text may quote the pending command, LOGIN included: keep its type,
            # drop the rest, and end the session rather than let asyncio log it.
            self.violation = type(exc).__name__
            if self.transport is not None:
                self.transport.abort()

    async def welcome(self, command: bytes) -> None:
        try:
            await super().welcome(command)
        except Exception as exc:  # noqa: BLE001 - a greeting the library refuses fails the greeting
            if not self.greeted.done():
                line = command.decode(errors="replace")
                self.greeted.set_exception(GreetingRefused(line) if b"OK" not in command else exc)
            return
        if not self.greeted.done():
            self.greeted.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.closed.done():
            self.closed.set_result(exc)
        if not self.greeted.done():
            self.greeted.set_exception(
                ProtocolViolation(f"the server's greeting broke the IMAP protocol ({self.violation})")
                if self.violation
                else ConnectionResetError("server closed the connection before greeting")
            )


class ImapSession:
    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.protocol = _Protocol(self.loop)

    async def open(self, sock: socket.socket, context: ssl.SSLContext | None, host: str) -> None:
        """Start the session on a connected socket, with implicit TLS when a context is given."""
        await self.loop.create_connection(
            lambda: self.protocol, sock=sock, ssl=context, server_hostname=host if context else None
        )

    async def greeting(self) -> None:
        await self.protocol.greeted

    async def _run(self, coro: Awaitable[Any]) -> Response:
        """Await a command, failing at once if the server hangs up instead of answering."""
        task = asyncio.ensure_future(coro)
        try:
            await asyncio.wait({task, self.protocol.closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not task.done():
                task.cancel()
        if not task.done():
            if self.protocol.violation is not None:
                raise ProtocolViolation(
                    f"the server's reply broke the IMAP protocol ({self.protocol.violation})"
                )
            raise ConnectionResetError("server closed the connection")
        return cast(Response, task.result())

    async def starttls(self, context: ssl.SSLContext, host: str) -> Response:
        command = aioimaplib.Command("STARTTLS", self.protocol.new_tag(), loop=self.loop)
        response = await self._run(self.protocol.execute(command))
        if response.result != "OK":
            return response
        self.protocol.transport = await self.loop.start_tls(
            self.protocol.transport, self.protocol, context, server_hostname=host
        )
        # RFC 3501 6.2.1: capabilities learnt before TLS must be discarded and asked for again.
        await self._run(self.protocol.capability())
        return response

    @property
    def capabilities(self) -> set[str]:
        return {c.upper() for c in self.protocol.capabilities}

    def ssl_object(self) -> ssl.SSLObject | None:
        transport = self.protocol.transport
        return transport.get_extra_info("ssl_object") if transport is not None else None

    async def login(self, user: str, password: str) -> Response:
        # aioimaplib quotes the password but not the user name.
        return await self._run(self.protocol.login(aioimaplib.quoted(user), password))

    async def examine(self, mailbox: str = "INBOX") -> Response:
        return await self._run(self.protocol.simple_command("EXAMINE", mailbox))

    async def logout(self) -> Response:
        return await self._run(self.protocol.logout())

    def close(self) -> None:
        transport = self.protocol.transport
        if transport is not None:
            transport.close()
