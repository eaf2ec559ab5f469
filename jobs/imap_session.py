"""A thin session over aioimaplib's protocol, adding what the library lacks.

aioimaplib has no STARTTLS, drops a failed greeting inside a background task, leaves a command
waiting forever when the server hangs up, and lets a parse error escape from data_received with
the pending command in its text (a LOGIN, password included) for asyncio to log. It would also
keep bytes sent between STARTTLS's OK and the handshake, gluing them to the first line read over
TLS. This module mends exactly those five things; the IMAP grammar stays the library's.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable
from typing import Any, Protocol, cast

from aioimaplib import aioimaplib

from jobs import sasl


class Response(Protocol):
    """What aioimaplib answers a command with (the library ships no types)."""

    result: str  # OK, NO or BAD
    lines: list[bytes]


class GreetingRefused(ConnectionError):
    """The server's first line was BYE (or anything but OK/PREAUTH)."""

    def __init__(self, line: bytes) -> None:
        # The line stays bytes and out of the message: it can be as long as the server likes, and
        # only the capped reply text built from it may be kept.
        super().__init__("the server refused the session in its greeting")
        self.line = line


class ServerBye(ConnectionError):
    """The server hung up with an untagged BYE instead of answering the command."""

    def __init__(self, line: bytes) -> None:
        # As GreetingRefused: the line (bounded by MAX_LINE_BYTES) stays out of the message.
        super().__init__("the server ended the session with BYE")
        self.line = line


class ProtocolViolation(ConnectionError):
    """The server sent something aioimaplib could not place, or bytes where none may be."""


STARTTLS_INJECTION = "the server sent data after accepting STARTTLS, before the TLS handshake"
# The longest line a server may send before its CRLF. What the check reads (greeting, CAPABILITY,
# LOGIN and EXAMINE answers) is a few hundred bytes at most; aioimaplib keeps an unfinished line
# whole and rescans it on every read, so an endless one would cost memory and time without bound.
MAX_LINE_BYTES = 65_536
LINE_TOO_LONG = f"the server sent more than {MAX_LINE_BYTES} bytes without ending a line"


class _Protocol(aioimaplib.IMAP4ClientProtocol):  # type: ignore[misc]  # untyped library
    incomplete_line: bytes  # the library's unfinished line, bounded here

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.greeted: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[BaseException | None] = loop.create_future()
        self.violation: str | None = None
        # From the STARTTLS OK until the TLS layer takes the transport, the server must stay silent
        # (RFC 3501 6.2.1); a byte in that gap is plaintext anyone on the path could have injected.
        self.awaiting_tls = False
        self.sent_before_tls = False
        # The first untagged BYE: why the server is about to hang up (RFC 3501 7.1.5).
        self.bye: bytes | None = None

    def _handle_line(self, line: bytes, current_cmd: Any) -> Any:
        # A whole line after STARTTLS's OK in the read that carried it: dropped unparsed. (Not a
        # hook on _handle_responses: the library recurses through it once a line, and a frame
        # more per line overflows the stack on a read of a few hundred short lines.)
        if self.awaiting_tls:
            self.sent_before_tls = True
            return None
        if self.bye is None and line[:6].upper() == b"* BYE ":
            self.bye = line
        return super()._handle_line(line, current_cmd)

    def data_received(self, d: bytes) -> None:
        if self.awaiting_tls:  # a later read, before the handshake
            self.sent_before_tls = True
            return
        try:
            super().data_received(d)
        except Exception as exc:  # noqa: BLE001 - whatever the parser raises ends the session
            # The exception's text may quote the pending command, LOGIN included: keep its type,
            # drop the rest, and end the session rather than let asyncio log it.
            self.violation = type(exc).__name__
            if self.transport is not None:
                self.transport.abort()
        # A partial line after the OK, which the library would glue to the first line read over TLS.
        if self.awaiting_tls and self.incomplete_line:
            self.sent_before_tls = True
        if len(self.incomplete_line) > MAX_LINE_BYTES and self.transport is not None:
            self.violation = LINE_TOO_LONG
            self.incomplete_line = b""  # released now, not at the step's end
            self.transport.abort()

    def _continuation(self, line: bytes) -> None:
        # aioimaplib files a `+` under the pending command and never answers it: AUTHENTICATE
        # answers here, or a rejected token would wait for the timeout.
        if isinstance(self.pending_sync_command, _Authenticate) and self.transport is not None:
            self.transport.write(self.pending_sync_command.answer(line) + b"\r\n")
            return
        super()._continuation(line)

    async def welcome(self, command: bytes) -> None:
        try:
            await super().welcome(command)
        except Exception as exc:  # noqa: BLE001 - a greeting the library refuses fails the greeting
            if not self.greeted.done():
                self.greeted.set_exception(GreetingRefused(command) if b"OK" not in command else exc)
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


