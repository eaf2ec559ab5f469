"""Small scripted servers for the faults a real server won't produce on demand.

``FakeServer(handler)`` serves any ``handler(reader, writer)`` coroutine. The
canned handlers below cover silence, abrupt closes, and scripted SMTP/IMAP
dialogues (provider-specific error replies, throttling, hangs). Scripted
handlers record what clients sent (passwords included: that is server-side
and fine; the leak tests look at client-side output).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import socket
import ssl
import struct
import threading
from collections.abc import Sequence

from tests.servers.tcp import Handler, ThreadedTcpServer

__all__ = [
    "FakeServer",
    "Handler",
    "ImapScript",
    "SmtpScript",
    "close_on_accept",
    "imap_script",
    "reset_on_accept",
    "silent",
    "smtp_script",
]


class FakeServer(ThreadedTcpServer):
    """``handler`` on 127.0.0.1:<free port>, optionally behind implicit TLS.

    ``connections`` counts accepted connections, ``errors`` collects handler
    crashes (a client vanishing is not one). ``stop()`` drops every open client.
    """

    def __init__(self, handler: Handler, *, ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__(handler, ssl_context=ssl_context, name="fake-server")


# -- trivial handlers -----------------------------------------------------------


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accept and never answer; keep the connection until the client or stop() ends it."""
    await _drain_until_eof(reader)


async def close_on_accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Close (FIN) right after accepting, before any greeting."""
    return


async def drops_the_tls_hello(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A TLS server that takes the ClientHello, then hangs up (FIN) without an alert."""
    await reader.read(1)


async def reset_on_accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Reset (RST) right after accepting: the client sees ECONNRESET, not EOF."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        # Linger on with a zero timeout turns close() into an RST.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


# -- SMTP --------------------------------------------------------------------------


