"""Candidate fixes, applied inside bench processes only to measure before/after.

The project versions of these are proposed in the README's performance section; the bench
keeps them as monkeypatches so it can show both figures side by side.
"""

from __future__ import annotations

from typing import Any

# --- 1. memory: asyncio's TLS read buffer ---------------------------------------------------------
# CPython 3.11 Lib/asyncio/sslproto.py: SSLProtocol.max_size = 256 * 1024, and __init__ does
# `self._ssl_buffer = bytearray(self.max_size)` -- a zero-filled, so fully resident, 256 KiB per TLS
# connection (a check holds two). It is also the size of every SSLObject.read() in the copying
# read path these libraries use (plain Protocols). A TLS record carries at most 16 KiB of plaintext.


def shrink_ssl_buffer(size: int) -> None:
    import asyncio.sslproto
    asyncio.sslproto.SSLProtocol.max_size = size


# --- 2. CPU/throughput: arq's serial job start -----------------------------------------------------
# arq's Worker.start_jobs claims each job with WATCH/EXISTS/ZSCORE/MULTI+PSETEX/EXEC: four sequential
# Redis round trips per job, one job after another, on the same event loop as the checks. With the
# loop busy with TLS handshakes, each round trip waits a whole loop iteration, so a worker that
# should run C checks at once starts them slower than they finish and runs only a few at a time.
# The same claim as one atomic Lua script per job, all of a poll's jobs in one pipelined round trip:
CLAIM_LUA = """
if redis.call('exists', KEYS[1]) == 1 then return false end
local score = redis.call('zscore', KEYS[2], ARGV[1])
if not score or tonumber(score) > tonumber(ARGV[2]) then return false end
redis.call('psetex', KEYS[1], ARGV[3], '1')
return score
"""


async def batched_start_jobs(self: Any, job_ids: list[bytes]) -> None:
    from arq.constants import in_progress_key_prefix
    from arq.utils import timestamp_ms

    slots = self.max_jobs - self.job_counter
    batch = [j.decode() for j in job_ids[:max(slots, 0)]]
    if not batch:
        return
    for _ in batch:  # never blocks: job_counter < max_jobs and the semaphore holds max_jobs + 1
        await self.sem.acquire()
    self.job_counter += len(batch)
    now = timestamp_ms()
    lock_ms = int(self.in_progress_timeout_s * 1000)
    try:
        async with self.pool.pipeline(transaction=False) as pipe:
            for job_id in batch:
                pipe.eval(CLAIM_LUA, 2, in_progress_key_prefix + job_id, self.queue_name, job_id, now, lock_ms)
            scores = await pipe.execute()
    except BaseException:
        self.job_counter -= len(batch)
        for _ in batch:
            self.sem.release()
        raise
    for job_id, score in zip(batch, scores):
        if score is None:  # running elsewhere, finished, or deferred: as arq's own start_jobs
            self.job_counter -= 1
            self.sem.release()
            continue
        task = self.loop.create_task(self.run_job(job_id, int(float(score))))
        task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
        self.tasks[job_id] = task


def batch_job_starts() -> None:
    from worker.arq_settings import InboxWorker
    InboxWorker.start_jobs = batched_start_jobs  # type: ignore[method-assign]
