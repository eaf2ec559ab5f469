"""A mail server that answers one given reply at one given step, as a provider would.

``ReplyAt(protocol, step, reply)`` serves SMTP or IMAP far enough to reach `step` and answers
it with `reply`, everything before it succeeding. SMTP replies are sent as written ("{command}"
stands for the client's own command line, for servers that echo it). IMAP replies are lines:
untagged ones ("* ...") as they are, the last one tagged; a reply of untagged lines only (a BYE)
is sent and the connection closed, with no tagged answer.
"""

from __future__ import annotations

import asyncio

from jobs.steps import Step

CRLF = "\r\n"
SMTP_STEPS = frozenset({Step.GREETING, Step.EHLO, Step.AUTH})
IMAP_STEPS = frozenset({Step.GREETING, Step.LOGIN, Step.EXAMINE})


class ReplyAt:
    def __init__(self, protocol: str, step: Step, reply: str, *, hostname: str = "mx.example") -> None:
        allowed = SMTP_STEPS if protocol == "smtp" else IMAP_STEPS
        if step not in allowed:
            raise ValueError(f"{protocol} replies are served at {sorted(allowed)}, not {step}")
        self.protocol, self.step, self.reply, self.hostname = protocol, step, reply, hostname
        self.commands: list[str] = []

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.protocol == "smtp":
            await self._smtp(reader, writer)
        else:
            await self._imap(reader, writer)

    async def _smtp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.step is Step.GREETING:
            return await _send(writer, self.reply)
        await _send(writer, f"220 {self.hostname} ESMTP")
        while line := await reader.readline():
            command = line.decode("utf-8", "replace").rstrip(CRLF)
            self.commands.append(command)
            verb = command.partition(" ")[0].upper()
            step = {"EHLO": Step.EHLO, "AUTH": Step.AUTH}.get(verb)
            if step is self.step:
                await _send(writer, self.reply.replace("{command}", command))
            elif verb == "EHLO":
                await _send(writer, f"250-{self.hostname}{CRLF}250 AUTH PLAIN LOGIN")
            elif verb == "QUIT":
                return await _send(writer, "221 2.0.0 Bye")
            else:
                await _send(writer, "502 5.5.2 Error: command not recognized")

    async def _imap(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.step is Step.GREETING:
            return await _send(writer, self.reply)
        await _send(writer, "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready")
        while line := await reader.readline():
            command = line.decode("utf-8", "replace").rstrip(CRLF)
            self.commands.append(command)
            tag, _, rest = command.partition(" ")
            verb = rest.partition(" ")[0].upper()
            step = {"LOGIN": Step.LOGIN, "EXAMINE": Step.EXAMINE}.get(verb)
            if step is self.step:
                lines = self.reply.splitlines()
                if all(reply.startswith("* ") for reply in lines):
                    return await _send(writer, self.reply)  # and hang up, untagged
                await _send(writer, CRLF.join([*lines[:-1], f"{tag} {lines[-1]}"]))
            elif verb == "CAPABILITY":
                await _send(writer, f"* CAPABILITY IMAP4rev1 AUTH=PLAIN{CRLF}{tag} OK done")
            elif verb in ("LOGIN", "EXAMINE"):
                await _send(writer, f"{tag} OK {verb} completed")
            elif verb == "LOGOUT":
                return await _send(writer, f"* BYE Logging out{CRLF}{tag} OK LOGOUT completed")
            else:
                await _send(writer, f"{tag} BAD Unknown command")


async def _send(writer: asyncio.StreamWriter, text: str) -> None:
    lines = text.replace(CRLF, "\n").split("\n")
    writer.write("".join(line + CRLF for line in lines).encode())
    await writer.drain()