class SmtpScript:
    """A scripted ESMTP server dialogue; use an instance as a FakeServer handler.

    * ``greeting``: sent on connect; anything but 2xx (e.g. "421 4.3.2 Service
      not available") is sent and the connection closed.
    * ``ehlo_extensions``: EHLO keywords ("AUTH PLAIN LOGIN", "SIZE 1000", ...);
      STARTTLS is added while ``starttls_context`` is set and TLS not yet on.
      ``ehlo_extensions_after_tls`` replaces them after STARTTLS if given.
    * ``auth_reply``: the reply to every AUTH PLAIN/LOGIN once credentials are
      in; may be multi-line ("534-5.7.9 ...\\r\\n534 5.7.9 ..."). "235 ..." means
      success. ``hang_after_auth``: read the credentials, never answer.
    * ``injected_after_starttls``: raw bytes sent in the same write as the
      220 to STARTTLS, before the handshake, as a man in the middle would.
    * ``silent_after_quit``: read QUIT, never answer it, keep the connection
      until the client closes it. ``quit_received`` is set on QUIT, ``gone``
      once the client has closed the connection (or the dialogue ended).
    * ``open_after_quit``: answer QUIT, then keep the connection until the
      client closes it; ``left_cleanly`` is set if it closed it rather than
      resetting it (a TLS client that aborts is seen as a reset).
    """

    def __init__(
        self,
        *,
        greeting: str = "220 fake.test ESMTP fake",
        ehlo_extensions: Sequence[str] = ("AUTH PLAIN LOGIN",),
        ehlo_extensions_after_tls: Sequence[str] | None = None,
        starttls_context: ssl.SSLContext | None = None,
        auth_reply: str = "535 5.7.8 Authentication credentials invalid",
        hang_after_auth: bool = False,
        hostname: str = "fake.test",
        injected_after_starttls: bytes = b"",
        silent_after_quit: bool = False,
        open_after_quit: bool = False,
    ) -> None:
        self.greeting = greeting
        self.ehlo_extensions = list(ehlo_extensions)
        self.ehlo_extensions_after_tls = (
            None if ehlo_extensions_after_tls is None else list(ehlo_extensions_after_tls)
        )
        self.starttls_context = starttls_context
        self.auth_reply = auth_reply
        self.hang_after_auth = hang_after_auth
        self.hostname = hostname
        self.injected_after_starttls = injected_after_starttls
        self.silent_after_quit = silent_after_quit
        self.open_after_quit = open_after_quit
        self.commands: list[str] = []  # command lines as received (not AUTH continuations)
        self.logins: list[tuple[str, str, str]] = []  # (mechanism, username, password)
        self.auth_attempts = 0
        # Threading events: the handler runs in the server's own thread and loop.
        self.quit_received = threading.Event()
        self.gone = threading.Event()
        self.left_cleanly = threading.Event()

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._converse(reader, writer)
        finally:
            self.gone.set()

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _send(writer, self.greeting)
        if not self.greeting.startswith("2"):
            return
        upgraded = False
        while line := await reader.readline():
            command = line.decode("utf-8", "replace").rstrip("\r\n")
            self.commands.append(command)
            verb, _, arg = command.partition(" ")
            verb = verb.upper()
            if verb == "EHLO":
                await _send(writer, self._ehlo_reply(upgraded))
            elif verb == "HELO":
                await _send(writer, f"250 {self.hostname}")
            elif verb == "STARTTLS":
                if self.starttls_context is None or upgraded:
                    await _send(writer, "502 5.5.1 STARTTLS not available")
                    continue
                writer.write(b"220 2.0.0 Ready to start TLS\r\n" + self.injected_after_starttls)
                await writer.drain()
                await writer.start_tls(self.starttls_context)
                upgraded = True
            elif verb == "AUTH":
                if not await self._auth(reader, writer, arg):
                    return
            elif verb in ("MAIL", "RCPT", "RSET", "NOOP"):
                await _send(writer, "250 2.0.0 OK")
            elif verb == "DATA":
                await _send(writer, "354 End data with <CR><LF>.<CR><LF>")
                while (data := await reader.readline()) not in (b".\r\n", b".\n"):
                    if not data:
                        return
                await _send(writer, "250 2.0.0 OK queued")
            elif verb == "QUIT":
                self.quit_received.set()
                if self.silent_after_quit:
                    await _drain_until_eof(reader)
                    return
                await _send(writer, "221 2.0.0 Bye")
                if self.open_after_quit:
                    await _until_the_client_leaves(reader, self.left_cleanly)
                return
            else:
                await _send(writer, "500 5.5.2 Error: command not recognized")

    def _ehlo_reply(self, upgraded: bool) -> str:
        extensions = list(self.ehlo_extensions)
        if upgraded and self.ehlo_extensions_after_tls is not None:
            extensions = list(self.ehlo_extensions_after_tls)
        if self.starttls_context is not None and not upgraded and "STARTTLS" not in extensions:
            extensions.append("STARTTLS")
        lines = [self.hostname, *extensions]
        return "\r\n".join(f"250{' ' if i == len(lines) - 1 else '-'}{text}" for i, text in enumerate(lines))

    async def _auth(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, arg: str) -> bool:
        """Run one AUTH exchange; False once the connection should end."""
        self.auth_attempts += 1
        mechanism, _, initial = arg.strip().partition(" ")
        mechanism = mechanism.upper()
        try:
            if mechanism == "PLAIN":
                blob = initial or await _smtp_challenge(reader, writer, "")
                parts = _b64decode(blob).split("\0")
                if len(parts) != 3:
                    raise ValueError("PLAIN needs authzid NUL authcid NUL password")
                username, password = parts[1], parts[2]
            elif mechanism == "LOGIN":
                username = _b64decode(initial or await _smtp_challenge(reader, writer, "Username:"))
                password = _b64decode(await _smtp_challenge(reader, writer, "Password:"))
            else:
                await _send(writer, "504 5.5.4 Unrecognized authentication type")
                return True
        except _AuthCancelled:
            await _send(writer, "501 5.7.0 Authentication aborted")
            return True
        except ValueError:
            await _send(writer, "501 5.5.2 Cannot decode response")
            return True
        self.logins.append((mechanism, username, password))
        if self.hang_after_auth:
            await _drain_until_eof(reader)
            return False
        await _send(writer, self.auth_reply)
        return True


