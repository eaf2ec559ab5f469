"""The webhooks process's work: the events stream read as a consumer group, and one runner per
endpoint that sends what the ledger says is due.

Reading never waits on an endpoint: an entry read (XREADGROUP) is fanned out to the ledger at once
and stays pending in the group until every subscribed endpoint has delivered it or given up
(worker.webhooks.ledger acknowledges it then). An entry whose reader died before fanning it out
is taken over by another process after INBOXCHECK_WEBHOOK_CLAIM_IDLE (XPENDING, XCLAIM); fanning
out twice does nothing, so a race between two takers is harmless.

Each endpoint's runner has at most INBOXCHECK_WEBHOOK_CONCURRENCY POSTs in flight and claims
only as many due deliveries as it has room for; the rest wait in Redis, where any process may
claim them. A slow or dead endpoint fills only its own slots.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from jobs.destinations import DestinationPolicy
from jobs.time_units import MS_PER_S
from worker.messages import keys
from worker.messages.stream import FIELD_EVENT, FIELD_TYPE
from worker.settings import Settings
from worker.webhooks import delivery, transport
from worker.webhooks.delivery import Outcome
from worker.webhooks.endpoints import UNUSABLE_SECRET, Endpoint, EndpointRegistry, as_text, registry_for
from worker.webhooks.ledger import Claimed, Ledger, event_id_of
from worker.webhooks.metrics import WebhookMetrics
from worker.webhooks.signing import SigningSecret

log = structlog.get_logger("inboxcheck.webhooks")

# Entries per read, and how long one blocking read waits before looking again.
READ_BATCH = 100
READ_BLOCK_MS = 1000
# Refs per claim when draining an endpoint that is gone.
DRAIN_BATCH = 100
# A group made now starts with the events appended from now on (not the stream's history).
GROUP_START_ID = "$"
# A delivery is leased for this many request timeouts: it is settled well within one.
LEASE_TIMEOUTS = 2
# A consumer (one per process run) with nothing pending, idle this many claim periods, is gone.
STALE_CONSUMER_CLAIMS = 10


async def ensure_group(redis: Redis, stream: str, group: str) -> None:
    try:
        await redis.xgroup_create(stream, group, id=GROUP_START_ID, mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


async def add_endpoint(
    redis: Redis, settings: Settings, url: str, event_types: Sequence[str]
) -> tuple[Endpoint, SigningSecret]:
    """A new endpoint and its secret. The group is made now if it does not exist yet, so the
    events appended from now on are delivered even before `inboxcheck webhooks` first runs."""
    added = await registry_for(redis, settings.secret_key).add(url, event_types)
    await ensure_group(redis, settings.events_stream, settings.webhook_group)
    return added


def ledger_for(redis: Redis, settings: Settings) -> Ledger:
    return Ledger(
        redis,
        stream=settings.events_stream,
        group=settings.webhook_group,
        queue_max=settings.webhook_queue_max,
        dead_max=settings.webhook_dead_letters_max,
    )


def policy_for(settings: Settings) -> DestinationPolicy:
    return DestinationPolicy(public_only=True, allowed_networks=settings.allow_networks)


def client_for(settings: Settings) -> httpx.AsyncClient:
    return transport.client(
        policy_for(settings),
        ca_file=str(settings.tls_ca_file) if settings.tls_ca_file else None,
        timeout_s=settings.webhook_timeout,
        max_connections=settings.webhook_concurrency,
    )


async def drain(ledger: Ledger, endpoint_id: str, dead_reason: str | None) -> int:
    """Settle everything queued for an endpoint that gets no more events: dead letters when it
    was disabled (they can be replayed), nothing when it was removed. Returns how many."""
    count = 0
    while claimed := await ledger.claim(endpoint_id, DRAIN_BATCH, 0, everything=True):
        for item in claimed:
            if dead_reason is None:
                await ledger.dropped(item)
            else:
                await ledger.give_up(item, dead_reason, None)
        count += len(claimed)
    return count


@dataclass
class Context:
    settings: Settings
    ledger: Ledger
    registry: EndpointRegistry
    metrics: WebhookMetrics
    rng: random.Random


class EndpointRunner:
    """Sends one endpoint's due deliveries, at most `webhook_concurrency` at a time."""

    def __init__(self, endpoint: Endpoint, ctx: Context) -> None:
        self.endpoint = endpoint
        self.ctx = ctx
        self.client = client_for(ctx.settings)
        self.in_flight: set[asyncio.Task[None]] = set()
        self.wake = asyncio.Event()
        self.stopping = False
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        settings = self.ctx.settings
        lease_s = settings.webhook_timeout * LEASE_TIMEOUTS
        while not self.stopping:
            free = settings.webhook_concurrency - len(self.in_flight)
            # Without its secret (another INBOXCHECK_SECRET_KEY) this process leaves the endpoint's
            # deliveries queued for one that has it.
            if free > 0 and self.endpoint.keys:
                try:
                    claimed = await self.ctx.ledger.claim(self.endpoint.id, free, lease_s)
                except (RedisError, OSError) as exc:
                    # The stream reader sees the same outage and has the process reconnect.
                    log.warning("webhook_claim_failed", endpoint=self.endpoint.id, error=type(exc).__name__)
                    claimed = []
                for item in claimed:
                    task = asyncio.ensure_future(self._deliver(item))
                    self.in_flight.add(task)
                    task.add_done_callback(self._done)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), settings.webhook_poll)
            self.wake.clear()

    def _done(self, task: asyncio.Task[None]) -> None:
        self.in_flight.discard(task)
        self.wake.set()  # a slot is free: more may be due

    async def _deliver(self, item: Claimed) -> None:
        try:
            await self._attempt(item)
        except Exception as exc:  # noqa: BLE001 - the lease runs out and the delivery comes due again
            log.warning(
                "webhook_settle_failed",
                endpoint=self.endpoint.id,
                event_id=item.event_id,
                error=type(exc).__name__,
            )

    async def _attempt(self, item: Claimed) -> None:
        settings, ledger, metrics = self.ctx.settings, self.ctx.ledger, self.ctx.metrics
        endpoint = self.endpoint
        attempt = await delivery.post(
            self.client, endpoint, item.event_id, item.body, settings.webhook_timeout
        )
        attempts = item.attempts + 1
        fields = dict(
            endpoint=endpoint.id,
            event_id=item.event_id,
            type=item.type,
            attempt=attempts,
            status=attempt.status,
            detail=attempt.detail,
            ms=round(attempt.seconds * MS_PER_S, 1),
        )
        now = time.time()
        if attempt.outcome is Outcome.DELIVERED:
            await ledger.delivered(item)
            metrics.attempt(endpoint.id, "delivered", attempt.seconds)
            metrics.delivered(endpoint.id, max(0.0, now - item.created_ms / MS_PER_S))
            log.info("webhook_delivered", **fields)
            return
        if attempt.outcome is Outcome.RETRY:
            delay = delivery.next_delay_s(
                attempts,
                settings.webhook_retry_backoff,
                settings.webhook_retry_max_delay,
                attempt.retry_after_s,
                self.ctx.rng,
            )
            give_up_at = item.created_ms / MS_PER_S + settings.webhook_give_up_after
            if now + delay <= give_up_at:
                await ledger.retry_at(item, now + delay)
                metrics.attempt(endpoint.id, "retried", attempt.seconds)
                log.info("webhook_retry", retry_in_s=round(delay, 3), **fields)
                return
            reason = f"gave up after {attempts} attempts: {attempt.detail}"
        elif attempt.outcome is Outcome.GONE:
            reason = "410 Gone: the endpoint was disabled"
            await self.ctx.registry.disable(
                endpoint.id, f"410 Gone at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(now))}"
            )
        else:
            reason = f"not retried: {attempt.detail}"
        await ledger.give_up(item, reason, attempt.status)
        metrics.attempt(endpoint.id, "failed", attempt.seconds)
        log.warning("webhook_failed", reason=reason, **fields)
        if attempt.outcome is Outcome.GONE:
            self.stopping = True
            self.wake.set()

    async def stop(self, grace_s: float) -> None:
        """Claim no more; let the POSTs in flight finish for `grace_s`, then cancel them (their
        deliveries come due again when their lease runs out)."""
        self.stopping = True
        self.wake.set()
        if self.in_flight:
            await asyncio.wait(set(self.in_flight), timeout=grace_s)
        for task in (*self.in_flight, self.task):
            task.cancel()
        await asyncio.gather(*self.in_flight, self.task, return_exceptions=True)
        await self.client.aclose()


