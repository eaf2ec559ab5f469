"""A thin session over aioimaplib's protocol, adding what the library lacks.

aioimaplib has no STARTTLS, drops a failed greeting inside a background task, leaves a command
waiting forever when the server hangs up, and lets a parse error escape from data_received with
the pending command in its text (a LOGIN, password included) for asyncio to log. It would also
keep bytes sent between STARTTLS's OK and the handshake, gluing them to the first line read over
TLS. This module mends exactly those five things; the IMAP grammar stays the library's.

It also saves round trips the library spends: capabilities the greeting announces
([CAPABILITY ...], RFC 3501 7.1) are taken from it instead of asked for again, LOGIN and EXAMINE
can go out in one write (`login(..., then_examine=...)`), and LOGOUT is said in the background
after the verdict (`see_off`, jobs.goodbyes).
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
from collections.abc import Awaitable
from typing import Any, Protocol, cast

from aioimaplib import aioimaplib

from jobs import sasl
from jobs.bounds import (
    IMAP_LINE_TOO_LONG,
    IMAP_MAX_LINE_BYTES,
    IMAP_MAX_RESPONSE_BYTES,
    IMAP_MAX_RESPONSE_LINES,
    IMAP_RESPONSE_TOO_LONG,
    IMAP_TOO_MANY_LINES,
)
from jobs.goodbyes import Goodbyes


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
        # As GreetingRefused: the line (bounded by jobs.bounds) stays out of the message.
        super().__init__("the server ended the session with BYE")
        self.line = line


class ProtocolViolation(ConnectionError):
    """The server sent something aioimaplib could not place, or bytes where none may be."""


STARTTLS_INJECTION = "the server sent data after accepting STARTTLS, before the TLS handshake"

# A greeting that announces the capabilities: "* OK [CAPABILITY IMAP4rev1 ...] ready" (or PREAUTH).
_ANNOUNCED = re.compile(rb"\* (OK|PREAUTH) \[CAPABILITY ([^\]]*)\]", re.IGNORECASE)


class _Protocol(aioimaplib.IMAP4ClientProtocol):  # type: ignore[misc]  # untyped library
    incomplete_line: bytes  # the library's unfinished line, bounded here
    pending_sync_command: Any  # the command whose answer the library files lines under

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
        # What the server sent since the last command went out (jobs.bounds).
        self.response_bytes = 0
        self.response_lines = 0
        self.exceeded: str | None = None  # the bound the server passed, in plain words

    def _handle_line(self, line: bytes, current_cmd: Any) -> Any:
        # A whole line after STARTTLS's OK in the read that carried it: dropped unparsed. (Not a
        # hook on _handle_responses: the library recurses through it once a line, and a frame
        # more per line overflows the stack on a read of a few hundred short lines.)
        if self.awaiting_tls:
            self.sent_before_tls = True
            return None
        if self._answering():
            self.response_lines += 1
            if self.response_lines > IMAP_MAX_RESPONSE_LINES:
                self._exceed(IMAP_TOO_MANY_LINES)
                return None
        if self.bye is None and line[:6].upper() == b"* BYE ":
            self.bye = line
        return super()._handle_line(line, current_cmd)

    def _answering(self) -> bool:
        """Whether what arrives now counts towards an answer's bounds: before the greeting, or
        while a command waits for its answer. Lines between answers the library drops unkept."""
        return (
            self.state == aioimaplib.CONNECTED
            or self.pending_sync_command is not None
            or bool(self.pending_async_commands)
            or self.current_command is not None
        )

    def send(self, line: str, scrub: str | None = None) -> None:
        self.response_bytes = self.response_lines = 0
        super().send(line, scrub)

    def data_received(self, d: bytes) -> None:
        if self.awaiting_tls:  # a later read, before the handshake
            self.sent_before_tls = True
            return
        if self.exceeded is not None:  # aborted: what was still in flight is dropped unread
            return
        in_literal = self.current_command is not None and self.current_command.wait_literal_data()
        if not in_literal and b"\r\n" not in d and len(self.incomplete_line) + len(d) > IMAP_MAX_LINE_BYTES:
            self._exceed(IMAP_LINE_TOO_LONG)  # named for what it is, though it passes both bounds
            return
        try:
            # One line at a time: the library recurses once per line of what it is given and
            # copies the rest of it at each level, so one 256 KiB read of empty lines would cost
            # hundreds of MB and a RecursionError. A line at a time it keeps the same state.
            start = 0
            while start < len(d) and self.exceeded is None:
                end = d.find(b"\r\n", start)
                stop = len(d) if end == -1 else end + 2
                if self._answering():
                    self.response_bytes += stop - start
                    if self.response_bytes > IMAP_MAX_RESPONSE_BYTES:
                        self._exceed(IMAP_RESPONSE_TOO_LONG)
                        break
                super().data_received(d[start:stop])
                start = stop
        except Exception as exc:  # noqa: BLE001 - whatever the parser raises ends the session
            # The exception's text may quote the pending command, LOGIN included: keep its type,
            # drop the rest, and end the session rather than let asyncio log it.
            self.violation = type(exc).__name__
            if self.transport is not None:
                self.transport.abort()
        # A partial line after the OK, which the library would glue to the first line read over TLS.
        if self.awaiting_tls and self.incomplete_line:
            self.sent_before_tls = True
        if len(self.incomplete_line) > IMAP_MAX_LINE_BYTES:
            self._exceed(IMAP_LINE_TOO_LONG)

    def _exceed(self, bound: str) -> None:
        """End the session at once: the server passed one of jobs.bounds."""
        self.exceeded = bound
        self.incomplete_line = b""  # released now, not at the step's end
        if self.transport is not None:
            self.transport.abort()

    def _continuation(self, line: bytes) -> None:
        # aioimaplib files a `+` under the pending command and never answers it: AUTHENTICATE
        # answers here, or a rejected token would wait for the timeout.
        if isinstance(self.pending_sync_command, _Authenticate) and self.transport is not None:
            self.transport.write(self.pending_sync_command.answer(line) + b"\r\n")
            return
        super()._continuation(line)

    async def welcome(self, command: bytes) -> None:
        if self._take_announced(command):
            if not self.greeted.done():
                self.greeted.set_result(None)
            return
        try:
            await super().welcome(command)
        except Exception as exc:  # noqa: BLE001 - a greeting the library refuses fails the greeting
            if not self.greeted.done():
                self.greeted.set_exception(GreetingRefused(command) if b"OK" not in command else exc)
            return
        if not self.greeted.done():
            self.greeted.set_result(None)

    def _take_announced(self, greeting: bytes) -> bool:
        """Take the capabilities the greeting announces, as the library's own CAPABILITY would
        have (the same versions accepted), saving that round trip; False when there are none."""
        found = _ANNOUNCED.match(greeting)
        if found is None:
            return False
        announced = found.group(2).decode("ascii", errors="replace").split()
        versions = [c.upper() for c in announced if c.upper() in aioimaplib.AllowedVersions]
        if not versions:
            return False  # the library's path, which refuses such a server in its own words
        self.state = aioimaplib.AUTH if found.group(1).upper() == b"PREAUTH" else aioimaplib.NONAUTH
        self.capabilities = set(announced)
        self.imap_version = versions[-1]
        return True

    def send_together(self, commands: list[Any]) -> None:
        """Send `commands` in one write, the first waiting for its answer (see _Leading)."""
        if self.pending_sync_command is not None:
            # Its answer would be filed under the first of these: a bug in the caller, not the server.
            raise RuntimeError("send_together while a command is still waiting for its answer")
        self.response_bytes = self.response_lines = 0
        self.pending_sync_command = commands[0]
        self.transport.write(b"".join(f"{command}\r\n".encode() for command in commands))

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        # Nothing read is wanted any more: let what the pending commands collected (up to the
        # bounds) go with them, and stop the greeting's CAPABILITY, which would wait forever.
        self.incomplete_line = b""
        self.pending_sync_command = self.current_command = None
        for task in self.tasks:
            task.cancel()
        if not self.closed.done():
            self.closed.set_result(exc)
        if not self.greeted.done():
            self.greeted.set_exception(
                self.broken("greeting")
                or ConnectionResetError("server closed the connection before greeting")
            )

    def broken(self, what: str) -> ProtocolViolation | None:
        """Why the session was ended on the server's account, if it was."""
        if self.exceeded is not None:
            return ProtocolViolation(self.exceeded)
        if self.violation is not None:
            return ProtocolViolation(f"the server's {what} broke the IMAP protocol ({self.violation})")
        return None


