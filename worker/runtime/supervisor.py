"""`inboxcheck worker`: run arq's worker and keep it running across Redis restarts.

arq alone exits when its Redis connection drops. Here a supervisor builds a fresh arq worker
on a fresh pool each time, reconnecting with a doubling backoff. On SIGTERM or SIGINT the
worker stops taking jobs, lets in-flight checks finish for up to shutdown_grace seconds, then
cancels the rest, which arq hands back to the queue (the job stays queued, its lock removed).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Any

import structlog
from arq.connections import ArqRedis
from redis.exceptions import RedisError

from worker.logs import install_safe_exception_handler
from worker.runtime import heartbeat, local_redis, redis_pool, redis_target
from worker.runtime.arq_settings import check_settings, quiet_arq_job_lines, worker_kwargs
from worker.runtime.inbox_worker import InboxWorker
from worker.settings import Settings

log = structlog.get_logger("inboxcheck.worker")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# How often a stopping worker looks whether its in-flight jobs are done.
DRAIN_POLL_S = 0.05


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stopping = asyncio.Event()
        self.worker: InboxWorker | None = None

    def request_stop(self, signum: int) -> None:
        log.info(
            "worker_stopping",
            signal=signal.Signals(signum).name,
            in_flight=len(self.worker.tasks) if self.worker else 0,
            grace_s=self.settings.shutdown_grace,
        )
        self.stopping.set()
        if self.worker is not None:
            self.worker.allow_pick_jobs = False  # stop taking jobs at once

    async def run(self) -> None:
        install_safe_exception_handler()
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self.request_stop, sig)
        async with heartbeat.beating(self.settings, "worker"):
            await self._supervise()
        log.info("worker_stopped")

    async def _supervise(self) -> None:
        delay = self.settings.reconnect_delay
        while not self.stopping.is_set():
            try:
                pool = await redis_pool.connect(self.settings)
            except (TimeoutError, OSError, RedisError) as exc:
                redis_target.log_connect_failure(log, self.settings.redis_url, exc, delay)
                await self._pause(delay)
                delay = min(delay * 2, self.settings.reconnect_max_delay)
                continue
            delay = self.settings.reconnect_delay
            await self._run_one(pool)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    async def _run_one(self, pool: ArqRedis) -> None:
        worker = InboxWorker(**worker_kwargs(self.settings), redis_pool=pool, handle_signals=False)
        self.worker = worker
        main = asyncio.ensure_future(worker.main())
        worker.main_task = main  # so arq's handle_sig cancels it
        stop = asyncio.ensure_future(self.stopping.wait())
        log.info("worker_started", queue=self.settings.queue_name, max_jobs=self.settings.max_jobs)
        await asyncio.wait({main, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if self.stopping.is_set():
            worker.allow_pick_jobs = False
            await self._drain(worker)
        elif main.done() and not main.cancelled() and main.exception() is not None:
            log.warning(
                "redis_connection_lost", error=type(main.exception()).__name__, in_flight=len(worker.tasks)
            )
        # close(): cancels what is still running (arq puts it back in the queue) and the main loop.
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await worker.close()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await main
        with contextlib.suppress(Exception):
            await pool.aclose(close_connection_pool=True)
        self.worker = None

    async def _drain(self, worker: InboxWorker) -> None:
        deadline = asyncio.get_running_loop().time() + self.settings.shutdown_grace
        while any(not t.done() for t in worker.tasks.values()):
            if asyncio.get_running_loop().time() >= deadline:
                log.info("handing_back_jobs", count=sum(not t.done() for t in worker.tasks.values()))
                return
            await asyncio.sleep(DRAIN_POLL_S)


def _run(main: Any) -> None:
    """On uvloop when it is installed: less worker CPU per check than asyncio's loop (bench/)."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)


def run_worker(settings: Settings) -> int:
    check_settings(settings)
    heartbeat.check_writable(settings, "worker")
    quiet_arq_job_lines()
    url = local_redis.with_local_password(settings.redis_url, settings.local_redis_dir)
    local = local_redis.start_if_needed(url, settings.local_redis_dir) if settings.start_local_redis else None
    if local is not None:
        url = local.url
    try:
        _run(Supervisor(settings.model_copy(update={"redis_url": url})).run())
    finally:
        if local is not None:
            local.stop()
    return 0