class Dispatcher:
    """One process's share of the work, on one Redis connection (process.py makes it afresh
    after Redis comes back)."""

    def __init__(
        self,
        settings: Settings,
        redis: Redis,
        registry: EndpointRegistry,
        metrics: WebhookMetrics,
        consumer: str,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.consumer = consumer
        self.ctx = Context(settings, ledger_for(redis, settings), registry, metrics, random.Random())
        self.runners: dict[str, EndpointRunner] = {}
        self.endpoints: list[Endpoint] = []
        self._stopping: set[asyncio.Future[None]] = set()

    async def run(self) -> None:
        """Until cancelled, or a Redis error (raised: the caller reconnects)."""
        await ensure_group(self.redis, self.settings.events_stream, self.settings.webhook_group)
        await self.refresh()
        async with asyncio.TaskGroup() as group:
            group.create_task(self._read())
            group.create_task(self._reclaim())
            group.create_task(self._watch_endpoints())

    async def refresh(self) -> None:
        """Endpoints as Redis has them now: a runner per active one; what a disabled or removed one
        still had queued is settled."""
        endpoints = await self.ctx.registry.all(with_keys=True)
        self.endpoints = endpoints
        active = {e.id: e for e in endpoints if e.active}
        for endpoint in active.values():
            runner = self.runners.get(endpoint.id)
            if runner is None or runner.task.done():
                self.runners[endpoint.id] = EndpointRunner(endpoint, self.ctx)
                if not endpoint.keys:
                    log.error("webhook_secret_unusable", endpoint=endpoint.id, why=UNUSABLE_SECRET)
            else:
                runner.endpoint = endpoint  # a rotated secret signs from now on
        known = {e.id for e in endpoints}
        for endpoint_id in [i for i in self.runners if i not in active]:
            # In the background: a runner may have POSTs in flight, and reading must go on.
            removed = None if endpoint_id in known else endpoint_id
            self._stopping.add(asyncio.ensure_future(self._retire(self.runners.pop(endpoint_id), removed)))
        for endpoint in endpoints:
            if not endpoint.active and await self.ctx.ledger.queued(endpoint.id):
                count = await drain(self.ctx.ledger, endpoint.id, f"endpoint disabled: {endpoint.disabled}")
                log.info("webhook_endpoint_drained", endpoint=endpoint.id, dead_letters=count)

    async def _retire(self, runner: EndpointRunner, removed: str | None) -> None:
        await runner.stop(self.settings.webhook_timeout)
        if removed is not None:
            # Removed (`webhook remove` drains too, but an event fanned out meanwhile is owed).
            await drain(self.ctx.ledger, removed, None)

    async def _watch_endpoints(self) -> None:
        while True:
            await asyncio.sleep(self.settings.webhook_poll)
            await self.refresh()

    async def fan_out(self, entry_id: str, fields: dict[bytes, bytes]) -> None:
        body = fields.get(FIELD_EVENT.encode())
        event_type = fields.get(FIELD_TYPE.encode(), b"").decode(errors="replace")
        event_id = event_id_of(body) if body is not None else None
        if body is None or event_id is None:
            log.warning("webhook_entry_unreadable", entry=entry_id)
            await self.redis.xack(self.settings.events_stream, self.settings.webhook_group, entry_id)
            return
        targets = [e.id for e in self.endpoints if e.wants(event_type)]
        if not targets:
            await self.redis.xack(self.settings.events_stream, self.settings.webhook_group, entry_id)
            return
        queued = await self.ctx.ledger.fan_out(
            entry_id, entry_id, body.decode(), event_type, event_id, targets
        )
        if queued > 0:
            for endpoint_id in targets:
                if runner := self.runners.get(endpoint_id):
                    runner.wake.set()

    async def _read(self) -> None:
        stream, group = self.settings.events_stream, self.settings.webhook_group
        while True:
            reply = await self.redis.xreadgroup(
                group, self.consumer, {stream: ">"}, count=READ_BATCH, block=READ_BLOCK_MS
            )
            entries = reply[0][1] if reply else []
            if entries:
                await self.refresh()  # an endpoint added just before these events gets them
            for entry_id, fields in entries:
                await self.fan_out(entry_id.decode(), fields)

    async def _reclaim(self) -> None:
        idle_ms = int(self.settings.webhook_claim_idle * MS_PER_S)
        while True:
            await asyncio.sleep(self.settings.webhook_claim_idle / 2)
            await self._take_over(idle_ms)
            await self._forget_stale_consumers(idle_ms * STALE_CONSUMER_CLAIMS)

    async def _take_over(self, idle_ms: int) -> None:
        """Claim and fan out the entries read at least `idle_ms` ago and never fanned out (their
        reader died first). An entry already fanned out stays where it is: it only waits for its
        deliveries, which the ledger holds. (Not XAUTOCLAIM: it would move, and send back whole,
        every entry waiting on a day of retries, again and again.)"""
        stream, group = self.settings.events_stream, self.settings.webhook_group
        start = "-"
        while rows := await self.redis.xpending_range(
            stream, group, min=start, max="+", count=READ_BATCH, idle=idle_ms
        ):
            ids = [as_text(row["message_id"]) for row in rows]
            async with self.redis.pipeline(transaction=False) as pipe:
                for entry_id in ids:
                    pipe.exists(keys.webhook_delivery_key(entry_id))
                fanned = await pipe.execute()
            orphans: list[Any] = [
                entry_id for entry_id, exists in zip(ids, fanned, strict=True) if not exists
            ]
            if orphans:
                for entry_id, fields in await self.redis.xclaim(
                    stream, group, self.consumer, idle_ms, orphans
                ):
                    log.info("webhook_entry_taken_over", entry=as_text(entry_id))
                    await self.fan_out(as_text(entry_id), fields or {})
            if len(rows) < READ_BATCH:
                return
            start = "(" + ids[-1]  # exclusive: after the last one seen

    async def _forget_stale_consumers(self, idle_ms: int) -> None:
        stream, group = self.settings.events_stream, self.settings.webhook_group
        for consumer in await self.redis.xinfo_consumers(stream, group):
            name = as_text(consumer["name"])
            if name != self.consumer and consumer["pending"] == 0 and consumer["idle"] > idle_ms:
                await self.redis.xgroup_delconsumer(stream, group, name)

    async def stop(self) -> None:
        """Every runner's POSTs in flight may finish (for the request timeout); nothing new starts."""
        runners, self.runners = list(self.runners.values()), {}
        await asyncio.gather(
            *(runner.stop(self.settings.webhook_timeout) for runner in runners),
            *self._stopping,
            return_exceptions=True,
        )
