"""Fixtures shared by the recheck, pacing, registry and metrics tests: one redis-server per
session (tests.servers.redis), flushed before each test."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from tests.servers.ports import LOOPBACK
from tests.servers.redis import RedisServer
from tests.servers.tcp import ThreadedTcpServer

PIPE_CHUNK = 65_536


@pytest.fixture(scope="session")
def ops_redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(Path(tmp_path_factory.mktemp("ops-redis")))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def redis(ops_redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(ops_redis_server.url, decode_responses=True)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()


class ConnectionCounter:
    """Open connections through every proxy sharing it: the load the host actually sees."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open = 0
        self.peak = 0
        self.total = 0

    def enter(self) -> None:
        with self.lock:
            self.open += 1
            self.total += 1
            self.peak = max(self.peak, self.open)

    def leave(self) -> None:
        with self.lock:
            self.open -= 1


def counting_proxy(
    upstream_port: int, counter: ConnectionCounter
) -> tuple[ThreadedTcpServer, dict[str, bool]]:
    """A TCP forwarder to 127.0.0.1:upstream_port that counts open connections; set
    switch["drop"] to close new connections at once (a flaky network, for transient failures)."""
    switch = {"drop": False}

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        counter.enter()
        try:
            if switch["drop"]:
                return
            up_reader, up_writer = await asyncio.open_connection(LOOPBACK, upstream_port)
            try:
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            finally:
                up_writer.transport.abort()
        finally:
            counter.leave()

    return ThreadedTcpServer(forward, name=f"counting-proxy-{upstream_port}").start(), switch


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(PIPE_CHUNK):
            dst.write(data)
            await dst.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        dst.transport.abort()  # one side closed: the whole conversation is over
