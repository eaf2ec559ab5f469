"""A TCP server on 127.0.0.1 whose asyncio loop runs in its own thread.

Its own thread, not the test's loop, so that it keeps serving while a test
blocks (sync tests, subprocess CLIs, a client that runs ``asyncio.run``) and
works the same from sync and async tests.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Self

from tests.servers.lifecycle import StartStop
from tests.servers.ports import LOOPBACK

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

# Ways a peer can vanish mid-conversation. Fault tests provoke them on purpose,
# so a handler ending with one of these is not a server bug.
PEER_GONE_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError,
    asyncio.IncompleteReadError,
    asyncio.LimitOverrunError,
    ssl.SSLError,
    EOFError,
    TimeoutError,
)

_START_STOP_TIMEOUT = 10.0
log = logging.getLogger(__name__)


class ThreadedTcpServer(StartStop):
    """Serve ``handler(reader, writer)`` per connection on 127.0.0.1:<free port>.

    ``connections`` counts accepted TCP connections, including those whose TLS
    handshake then fails. Unexpected handler exceptions are kept in ``errors``
    instead of being lost in the server thread.
    """

    host: str = LOOPBACK

    def __init__(
        self,
        handler: Handler,
        *,
        ssl_context: ssl.SSLContext | None = None,
        name: str = "tcp-server",
    ) -> None:
        self._handler = handler
        self._ssl_context = ssl_context
        self._name = name
        self.port: int = 0
        self.connections: int = 0
        self.errors: list[BaseException] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> Self:
        """Bind port 0 and start serving; returns self."""
        if self._thread is not None:
            raise RuntimeError(f"{self._name} already running")
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(self._on_loop_error)
        thread = threading.Thread(target=loop.run_forever, name=self._name, daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            asyncio.run_coroutine_threadsafe(self._listen(), loop).result(_START_STOP_TIMEOUT)
        except BaseException:
            self._shutdown_loop()
            raise
        return self

    def stop(self) -> None:
        """Stop listening, drop every open client connection, end the thread."""
        if self._loop is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(_START_STOP_TIMEOUT)
        finally:
            self._shutdown_loop()

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()

        def protocol() -> asyncio.StreamReaderProtocol:
            # What asyncio.start_server does, plus counting: this runs at TCP
            # accept, before any TLS handshake can fail.
            self.connections += 1
            return asyncio.StreamReaderProtocol(asyncio.StreamReader(loop=loop), self._serve)

        self._server = await loop.create_server(protocol, self.host, 0, ssl=self._ssl_context)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            await self._handler(reader, writer)
        except PEER_GONE_ERRORS:
            pass
        except asyncio.CancelledError:
            pass  # only stop() cancels, and it is about to close everything
        except Exception as exc:  # reported through .errors, not lost in this thread
            log.exception("%s: handler failed", self._name)
            self.errors.append(exc)
        finally:
            try:
                await _close_writer(writer)
            finally:
                # Only now: stop() must still find (and abort) a connection whose close stalls.
                self._tasks.discard(task)
                self._writers.discard(writer)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        # abort(), not close(): a peer that stopped reading must not stall teardown.
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def _shutdown_loop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(_START_STOP_TIMEOUT)
        loop.close()
        self._loop = self._thread = self._server = None

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, PEER_GONE_ERRORS):
            return  # e.g. a client rejecting our certificate mid-handshake
        log.error("%s: %s", self._name, context.get("message"), exc_info=exc)
        self.errors.append(exc if exc is not None else RuntimeError(str(context.get("message"))))


async def _close_writer(writer: asyncio.StreamWriter) -> None:
    """Close gracefully so a last reply (e.g. "221 Bye") is flushed, but never hang."""
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), 2.0)
    except (Exception, asyncio.CancelledError):  # noqa: BLE001 - peer gone, or stop() racing us
        writer.transport.abort()
