"""The worker's Redis client, on a connection pool whose checkout does not serialise the checks.

redis-py 5.x's asyncio `ConnectionPool.get_connection` holds one pool-wide asyncio.Lock while it
health-checks the connection it took (`ensure_connection` reads under a zero timeout, which takes
a whole event-loop iteration), so every command of every job queues on that lock
(redis/redis-py#3692). `ConcurrentConnectionPool` takes the connection synchronously (so no other
task can take the same one) and checks it outside any lock, as redis-py's own
BlockingConnectionPool does. The pool is built with this class from the start; the override is
guarded by tests/worker/runtime/test_patched_internals.py.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from arq.connections import ArqRedis
from redis.asyncio.connection import ConnectionPool

from worker.messages import envelope
from worker.settings import Settings

TLS_SCHEME = "rediss"
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


def tls_options(settings: Settings) -> dict[str, Any]:
    """redis-py's TLS arguments for a rediss:// URL, for every client of the settings' Redis:
    the server's certificate verified against INBOXCHECK_REDIS_CA_FILE (or the system's trust
    store) and its name against the URL's host, which redis-py does not check by default."""
    if urlparse(settings.redis_url).scheme != TLS_SCHEME:
        return {}
    options: dict[str, Any] = {"ssl_cert_reqs": "required", "ssl_check_hostname": True}
    if settings.redis_ca_file is not None:
        options["ssl_ca_certs"] = str(settings.redis_ca_file)
    return options


async def connect(settings: Settings) -> ArqRedis:
    """The worker's client of `settings.redis_url`, as arq's create_pool makes it (JSON job
    (de)serialisers, the queue as default), on a ConcurrentConnectionPool; raises when Redis does
    not answer a PING."""
    pool = ConcurrentConnectionPool.from_url(
        settings.redis_url, socket_connect_timeout=CONNECT_TIMEOUT_S, **tls_options(settings)
    )
    redis = ArqRedis(
        pool,
        job_serializer=envelope.serialize,
        job_deserializer=envelope.deserialize_job,
        default_queue_name=settings.queue_name,
    )
    try:
        await redis.ping()
    except BaseException:
        await redis.aclose(close_connection_pool=True)
        raise
    return redis
