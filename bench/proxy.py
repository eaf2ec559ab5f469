"""A loopback TCP proxy that adds a fixed one-way delay in each direction.

    python -m bench.proxy --delay-ms 25 --map LISTEN_PORT:UPSTREAM_PORT [--map ...]

simulates a 50 ms round trip. How a real connection is timed, and what the proxy does:

  * TCP handshake: the client's SYN needs 0.5 RTT to arrive, the server accepts at 1.5 RTT after
    the client's SYN (SYN, SYN-ACK, ACK). The proxy accepts the client at once but connects
    upstream only after 3 x delay (= 1.5 RTT), so the server's greeting reaches the client at
    2 RTT and a client-first ClientHello (implicit TLS) reaches the server at 1.5 RTT, exactly as
    on a real link. (The client's connect() itself returns early; the time shows up in the
    greeting/TLS step instead, the check's total is right.)
  * data: every chunk read in one direction is written to the other side ``delay`` later.
    Chunks go through one FIFO per direction drained by a single timer, so ordering is preserved
    even when timers would tie; EOF and close travel the same queue, after the data before them.
  * flow control: if the receiving side's write buffer fills, reading from the sender pauses.

Runs on uvloop when available; one process comfortably moves thousands of small connections,
which keeps it from being the benchmark's bottleneck (its CPU is reported separately).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import signal
import socket
from typing import Any

from jobs.time_units import MS_PER_S

LOOPBACK = "127.0.0.1"
_EOF = object()
_CLOSE = object()


class _Pipe:
    """One direction: bytes read from ``src`` are written to ``dst.transport`` after ``delay`` s."""

    __slots__ = ("delay", "dst", "loop", "queue", "timer")

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float) -> None:
        self.loop = loop
        self.delay = delay
        self.queue: collections.deque[tuple[float, Any]] = collections.deque()
        self.timer: asyncio.TimerHandle | None = None
        self.dst: _Side | None = None

    def push(self, item: Any) -> None:
        due = self.loop.time() + self.delay
        self.queue.append((due, item))
        if self.timer is None and self.dst is not None and self.dst.transport is not None:
            self.timer = self.loop.call_at(due, self._drain)

    def kick(self) -> None:
        """The destination just became writable (upstream connected): start draining."""
        if self.queue and self.timer is None:
            self.timer = self.loop.call_at(self.queue[0][0], self._drain)

    def _drain(self) -> None:
        self.timer = None
        dst = self.dst
        assert dst is not None and dst.transport is not None
        now = self.loop.time()
        queue = self.queue
        while queue and queue[0][0] <= now + 0.0005:
            _, item = queue.popleft()
            if item is _EOF:
                try:
                    if dst.transport.can_write_eof():
                        dst.transport.write_eof()
                    else:
                        dst.transport.close()
                except OSError:  # that side is gone already (reset): nothing left to tell it
                    dst.transport.close()
            elif item is _CLOSE:
                dst.transport.close()
                queue.clear()
                return
            elif not dst.transport.is_closing():
                dst.transport.write(item)
        if queue:
            self.timer = self.loop.call_at(queue[0][0], self._drain)

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class _Side(asyncio.Protocol):
    """One socket of the pair. ``out`` carries what this side reads; ``peer`` is the other side."""

    def __init__(self, out: _Pipe) -> None:
        self.out = out
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.out.push(data)

    def eof_received(self) -> bool:
        self.out.push(_EOF)
        return True  # keep our write half open for what the peer still sends

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.out.push(_CLOSE)

    # The peer's transport is full: stop reading here until it drains.
    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None and not self.peer.closed:
            self.peer.transport.resume_reading()


class _Client(_Side):
    """The accepted side. Connects upstream after the handshake delay (3 x one-way delay)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float, upstream: tuple[str, int]) -> None:
        super().__init__(_Pipe(loop, delay))
        self.loop = loop
        self.delay = delay
        self.upstream = upstream

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.loop.create_task(self._connect())

    async def _connect(self) -> None:
        if self.delay:
            await asyncio.sleep(3 * self.delay)
        back = _Pipe(self.loop, self.delay)
        back.dst = self
        try:
            _, server = await self.loop.create_connection(lambda: _Side(back), *self.upstream)
        except OSError:
            if self.transport is not None:
                self.transport.close()
            return
        server.peer, self.peer = self, server  # type: ignore[attr-defined]
        self.out.dst = server  # type: ignore[assignment]
        self.out.kick()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)


async def listen(delay_s: float, upstream: int, host: str = LOOPBACK) -> tuple[asyncio.Server, int]:
    """One mapping in the running loop (benchmarks that run the proxy in their own process): the
    server, and the free port it listens on."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Client(loop, delay_s, (host, upstream)), host, 0)
    return server, server.sockets[0].getsockname()[1]


async def serve(
    delay_s: float, mappings: list[tuple[int, int]], ready: asyncio.Future | None = None, host: str = LOOPBACK
) -> None:
    loop = asyncio.get_running_loop()
    servers = []
    for listen, upstream in mappings:
        servers.append(
            await loop.create_server(
                lambda up=upstream: _Client(loop, delay_s, (host, up)),
                host,
                listen,
                backlog=4096,
                reuse_address=True,
            )
        )
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    print("ready", flush=True)
    await stop
    for server in servers:
        server.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--delay-ms", type=float, required=True, help="one-way delay per direction")
    parser.add_argument(
        "--map",
        action="append",
        required=True,
        metavar="LISTEN:UPSTREAM",
        help="listen on 127.0.0.1:LISTEN, forward to 127.0.0.1:UPSTREAM",
    )
    parser.add_argument("--no-uvloop", action="store_true")
    args = parser.parse_args(argv)
    mappings = [tuple(int(p) for p in m.split(":")) for m in args.map]
    if not args.no_uvloop:
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
    asyncio.run(serve(args.delay_ms / MS_PER_S, mappings))  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
