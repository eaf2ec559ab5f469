"""The worker's Redis client, on a connection pool whose checkout does not serialise the checks.

redis-py 5.x's asyncio `ConnectionPool.get_connection` holds one pool-wide asyncio.Lock while it
health-checks the connection it took (`ensure_connection` reads under a zero timeout, which takes
a whole event-loop iteration), so every command of every job queues on that lock
(redis/redis-py#3692). `ConcurrentConnectionPool` takes the connection synchronously (so no other
task can take the same one) and checks it outside any lock, as redis-py's own
BlockingConnectionPool does. The pool is built with this class from the start; the override is
guarded by tests/worker/runtime/test_patched_internals.py. Behind Sentinel the same checkout runs
on redis-py's SentinelConnectionPool (redis_target.ConcurrentSentinelConnectionPool, which every
client of a Sentinel URL uses), so a worker of a Sentinel-watched master does not serialise either.
"""

from __future__ import annotations

from typing import Any

from arq.connections import ArqRedis
from redis.asyncio.connection import ConnectionPool

from worker.messages import envelope
from worker.runtime import redis_target
from worker.runtime.redis_target import ConcurrentSentinelConnectionPool
from worker.settings import Settings

# As arq's RedisSettings.conn_timeout: a Redis that does not accept within this is down.
CONNECT_TIMEOUT_S = 1.0


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
        sentinel_class=ConcurrentSentinelConnectionPool,  # the default; named for the tests' sake
        socket_connect_timeout=CONNECT_TIMEOUT_S,
    )
    return ArqRedis(
        pool,
        job_serializer=envelope.serialize,
        job_deserializer=envelope.deserialize_job,
        default_queue_name=settings.queue_name,
    )
