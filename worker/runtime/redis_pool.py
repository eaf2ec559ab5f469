"""The worker's Redis pool and its job claim, built so that Redis never paces the checks.

Two serial paths capped a worker near 25-40 checks/s whatever its max_jobs (bench/, README
"Performance"), with the event loop mostly idle between them:

1. redis-py 5.3's asyncio ConnectionPool.get_connection holds one pool-wide asyncio.Lock while it
   health-checks the connection it took (`can_read_destructive`: a read under a zero timeout,
   which takes a whole event-loop iteration). Every command of every job queues on that lock,
   so the process runs about one Redis command per loop iteration (redis/redis-py#3692). With
   ~17 commands per job, 50-80 of a worker's 100 jobs were waiting there at any moment.
   `ConcurrentConnectionPool` takes the connection synchronously and checks it outside the lock,
   as redis-py's own BlockingConnectionPool does; each caller checks only the connection it alone
   now holds.
2. arq's Worker.start_jobs claims each job with WATCH / EXISTS / ZSCORE / MULTI PSETEX EXEC, four
   round trips per job, one job after another in the poll loop, so jobs started no faster than
   about one per four loop iterations and only ~9 ran at once. `claim_jobs` makes the same claim
   as one atomic script per job, every job of a poll in one pipelined round trip.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import ConnectionPool

# KEYS[1] the job's in-progress key, KEYS[2] the queue. ARGV: job id, now (ms), lock ms.
# arq's own claim, atomically: not running elsewhere, still queued, due; then take the lock.
CLAIM_JOB = """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not score or tonumber(score) > tonumber(ARGV[2]) then return false end
redis.call('PSETEX', KEYS[1], ARGV[3], '1')
return score
"""


class ConcurrentConnectionPool(ConnectionPool):
    """ConnectionPool whose checkout does not hold a pool-wide lock across an await."""

    async def get_connection(self, command_name: Any = None, *keys: Any, **options: Any) -> Any:
        # Taking a connection is synchronous, so no other task can take the same one.
        connection = self.get_available_connection()
        try:
            await self.ensure_connection(connection)
        except BaseException:
            await self.release(connection)
            raise
        return connection


def concurrent(redis: Redis) -> Redis:
    """`redis` with its plain ConnectionPool made concurrent (other pool types left as they are)."""
    pool = redis.connection_pool
    if type(pool) is ConnectionPool:
        pool.__class__ = ConcurrentConnectionPool  # adds no state: same object, other checkout
    return redis
