"""TCP forwarders: one that announces a different client address (HAProxy PROXY v1), one that
delays every byte (a slow Redis, `delay_forwarder`), one that holds connections past a number
until the test lets them on (`gated_forwarder`).

The first, why: Dovecot treats a client whose IP equals the server's IP as "secured", so
on 127.0.0.1 -> 127.0.0.1 it never advertises LOGINDISABLED and happily takes
plaintext LOGIN before STARTTLS. Forwarding through this handler into a
``haproxy = yes`` listener makes Dovecot see the client as ``claimed_ip``
(127.0.0.2: still loopback, and only ever written into the header; no packet
goes there), so it behaves as it does for a real remote client.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Awaitable, Callable

from tests.servers.ports import LOOPBACK
from tests.servers.tcp import PEER_GONE_ERRORS, Handler

CLAIMED_CLIENT_IP = "127.0.0.2"
_CHUNK = 64 * 1024


def proxy_protocol_forwarder(
    target_port: int,
    *,
    target_host: str = LOOPBACK,
    claimed_ip: str = CLAIMED_CLIENT_IP,
) -> Handler:
    """A ThreadedTcpServer handler piping each client to target, PROXY header first."""

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A refused upstream ends the handler, so the client sees the server as down.
        up_reader, up_writer = await asyncio.open_connection(target_host, target_port)
        try:
            client_port = writer.get_extra_info("peername")[1]
            header = f"PROXY TCP4 {claimed_ip} {target_host} {client_port} {target_port}\r\n"
            up_writer.write(header.encode("ascii"))
            await _relay(reader, writer, up_reader, up_writer)
        finally:
            up_writer.transport.abort()

    return forward


class Gate:
    """Lets the first `passes` connections straight on and holds every later one, before it
    reaches its target, until open(): work cut in two at a known point, whatever the machine's
    load. `held` counts the connections held so far (read from any thread). A held connection
    goes on after `limit_s` even if the gate never opens, so no test hangs on it."""

    def __init__(self, passes: int, limit_s: float) -> None:
        self.passes = passes
        self.limit_s = limit_s
        self.held = 0
        self._seen = 0
        self._open = threading.Event()

    def open(self) -> None:
        self._open.set()

    async def wait_turn(self) -> None:
        # Only the server's own loop thread counts, so the counts need no lock.
        self._seen += 1
        if self._seen <= self.passes or self._open.is_set():
            return
        self.held += 1
        await asyncio.to_thread(self._open.wait, self.limit_s)


def gated_forwarder(target_port: int, gate: Gate, *, target_host: str = LOOPBACK) -> Handler:
    """A ThreadedTcpServer handler piping each client to target once `gate` lets it on; the
    client meanwhile is connected and hears nothing."""

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await gate.wait_turn()
        up_reader, up_writer = await asyncio.open_connection(target_host, target_port)
        try:
            await _relay(reader, writer, up_reader, up_writer)
        finally:
            up_writer.transport.abort()

    return forward


async def _relay(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
    pipe: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]] | None = None,
) -> None:
    pipe = pipe or _pipe
    pipes = [
        asyncio.create_task(pipe(reader, up_writer)),
        asyncio.create_task(pipe(up_reader, writer)),
    ]
    try:
        # Either side closing ends the session: neither SMTP nor IMAP has a use for half-close.
        await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pipe in pipes:
            pipe.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(_CHUNK):
            dst.write(data)
            await dst.drain()
    except PEER_GONE_ERRORS:
        pass


def delay_forwarder(target_port: int, delay_s: float, *, target_host: str = LOOPBACK) -> Handler:
    """A ThreadedTcpServer handler piping each client to target, every chunk held `delay_s` in
    each direction (in order): a slow network to a slow Redis."""

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(target_host, target_port)
        try:
            await _relay(
                reader, writer, up_reader, up_writer, functools.partial(_delayed_pipe, delay_s=delay_s)
            )
        finally:
            up_writer.transport.abort()

    return forward


async def _delayed_pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, delay_s: float) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            await asyncio.sleep(max(0.0, due - loop.time()))
            if not data:
                return
            dst.write(data)
            await dst.drain()

    delivery = asyncio.create_task(deliver())
    try:
        while True:
            data = await src.read(_CHUNK)
            queue.put_nowait((loop.time() + delay_s, data))
            if not data:
                break
        await delivery
    except PEER_GONE_ERRORS:
        pass
    finally:
        delivery.cancel()
