"""`inboxcheck webhooks`: the dispatcher kept running across Redis restarts, stopped by signals.

As the worker's supervisor does: a fresh connection and dispatcher each time Redis comes back,
reconnecting with a doubling backoff. Whatever was in flight when Redis went away is in the
ledger, leased: it comes due again and is sent (at least once). On SIGTERM or SIGINT nothing new
starts, POSTs in flight may finish for the request timeout, and the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket

import structlog
from prometheus_client import start_http_server
from redis.asyncio import Redis
from redis.exceptions import RedisError

from worker.logs import install_safe_exception_handler
from worker.runtime import heartbeat, local_redis, redis_target
from worker.settings import Settings
from worker.webhooks.dispatcher import Dispatcher
from worker.webhooks.endpoints import registry_for, sealer_required
from worker.webhooks.metrics import WebhookMetrics

log = structlog.get_logger("inboxcheck.webhooks")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
CONNECT_TIMEOUT_S = 1.0


def consumer_name() -> str:
    """One consumer per process run: a restarted process's unfinished reads are taken over by
    XCLAIM, and two processes on one host never share a name."""
    return f"{socket.gethostname()}-{os.getpid()}"


class WebhookProcess:
    def __init__(
        self, settings: Settings, metrics: WebhookMetrics | None = None, consumer: str | None = None
    ) -> None:
        self.settings = settings
        self.metrics = metrics or WebhookMetrics()
        self.stopping = asyncio.Event()
        self.consumer = consumer or consumer_name()

    async def run(self) -> None:
        install_safe_exception_handler()
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self.stopping.set)
        try:
            async with heartbeat.beating(self.settings, "webhooks"):
                await self._supervise()
        finally:
            for sig in STOP_SIGNALS:
                loop.remove_signal_handler(sig)
        log.info("webhooks_stopped")

    async def _supervise(self) -> None:
        delay = self.settings.reconnect_delay
        log.info("webhooks_started", consumer=self.consumer, group=self.settings.webhook_group)
        while not self.stopping.is_set():
            redis = redis_target.client(self.settings, socket_connect_timeout=CONNECT_TIMEOUT_S)
            try:
                await redis.ping()
            except (RedisError, OSError) as exc:
                await redis.aclose()
                redis_target.log_connect_failure(log, self.settings.redis_url, exc, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), delay)
                delay = min(delay * 2, self.settings.reconnect_max_delay)
                continue
            delay = self.settings.reconnect_delay
            try:
                await self._run_one(redis)
            finally:
                await redis.aclose()

    async def _run_one(self, redis: Redis) -> None:
        registry = registry_for(redis, self.settings.secret_key)
        dispatcher = Dispatcher(self.settings, redis, registry, self.metrics, self.consumer)
        main = asyncio.ensure_future(dispatcher.run())
        stop = asyncio.ensure_future(self.stopping.wait())
        await asyncio.wait({main, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if main.done() and not main.cancelled() and main.exception() is not None:
            errors = getattr(main.exception(), "exceptions", [main.exception()])
            if not all(isinstance(e, RedisError | OSError) for e in errors):
                raise main.exception()  # type: ignore[misc]
            log.warning("redis_connection_lost", error=type(errors[0]).__name__)
        main.cancel()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await main
        with contextlib.suppress(Exception):
            await dispatcher.stop()


def run_webhooks(settings: Settings) -> int:
    sealer_required(settings.secret_key)  # no key: say so before starting
    heartbeat.check_writable(settings, "webhooks")
    url = local_redis.with_local_password(settings.redis_url, settings.local_redis_dir)
    process = WebhookProcess(settings.model_copy(update={"redis_url": url}))
    if settings.webhook_metrics_port:
        server, _thread = start_http_server(
            settings.webhook_metrics_port, addr=settings.metrics_host, registry=process.metrics.registry
        )
        log.info("metrics_serving", host=settings.metrics_host, port=server.server_port)
    asyncio.run(process.run())
    return 0