class _StartTls(aioimaplib.Command):  # type: ignore[misc]  # untyped library
    """STARTTLS, marking the protocol the moment its OK is parsed, before the rest of that read."""

    def __init__(self, protocol: _Protocol) -> None:
        super().__init__("STARTTLS", protocol.new_tag(), loop=protocol.loop)
        self._protocol = protocol

    def close(self, line: bytes, result: str) -> None:
        super().close(line, result)
        if result == "OK":
            self._protocol.awaiting_tls = True


class _Authenticate(aioimaplib.Command):  # type: ignore[misc]  # untyped library
    """AUTHENTICATE with one SASL response: sent with the command when the server has SASL-IR,
    else on the server's first (empty) `+`. A `+` after the response is the server's error
    challenge (a refused token): it is kept, and answered as the mechanism requires, so the server
    sends its final NO."""

    def __init__(self, protocol: _Protocol, mechanism: sasl.Mechanism, response: str, inline: bool) -> None:
        args = (mechanism.value, response) if inline else (mechanism.value,)
        super().__init__("AUTHENTICATE", protocol.new_tag(), *args, loop=protocol.loop)
        self.mechanism = mechanism
        self._response: str | None = None if inline else response
        self.challenge: dict[str, str] | None = None

    def answer(self, line: bytes) -> bytes:
        if self._response is not None:
            response, self._response = self._response, None
            return response.encode("ascii")
        self.challenge = sasl.decode_challenge(line[1:].decode("ascii", errors="replace"))
        return sasl.abort_response(self.mechanism).encode("ascii")


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
            if self.protocol.bye is not None:
                raise ServerBye(self.protocol.bye)
            raise ConnectionResetError("server closed the connection")
        return cast(Response, task.result())

    async def starttls(self, context: ssl.SSLContext, host: str) -> Response:
        command = _StartTls(self.protocol)
        response = await self._run(self.protocol.execute(command))
        if response.result != "OK":
            return response
        if self.protocol.sent_before_tls:
            raise ProtocolViolation(STARTTLS_INJECTION)
        # start_tls pauses reading and gives the transport to the TLS layer before it first yields,
        # so no byte read from here on reaches this protocol unencrypted (one still in flight is
        # fed to the handshake, which then fails) and decrypted data may flow again.
        self.protocol.awaiting_tls = False
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

    async def authenticate(
        self, mechanism: sasl.Mechanism, response: str
    ) -> tuple[Response, dict[str, str] | None]:
        """AUTHENTICATE with `response`; the reply, and the server's error challenge if it sent one."""
        inline = "SASL-IR" in self.capabilities
        command = _Authenticate(self.protocol, mechanism, response, inline)
        reply = await self._run(self.protocol.execute(command))
        if reply.result == "OK":
            self.protocol.state = aioimaplib.AUTH  # as the library's own login() does
        return reply, command.challenge

    async def examine(self, mailbox: str = "INBOX") -> Response:
        return await self._run(self.protocol.simple_command("EXAMINE", mailbox))

    async def logout(self) -> Response:
        return await self._run(self.protocol.logout())

    def close(self) -> None:
        transport = self.protocol.transport
        if transport is not None:
            transport.close()
