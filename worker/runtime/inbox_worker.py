"""InboxWorker: arq's Worker with the four changes this job needs, and nothing else of arq's
internals touched. Each change is guarded by tests/worker/runtime/test_patched_internals.py,
which fails with what to re-check when arq changes the code it replaces.

- `start_jobs`: arq claims each job with WATCH / EXISTS / ZSCORE / MULTI PSETEX EXEC, four round
  trips per job, one job after another in the poll loop, so jobs start no faster than one per few
  loop iterations whatever max_jobs says. Here the same claim is one atomic script per job
  (CLAIM_JOB), every job of a poll in one pipelined round trip, with arq's own bookkeeping
  (semaphore, job counter, tasks) kept exactly as arq keeps it. Jobs this worker runs, or whose
  claim was refused a moment ago, are not claimed again at every poll.
- The in-progress lock is sized for this job (IN_PROGRESS_MARGIN_S), not arq's fixed +10 s.
- A per-process liveness key written with arq's health record (`inboxcheck health`).
- While Redis refuses writes (maxmemory, a read-only replica): `finish_job`, arq's bookkeeping
  after a job, waits and tries again, up to the in-progress lock's life, rather than failing and
  leaving the job to be run again once the lock expires; a refused claim or health record leaves
  the jobs queued and the poll loop running, where arq would end it (and with it every job in
  flight, their verdicts lost).
- Behind Sentinel, `finish_job` takes a validation job off the queue only where its event is:
  in one transaction that first sees the job's done mark (WATCH). In a failover the event can be
  appended on the old master after the promotion (and lost) while the finish reaches the new
  one, which would leave the job neither queued nor reported; here it runs again instead.
- Waiting for work: arq sleeps poll_delay between polls, so a job enqueued on an idle worker
  waits half of it on average. Here arq's own sleep is zero and the poll loop waits up to the
  poll delay for a wake-up: a task blocks on the queue's wake list (keys.wake_key), which every
  producer pushes to with its job (scripts.ENQUEUE_JOB), so the job starts at once, and an idle
  worker still polls as often as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from typing import Any

import structlog
from arq.constants import (
    abort_jobs_ss,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)
from arq.utils import timestamp_ms, to_ms
from arq.worker import Worker
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.exceptions import NoScriptError, RedisError, WatchError

from jobs.time_units import MS_PER_S
from worker.messages import keys
from worker.runtime.write_refusals import WriteRefusals, refusal, retried_while_refused

log = structlog.get_logger("inboxcheck.worker")

# A crashed worker's in-progress lock must outlast the longest run of the job it held (so no
# second worker starts it while the first still runs), and not much more (so the job is handed
# back soon). The job itself cannot outrun job_timeout.
IN_PROGRESS_MARGIN_S = 2.0
# A job whose claim was refused (running on another worker) is not tried again for this long: a
# running job is listed by every poll, 20 a second, and would cost a claim each time. Should that
# worker die, its lock lasts far longer anyway (job timeout + IN_PROGRESS_MARGIN_S).
REFUSED_SKIP_S = 1.0
# Refusals are forgotten once they outnumber max_jobs this many times over.
REFUSED_KEPT_FACTOR = 4
# The longest one BLPOP on the wake list blocks before it asks again (a whole second: the list's
# wait is not the poll delay, which the poll loop times itself).
WAKE_BLOCK_S = 1
# A worker's liveness key outlives this many health-check intervals: one slow poll is not death.
LIVENESS_TTL_FACTOR = 3

# KEYS[1] the job's in-progress key, KEYS[2] the queue. ARGV: job id, now (ms), lock ms.
# arq's own claim, atomically: not running elsewhere, still queued, due; then take the lock.
# Returns the job's score, or nothing when it is not this worker's to run.
CLAIM_JOB = """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not score or tonumber(score) > tonumber(ARGV[2]) then return false end
redis.call('PSETEX', KEYS[1], ARGV[3], '1')
return score
"""


class InboxWorker(Worker):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.in_progress_timeout_s = self.job_timeout_s + IN_PROGRESS_MARGIN_S
        self._claim_sha: str | None = None
        self._writes = WriteRefusals()  # the job runtime's, once the worker has started
        # Job id -> until when (loop time) it is not tried again, after a claim was refused.
        self._refused_until: dict[str, float] = {}
        # arq's poll loop sleeps poll_delay_s minus the iteration's time; the iteration itself
        # now waits (for a wake-up, up to the poll delay), so arq's sleep is none.
        self.wait_for_work_s = self.poll_delay_s
        self.poll_delay_s = 0.0
        self._wake_key = keys.wake_key(self.queue_name)
        self._woken = asyncio.Event()
        self._waker: asyncio.Future[None] | None = None
        self.ctx["recorded"] = {}

    @property
    def writes(self) -> WriteRefusals:
        runtime = self.ctx.get("runtime")
        return runtime.writes if runtime is not None else self._writes

    def _refused(self, exc: BaseException) -> bool:
        """Whether `exc` is Redis refusing a write; noted (and logged once) when it is."""
        code = refusal(exc) if isinstance(exc, RedisError) else None
        if code is not None:
            self.writes.refused(code)
        return code is not None

    async def finish_job(
        self,
        job_id: str,
        finish: bool,
        result_data: bytes | None,
        result_timeout_s: float | None,
        keep_result_forever: bool,
        incr_score: int | None,
        keep_in_progress: float | None,
    ) -> None:
        """arq's finish_job (the result, the queue, the in-progress lock in one transaction), tried
        again while Redis refuses writes: the job's event is written (or waits the same way), and
        a job run again after its lock expired would only find it."""
        done_key = self.ctx["recorded"].pop(job_id, None)
        behind_sentinel = isinstance(self.pool.connection_pool, SentinelConnectionPool)
        if finish and done_key is not None and behind_sentinel:

            def where_recorded() -> Any:
                return self._finish_where_recorded(
                    job_id, done_key, result_data, result_timeout_s, keep_result_forever, keep_in_progress
                )

            if await retried_while_refused(where_recorded, self.writes, self.in_progress_timeout_s):
                return
            log.warning(
                "event_lost_in_failover",
                job_id=job_id,
                note="the job's event is not on the Redis master reached now; the job runs again",
            )
            finish, result_data, keep_in_progress = False, None, None  # only its lock goes

        arqs = super().finish_job
        args = (job_id, finish, result_data, result_timeout_s, keep_result_forever, incr_score)
        await retried_while_refused(
            lambda: arqs(*args, keep_in_progress), self.writes, self.in_progress_timeout_s
        )

    async def _finish_where_recorded(
        self,
        job_id: str,
        done_key: str,
        result_data: bytes | None,
        result_timeout_s: float | None,
        keep_result_forever: bool,
        keep_in_progress: float | None,
    ) -> bool:
        """arq's finish_job with finish=True, in a transaction on the connection that first sees
        the job's done mark; False, with nothing written, when that Redis has no done mark."""
        async with self.pool.pipeline(transaction=True) as tr:
            try:
                await tr.watch(done_key)
                if not await tr.exists(done_key):
                    return False
                tr.multi()
                in_progress_key = in_progress_key_prefix + job_id
                delete_keys = [retry_key_prefix + job_id, job_key_prefix + job_id]
                if keep_in_progress is None:
                    delete_keys.append(in_progress_key)
                else:
                    tr.pexpire(in_progress_key, to_ms(keep_in_progress))
                if result_data:
                    expire = None if keep_result_forever else result_timeout_s
                    tr.set(result_key_prefix + job_id, result_data, px=to_ms(expire))
                tr.zrem(abort_jobs_ss, job_id)
                tr.zrem(self.queue_name, job_id)
                tr.delete(*delete_keys)
                await tr.execute()
            except WatchError:
                return False  # the mark changed under the transaction: run the job again to be sure
        return True

    async def _poll_iteration(self) -> None:
        """arq's poll (start due jobs, heartbeat), then wait up to the poll delay for a wake-up."""
        await super()._poll_iteration()
        if self._waker is None:
            self._waker = asyncio.ensure_future(self._take_wake_ups())
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._woken.wait(), self.wait_for_work_s)
        self._woken.clear()

    async def _take_wake_ups(self) -> None:
        """Block on the wake list (on a connection of its own) and wake the poll loop. The poll
        delay is timed here, not by BLPOP's timeout, which Redis resolves only at its own 10 Hz
        tick. A worker with no free slot leaves the token to one that has."""
        while True:
            if not (self.allow_pick_jobs and self.job_counter < self.max_jobs):
                await asyncio.sleep(self.wait_for_work_s)
                continue
            try:
                if await self.pool.blpop([self._wake_key], timeout=WAKE_BLOCK_S):  # type: ignore[misc]
                    self._woken.set()
            except RedisError:
                # The poll loop meets the same outage and the supervisor reconnects; until then
                # the worker just polls.
                await asyncio.sleep(self.wait_for_work_s)

    async def record_health(self) -> None:
        """arq's health record, plus this process's own liveness key (what `inboxcheck health`
        checks for this host): written from the same poll loop, so a hung worker lets it expire
        even while other workers keep the queue's key alive. Skipped while Redis refuses writes."""
        before = self._last_health_check
        try:
            await super().record_health()
            if self._last_health_check != before:  # arq wrote its record this round
                ttl_ms = int(self.health_check_interval * LIVENESS_TTL_FACTOR * MS_PER_S)
                await self.pool.psetex(
                    keys.worker_alive_key(socket.gethostname(), os.getpid()), ttl_ms, self.queue_name
                )
        except RedisError as exc:
            if not self._refused(exc):
                raise

    async def close(self) -> None:
        """arq deletes its health key when it closes: so does this process with its own."""
        try:
            await self._close()
        finally:
            # After the pool's last commands: a BLPOP cut short leaves its connection to be
            # made again, which a closing worker may no longer be allowed to do.
            if self._waker is not None:
                self._waker.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._waker

    async def _close(self) -> None:
        if getattr(self, "_pool", None) is not None:
            with contextlib.suppress(Exception):
                await self.pool.delete(keys.worker_alive_key(socket.gethostname(), os.getpid()))
        await super().close()

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """arq's start_jobs, same claim and bookkeeping, every job of the poll in one pipeline."""
        # A job stays in the queue while it runs, so every poll lists the running ones again: one
        # this worker runs, or that another worker's lock refused a moment ago, is skipped rather
        # than claimed again only to be refused (arq would try each, every poll).
        now = self.loop.time()
        if len(self._refused_until) > REFUSED_KEPT_FACTOR * self.max_jobs:
            self._refused_until = {
                job_id: until for job_id, until in self._refused_until.items() if until > now
            }
        listed = [job_id.decode() for job_id in job_ids]
        free = max(self.max_jobs - self.job_counter, 0)
        batch = [
            job_id
            for job_id in listed
            if job_id not in self.tasks and self._refused_until.get(job_id, 0) <= now
        ][:free]
        if not batch:
            return
        for _ in batch:  # never waits: the semaphore holds max_jobs + 1 and the batch fits
            await self.sem.acquire()
        self.job_counter += len(batch)
        try:
            scores = await self._claim(batch)
        except BaseException as exc:
            self.job_counter -= len(batch)
            for _ in batch:
                self.sem.release()
            if self._refused(exc):
                return  # nothing claimed: the jobs stay queued until Redis takes writes again
            raise
        if any(score is not None for score in scores):  # a claim wrote its lock: Redis takes writes
            self.writes.accepted()
        for job_id, score in zip(batch, scores, strict=True):
            if score is None:  # running elsewhere, finished, or deferred meanwhile: as arq skips it
                self._refused_until[job_id] = now + REFUSED_SKIP_S
                self.job_counter -= 1
                self.sem.release()
                continue
            task = self.loop.create_task(self.run_job(job_id, int(float(score))))
            task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
            self.tasks[job_id] = task

    async def _claim(self, batch: list[str]) -> list[Any]:
        """CLAIM_JOB for every job of the batch in one pipelined round trip, by EVALSHA; the
        script is loaded once, and again only if Redis lost it (a restart, SCRIPT FLUSH), in
        which case no claim of the batch ran."""
        now, lock_ms = str(timestamp_ms()), str(int(self.in_progress_timeout_s * MS_PER_S))
        for _ in range(2):
            if self._claim_sha is None:
                self._claim_sha = await self.pool.script_load(CLAIM_JOB)
            try:
                async with self.pool.pipeline(transaction=False) as pipe:
                    for job_id in batch:
                        pipe.evalsha(
                            self._claim_sha,
                            2,
                            keys.in_progress_key(job_id),
                            self.queue_name,
                            job_id,
                            now,
                            lock_ms,
                        )
                    return list(await pipe.execute())
            except NoScriptError:
                self._claim_sha = None
        raise NoScriptError("CLAIM_JOB could not be loaded")