smtp_script = SmtpScript  # the factory name the tests use


async def _smtp_challenge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, prompt: str) -> str:
    await _send(writer, "334 " + base64.b64encode(prompt.encode()).decode())
    line = await reader.readline()
    if not line:
        raise EOFError("client left during AUTH")
    answer = line.decode("utf-8", "replace").strip()
    if answer == "*":
        raise _AuthCancelled
    return answer


# -- IMAP --------------------------------------------------------------------------

_LITERAL_RE = re.compile(r"\{(\d+)(\+?)\}$")
_SELECT_UNTAGGED = (
    r"* FLAGS (\Answered \Flagged \Deleted \Seen \Draft)",
    "* 0 EXISTS",
    "* 0 RECENT",
    "* OK [UIDVALIDITY 1] UIDs valid",
    "* OK [UIDNEXT 1] Predicted next UID",
)


class ImapScript:
    """A minimal scripted IMAP4rev1 server; use an instance as a FakeServer handler.

    * ``capabilities``: advertised before STARTTLS (and on implicit TLS). Put
      "LOGINDISABLED" in it for that scenario: LOGIN is then refused with
      [PRIVACYREQUIRED] as Dovecot does. STARTTLS is added while
      ``starttls_context`` is set; after the upgrade ``capabilities_after_tls``
      is used, by default the same minus STARTTLS and LOGINDISABLED.
    * ``greeting``: default "* OK [CAPABILITY ...] fake ready"; "* BYE ..."
      is sent and the connection closed.
    * ``login_reply``: tagged reply tail for LOGIN / AUTHENTICATE PLAIN, e.g.
      "OK Logged in", "NO [AUTHENTICATIONFAILED] ...", "BAD Request is
      throttled. ..."; ``untagged_before_login_reply`` lines go first (e.g.
      "* NO [WEBALERT https://x] Web login required").
      ``hang_after_login``: read the credentials, never answer.
    * ``examine_reply`` / ``select_reply``: tagged reply tails; an OK one is
      preceded by the usual untagged lines for an empty INBOX.
    * ``injected_after_starttls``: raw bytes sent in the same write as the OK
      to STARTTLS, before the handshake, as a man in the middle would.
    * ``silent_after_logout``: read LOGOUT, never answer it, keep the
      connection until the client closes it; ``logout_received`` and ``gone``
      as SmtpScript's ``quit_received`` and ``gone``. ``open_after_logout``
      and ``left_cleanly`` as SmtpScript's ``open_after_quit``.
    * ``wait_for_pipelined_s``: before answering LOGIN, wait this long for the
      client's next command; ``sent_with_login`` records the commands that had
      arrived by then (a client that pipelines has sent EXAMINE already).
    """

    def __init__(
        self,
        *,
        capabilities: str = "IMAP4rev1 AUTH=PLAIN",
        capabilities_after_tls: str | None = None,
        starttls_context: ssl.SSLContext | None = None,
        greeting: str | None = None,
        login_reply: str = "NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)",
        untagged_before_login_reply: Sequence[str] = (),
        hang_after_login: bool = False,
        examine_reply: str = "OK [READ-ONLY] EXAMINE completed",
        select_reply: str = "OK [READ-WRITE] SELECT completed",
        injected_after_starttls: bytes = b"",
        silent_after_logout: bool = False,
        open_after_logout: bool = False,
        wait_for_pipelined_s: float = 0.0,
    ) -> None:
        self.capabilities = capabilities
        self.capabilities_after_tls = capabilities_after_tls
        self.starttls_context = starttls_context
        self.greeting = greeting
        self.login_reply = login_reply
        self.untagged_before_login_reply = list(untagged_before_login_reply)
        self.hang_after_login = hang_after_login
        self.examine_reply = examine_reply
        self.select_reply = select_reply
        self.injected_after_starttls = injected_after_starttls
        self.silent_after_logout = silent_after_logout
        self.open_after_logout = open_after_logout
        self.wait_for_pipelined_s = wait_for_pipelined_s
        self.commands: list[str] = []  # full command text, literals inlined
        self.logins: list[tuple[str, str]] = []  # (username, password)
        self.sent_with_login: list[str] = []  # commands that had arrived before LOGIN's answer
        self.logout_received = threading.Event()
        self.gone = threading.Event()
        self.left_cleanly = threading.Event()

    def _caps(self, upgraded: bool) -> str:
        if upgraded:
            if self.capabilities_after_tls is not None:
                return self.capabilities_after_tls
            dropped = ("STARTTLS", "LOGINDISABLED")
            return " ".join(c for c in self.capabilities.split() if c.upper() not in dropped)
        caps = self.capabilities
        if self.starttls_context is not None and "STARTTLS" not in caps.upper().split():
            caps += " STARTTLS"
        return caps

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._converse(reader, writer)
        finally:
            self.gone.set()

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upgraded = False
        implicit_tls = writer.get_extra_info("ssl_object") is not None
        greeting = self.greeting or f"* OK [CAPABILITY {self._caps(False)}] fake ready"
        await _send(writer, greeting)
        if greeting.upper().startswith("* BYE"):
            return
        authenticated = False
        queued: list[tuple[str, list[str]]] = []  # read early (pipelined), not yet answered
        while (parsed := queued.pop(0) if queued else await _read_imap_command(reader, writer)) is not None:
            raw, tokens = parsed
            self.commands.append(raw)
            if len(tokens) < 2:
                await _send(writer, f"{tokens[0] if tokens else '*'} BAD Error in IMAP command")
                continue
            tag, command, args = tokens[0], tokens[1].upper(), tokens[2:]
            if command == "CAPABILITY":
                caps = self._caps(upgraded)
                await _send(writer, f"* CAPABILITY {caps}\r\n{tag} OK CAPABILITY completed")
            elif command in ("NOOP", "CHECK", "CLOSE", "UNSELECT", "ENABLE"):
                await _send(writer, f"{tag} OK {command} completed")
            elif command == "ID":
                await _send(writer, f"* ID NIL\r\n{tag} OK ID completed")
            elif command == "STARTTLS":
                if self.starttls_context is None or upgraded or implicit_tls:
                    await _send(writer, f"{tag} BAD STARTTLS not available")
                    continue
                writer.write(
                    f"{tag} OK Begin TLS negotiation now\r\n".encode() + self.injected_after_starttls
                )
                await writer.drain()
                await writer.start_tls(self.starttls_context)
                upgraded = True
            elif command == "LOGIN":
                if len(args) != 2:
                    await _send(writer, f"{tag} BAD LOGIN expects username and password")
                    continue
                self.logins.append((args[0], args[1]))
                if "LOGINDISABLED" in self._caps(upgraded).upper().split():
                    await _send(
                        writer,
                        f"{tag} NO [PRIVACYREQUIRED] Plaintext authentication disallowed "
                        "on non-secure (SSL/TLS) connections.",
                    )
                    continue
                if self.wait_for_pipelined_s:
                    queued.extend(await self._pipelined(reader, writer))
                outcome = await self._answer_login(reader, writer, tag)
                if outcome is None:
                    return
                authenticated = outcome
            elif command == "AUTHENTICATE":
                outcome = await self._authenticate(reader, writer, tag, args)
                if outcome is None:
                    return
                authenticated = authenticated or outcome
            elif command in ("SELECT", "EXAMINE"):
                if not authenticated:
                    await _send(writer, f"{tag} BAD Not authenticated")
                    continue
                reply = self.examine_reply if command == "EXAMINE" else self.select_reply
                untagged = _SELECT_UNTAGGED if reply.upper().startswith("OK") else ()
                await _send(writer, "\r\n".join([*untagged, f"{tag} {reply}"]))
            elif command == "LOGOUT":
                self.logout_received.set()
                if self.silent_after_logout:
                    await _drain_until_eof(reader)
                    return
                await _send(writer, f"* BYE Logging out\r\n{tag} OK LOGOUT completed")
                if self.open_after_logout:
                    await _until_the_client_leaves(reader, self.left_cleanly)
                return
            else:
                await _send(writer, f"{tag} BAD Unknown command")

    async def _pipelined(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> list[tuple[str, list[str]]]:
        """The command sent after LOGIN without waiting for its answer, if one comes in time."""
        try:
            parsed = await asyncio.wait_for(_read_imap_command(reader, writer), self.wait_for_pipelined_s)
        except TimeoutError:
            return []
        if parsed is None:
            return []
        self.sent_with_login.append(parsed[0])
        return [parsed]

    async def _answer_login(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tag: str
    ) -> bool | None:
        """Send the scripted login outcome: True/False = logged in or not, None = hung up."""
        if self.hang_after_login:
            await _drain_until_eof(reader)
            return None
        lines = [*self.untagged_before_login_reply, f"{tag} {self.login_reply}"]
        await _send(writer, "\r\n".join(lines))
        return self.login_reply.upper().startswith("OK")

    async def _authenticate(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        tag: str,
        args: list[str],
    ) -> bool | None:
        if not args or args[0].upper() != "PLAIN":
            await _send(writer, f"{tag} NO [CANNOT] Unsupported authentication mechanism")
            return False
        if len(args) > 1:  # SASL-IR
            blob = args[1]
        else:
            await _send(writer, "+ ")
            line = await reader.readline()
            if not line:
                raise EOFError("client left during AUTHENTICATE")
            blob = line.decode("utf-8", "replace").strip()
        if blob == "*":
            await _send(writer, f"{tag} BAD Authentication aborted")
            return False
        try:
            parts = _b64decode(blob).split("\0")
        except ValueError:
            parts = []
        if len(parts) != 3:
            await _send(writer, f"{tag} BAD Invalid AUTHENTICATE PLAIN data")
            return False
        self.logins.append((parts[1], parts[2]))
        return await self._answer_login(reader, writer, tag)


imap_script = ImapScript  # the factory name the tests use


async def _read_imap_command(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> tuple[str, list[str]] | None:
    """Read one command, following {n} / {n+} literals; None at EOF."""
    raw: list[str] = []
    tokens: list[str] = []
    while True:
        line = await reader.readline()
        if not line:
            return None
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        literal = _LITERAL_RE.search(text)
        head = text[: literal.start()] if literal else text
        raw.append(head)
        tokens.extend(_imap_tokens(head))
        if literal is None:
            return "".join(raw), tokens
        if not literal.group(2):  # synchronizing literal: the client waits for "+"
            await _send(writer, "+ Ready for literal data")
        data = await reader.readexactly(int(literal.group(1)))
        value = data.decode("utf-8", "replace")
        raw.append(value)
        tokens.append(value)


def _imap_tokens(text: str) -> list[str]:
    """Split atoms and quoted strings (with \\ escapes); enough for LOGIN/SELECT."""
    tokens: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] == " ":
            i += 1
        elif text[i] == '"':
            i += 1
            chars = []
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                chars.append(text[i])
                i += 1
            i += 1
            tokens.append("".join(chars))
        else:
            end = text.find(" ", i)
            end = n if end < 0 else end
            tokens.append(text[i:end])
            i = end
    return tokens


# -- shared helpers ----------------------------------------------------------------


class _AuthCancelled(Exception):
    pass


async def _send(writer: asyncio.StreamWriter, text: str) -> None:
    """Write ``text`` with every line CRLF-terminated (scripts may use \\n or \\r\\n)."""
    lines = text.replace("\r\n", "\n").split("\n")
    writer.write("".join(line + "\r\n" for line in lines).encode("utf-8"))
    await writer.drain()


async def _drain_until_eof(reader: asyncio.StreamReader) -> None:
    while await reader.read(4096):
        pass


async def _until_the_client_leaves(reader: asyncio.StreamReader, left_cleanly: threading.Event) -> None:
    """Read until the client has gone; `left_cleanly` when it closed the connection, not reset it."""
    try:
        await _drain_until_eof(reader)
    except ConnectionResetError:
        return
    left_cleanly.set()


def _b64decode(text: str) -> str:
    try:
        return base64.b64decode(text, validate=True).decode("utf-8", "replace")
    except binascii.Error as exc:
        raise ValueError(str(exc)) from exc