class _StartTls(aioimaplib.Command):  # type: ignore[misc]  # untyped library
    """STARTTLS, marking the protocol the moment its OK is parsed, before the rest of that read."""

    def __init__(self, protocol: _Protocol) -> None:
        super().__init__("STARTTLS", protocol.new_tag(), loop=protocol.loop)
        self._protocol = protocol

    def close(self, line: bytes, result: str) -> None:
        super().close(line, result)
        if result == "OK":
            self._protocol.awaiting_tls = True


class _Leading(aioimaplib.Command):  # type: ignore[misc]  # untyped library
    """A command sent in one write with the one after it (`then`). The library files answers
    under the one command it waits for, so the moment this one's tagged answer is parsed, the
    next takes its place, before the rest of that read; the bounds count its answer afresh."""

    def __init__(self, protocol: _Protocol, name: str, *args: str) -> None:
        super().__init__(name, protocol.new_tag(), *args, loop=protocol.loop)
        self._protocol = protocol
        self.then: aioimaplib.Command | None = None

    def close(self, line: bytes, result: str) -> None:
        super().close(line, result)
        self._protocol.pending_sync_command = self.then
        self._protocol.response_bytes = self._protocol.response_lines = 0


async def _answer(command: aioimaplib.Command) -> Response:
    await command.wait()
    return cast(Response, command.response)


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
        self._examining: aioimaplib.Command | None = None  # sent with LOGIN, its answer not yet read

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
                # Its frame holds the command and all it collected: released now, not at the
                # loop's next turn. (A wait, not an await of the task: our own cancellation by a
                # deadline still goes through.)
                await asyncio.wait({task})
        if task.cancelled():
            broken = self.protocol.broken("reply")
            if broken is not None:
                raise broken
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

    async def login(self, user: str, password: str, then_examine: str) -> Response:
        """LOGIN's answer, with EXAMINE of `then_examine` in the same write (`examine()` reads its
        answer): RFC 3501 5.5 (RFC 9051 5.5) lets a client send a command before the last one's
        answer, and LOGIN with quoted strings never asks the client for more (no continuation),
        so nothing the server reads in between can be mistaken. When LOGIN fails, EXAMINE's
        answer ("not authenticated") is left unread."""
        if self.protocol.state != aioimaplib.NONAUTH:  # as the library's execute() refuses it
            raise aioimaplib.Abort(f"command LOGIN illegal in state {self.protocol.state}")
        login = _Leading(self.protocol, "LOGIN", aioimaplib.quoted(user), aioimaplib.quoted(password))
        examine = aioimaplib.Command("EXAMINE", self.protocol.new_tag(), then_examine, loop=self.loop)
        login.then = self._examining = examine
        self.protocol.send_together([login, examine])
        response = await self._run(_answer(login))
        if response.result == "OK":
            self.protocol.state = aioimaplib.AUTH  # as the library's own login() does
        return response

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

    async def examine(self, mailbox: str) -> Response:
        """EXAMINE's answer: of the one sent with LOGIN if there is one, else sent now."""
        if self._examining is not None:
            command, self._examining = self._examining, None
            return await self._run(_answer(command))
        return await self._run(self.protocol.simple_command("EXAMINE", mailbox))

    async def logout(self) -> Response:
        return await self._run(self.protocol.logout())

    def see_off(self, goodbyes: Goodbyes, within_s: float) -> None:
        """LOGOUT and the close in the background (jobs.goodbyes), bounded by `within_s`."""
        transport = self.protocol.transport
        if transport is None:
            return
        goodbyes.see_off("imap", self.logout, self.protocol.closed, self.close, transport.abort, within_s)

    def close(self) -> None:
        transport = self.protocol.transport
        if transport is not None:
            transport.close()
