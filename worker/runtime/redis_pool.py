"""The worker's Redis client, on a connection pool whose checkout does not serialise the checks.

redis-py 5.x's asyncio `ConnectionPool.get_connection` holds one pool-wide asyncio.Lock while it
health-checks the connection it took (`ensure_connection` reads under a zero timeout, which takes
a whole event-loop iteration), so every command of every job queues on that lock
(redis/redis-py#3692). `ConcurrentConnectionPool` takes the connection synchronously (so no other
task can take the same one) and checks it outside any lock, as redis-py's own
BlockingConnectionPool does. The pool is built with this class from the start; the override is
guarded by tests/worker/runtime/test_patched_internals.py. Behind Sentinel the same checkout runs
on redis-py's SentinelConnectionPool (which only changes how a connection finds the master), so a
worker of a Sentinel-watched master does not serialise either.
"""

from __future__ import annotations

import time
from typing import Any

from arq.connections import ArqRedis
from redis.asyncio.connection import ConnectionPool
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from worker.messages import envelope
from worker.runtime import redis_target
from worker.settings import Settings

# Kept here for producers that import it from this module (README).
tls_options = redis_target.tls_options
# As arq's RedisSettings.conn_timeout: a Redis that does not accept within this is down.
CONNECT_TIMEOUT_S = 1.0
# How often the worker asks the sentinels whether the master moved (one SENTINEL MASTERS).
MASTER_CHECK_INTERVAL_S = 1.0


class ConcurrentConnectionPool(ConnectionPool):
    """ConnectionPool whose checkout does not hold a pool-wide lock across an await."""

    async def get_connection(self, command_name: Any = None, *keys: Any, **options: Any) -> Any:
        connection = self.get_available_connection()
        try:
            await self.ensure_connection(connection)
        except BaseException:
            await self.release(connection)
            raise
        return connection


class ConcurrentSentinelConnectionPool(SentinelConnectionPool):
    """SentinelConnectionPool with the same lock-free checkout, which also follows a new master
    while the old one still takes writes.

    redis-py asks the sentinels only when it opens a connection, and drops a connection only when
    the server answers READONLY. After `SENTINEL FAILOVER` (or a partition) the old master goes on
    taking writes until the sentinels demote it, about ten seconds later, and everything written
    there meanwhile is lost when it resyncs. So at most every MASTER_CHECK_INTERVAL_S a checkout
    asks the sentinels where the master is, and a connection to any other address is closed
    before use (it reconnects to the master the sentinels name).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._next_master_check = 0.0

    async def get_connection(self, command_name: Any = None, *keys: Any, **options: Any) -> Any:
        if time.monotonic() >= self._next_master_check:
            # Set before the await: one checkout asks, the others go on meanwhile.
            self._next_master_check = time.monotonic() + MASTER_CHECK_INTERVAL_S
            try:
                await self.get_master_address()  # on a change, closes the idle connections
            except (RedisConnectionError, RedisTimeoutError):
                pass  # no sentinel answers: the master connected to is the best known
        connection = self.get_available_connection()
        try:
            where = (connection.host, connection.port)
            if connection.is_connected and self.master_address not in (None, where):
                await connection.disconnect()  # it was in use when the master changed
            await self.ensure_connection(connection)
        except BaseException:
            await self.release(connection)
            raise
        return connection


async def connect(settings: Settings) -> ArqRedis:
    """The worker's client of `settings.redis_url`, as arq's create_pool makes it (JSON job
    (de)serialisers, the queue as default), on a concurrent pool (of the Sentinel master for a
    Sentinel URL); raises when Redis does not answer a PING."""
    redis = client(settings)
    try:
        await redis.ping()
    except BaseException:
        await redis.aclose(close_connection_pool=True)
        raise
    return redis


def client(settings: Settings) -> ArqRedis:
    """The worker's ArqRedis on a concurrent pool, not yet connected."""
    pool = redis_target.connection_pool(
        settings,
        direct_class=ConcurrentConnectionPool,
        sentinel_class=ConcurrentSentinelConnectionPool,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
    )
    return ArqRedis(
        pool,
        job_serializer=envelope.serialize,
        job_deserializer=envelope.deserialize_job,
        default_queue_name=settings.queue_name,
    )
