"""Registered inboxes: stored sealed in Redis, rechecked on a schedule, their health kept.

Per inbox a hash (keys.inbox_key) holds the job payload exactly as a producer would enqueue it,
credentials sealed, plus the schedule and the health state. A sorted set (keys.INBOXES_DUE_KEY)
orders inboxes by their next check. The cron tick claims due inboxes with one Lua script that
also pushes each claimed inbox's score forward, so however many workers tick at once, each due
inbox is enqueued once; the recheck job id is derived from the inbox and the claimed slot, so a
repeated enqueue of the same slot is the same job.

Nothing here reads every inbox: a tick costs what is due, the health counts (keys.INBOXES_COUNTS_KEY)
change in the same transaction as the health they count, and listing goes a page at a time.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
import uuid
from collections.abc import Awaitable, Iterable
from dataclasses import asdict, dataclass, replace
from typing import Any, cast

import structlog
from redis.asyncio import Redis
from redis.exceptions import WatchError

from jobs.request import ValidationRequest
from jobs.time_units import MS_PER_S
from worker.messages import events, keys, payload, producer, scripts, stream
from worker.messages.redis_text import as_text, text_or_none
from worker.messages.sealing import USE_REGISTRY, Sealer
from worker.rechecks.inbox_health import (
    Health,
    HealthPolicy,
    HealthState,
    Transition,
    account_age_days,
    advance,
    changed_data,
    expiring_data,
    observe,
)

log = structlog.get_logger("inboxcheck.registry")

# Health event ids are UUIDv5 of the check's event id and the type: a replay gets the same id.
HEALTH_EVENT_NAMESPACE = uuid.UUID("0f7d2a4e-8c51-4b8e-b7a2-6d3c1e9f4a21")
# Inbox ids hashed into job ids: job ids stay short and never carry an email address.
JOB_ID_HASH_CHARS = 24
# Inboxes a page of `list` asks Redis for (ZSCAN's COUNT: a hint, pages vary a little).
LIST_PAGE = 500

# Registering without a key and without permission for plaintext raises this (the same rule
# and error as the producer's, from worker.messages.payload.encode).
RegistryError = payload.PlaintextRefused


@dataclass(frozen=True, slots=True)
class InboxRow:
    """What `inboxcheck list` shows: never a credential."""

    inbox_id: str
    email: str
    inbox_type: str
    health: str
    every_s: float
    last_checked_at: float | None
    next_check_at: float | None
    error_code: str | None
    reason: str | None
    consecutive_failures: int
    account_age_days: int | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def recheck_job_id(inbox_id: str, slot_ms: int) -> str:
    digest = hashlib.sha256(inbox_id.encode()).hexdigest()[:JOB_ID_HASH_CHARS]
    return f"{keys.RECHECK_JOB_PREFIX}{digest}:{slot_ms}"


def is_recheck(job_id: str) -> bool:
    return job_id.startswith(keys.RECHECK_JOB_PREFIX)


def _state_from(raw: str | None) -> HealthState:
    if not raw:
        return HealthState()
    data = json.loads(raw)
    data["health"] = Health(data.get("health", Health.PENDING))
    data["warned_certs"] = tuple(data.get("warned_certs", ()))
    return HealthState(**data)


_DEFAULT_STATE = asdict(HealthState())


def _state_json(state: HealthState) -> str:
    # Only what differs from a new inbox's state (health always): a registry of millions keeps
    # one per inbox, and _state_from fills the rest back in.
    fields = {k: v for k, v in asdict(state).items() if k == "health" or v != _DEFAULT_STATE[k]}
    fields["health"] = state.health.value
    if "warned_certs" in fields:
        fields["warned_certs"] = list(state.warned_certs)
    return json.dumps(fields, separators=(",", ":"))


class Registry:
    def __init__(
        self, redis: Redis, *, queue_name: str, sealer: Sealer | None, allow_plaintext: bool = False
    ) -> None:
        self.redis = redis
        self.queue_name = queue_name
        self.sealer = sealer
        self.allow_plaintext = allow_plaintext
        self._scripts = scripts.of(redis)
        self._claim = self._scripts.claim_due

    async def register(
        self, request: ValidationRequest, every_s: float, *, spread_s: float, now: float | None = None
    ) -> InboxRow:
        """Store the inbox (credentials sealed) and schedule its first check within spread_s."""
        now = time.time() if now is None else now
        inbox_id, first_check, call = self._register_call(request, every_s, spread_s, now)
        await self._scripts.register(keys=call[0], args=call[1])
        log.info(
            "inbox_registered",
            inbox_id=inbox_id,
            every_s=every_s,
            first_check_in_s=round(first_check - now, 1),
        )
        row = await self.get(inbox_id)
        assert row is not None
        return row

    async def register_many(
        self,
        requests: Iterable[ValidationRequest],
        every_s: float,
        *,
        spread_s: float,
        now: float | None = None,
    ) -> int:
        """register() for many inboxes in one pipelined round trip (each still atomic on its
        own); returns how many were new. For bulk imports: no rows read back, one log line."""
        now = time.time() if now is None else now
        async with self.redis.pipeline(transaction=False) as pipe:
            for request in requests:
                _, _, call = self._register_call(request, every_s, spread_s, now)
                await self._scripts.register(keys=call[0], args=call[1], client=pipe)
            new = sum(await pipe.execute())
        log.info("inboxes_registered", new=new, every_s=every_s)
        return int(new)

    def _register_call(
        self, request: ValidationRequest, every_s: float, spread_s: float, now: float
    ) -> tuple[str, float, tuple[list[str], list[str | int | float]]]:
        """The inbox id, its first check time, and scripts.REGISTER's KEYS and ARGV for it."""
        assert request.inbox_id is not None  # the request model always fills it in
        inbox_id = request.inbox_id
        body = payload.encode(request, self.sealer, allow_plaintext=self.allow_plaintext, use=USE_REGISTRY)
        age = body["request"].pop("account_age_days", None)
        first_check = now + random.uniform(0, min(spread_s, every_s))
        fields: dict[str, str | int | float] = {
            "payload": json.dumps(body, separators=(",", ":")),
            "every_s": every_s,
            "email": request.email,
            "inbox_type": request.inbox_type.value,
            "registered_at": now,
        }
        if age is not None:
            fields.update(age_days=age, age_given_at=now)
        args: list[str | int | float] = [
            inbox_id,
            int(first_check * MS_PER_S),
            _state_json(HealthState()),
            Health.PENDING.value,
            "1" if age is None else "0",
        ]
        for name, value in fields.items():
            args += [name, value]
        return inbox_id, first_check, (self._count_keys(inbox_id), args)

    async def unregister(self, inbox_id: str) -> bool:
        deleted = await self._scripts.unregister(
            keys=self._count_keys(inbox_id), args=[inbox_id, Health.PENDING.value]
        )
        log.info("inbox_unregistered", inbox_id=inbox_id, existed=bool(deleted))
        return bool(deleted)

    @staticmethod
    def _count_keys(inbox_id: str) -> list[str]:
        return [keys.inbox_key(inbox_id), keys.INBOXES_DUE_KEY, keys.INBOXES_COUNTS_KEY]

    async def get(self, inbox_id: str) -> InboxRow | None:
        rows = await self._rows([inbox_id])
        return rows[0] if rows else None

    async def list_page(self, cursor: int = 0, count: int = LIST_PAGE) -> tuple[list[InboxRow], int]:
        """About `count` registered inboxes from `cursor` (0: the start) and the cursor of the
        next page (0: that was the last). A page costs what it returns, however many are stored.
        As Redis's SCAN: every inbox registered throughout the paging is listed, in no set order;
        one registered or unregistered meanwhile may be listed or not, rarely twice."""
        raw_cursor, found = await self.redis.zscan(keys.INBOXES_DUE_KEY, cursor, count=count)
        ids = list(dict.fromkeys(as_text(member) for member, _ in found))
        return await self._rows(ids), int(raw_cursor)

    async def list_inboxes(self) -> list[InboxRow]:
        """Every registered inbox, by id: all pages read, so for small registries and tests."""
        rows: dict[str, InboxRow] = {}
        cursor = 0
        while True:
            page, cursor = await self.list_page(cursor)
            rows.update((row.inbox_id, row) for row in page)
            if not cursor:
                return sorted(rows.values(), key=lambda row: row.inbox_id)

    async def _rows(self, ids: list[str]) -> list[InboxRow]:
        names = ("email", "inbox_type", "every_s", "state", "age_days", "age_given_at")
        async with self.redis.pipeline(transaction=False) as pipe:
            for inbox_id in ids:
                pipe.hmget(keys.inbox_key(inbox_id), list(names))
                pipe.zscore(keys.INBOXES_DUE_KEY, inbox_id)
            replies = await pipe.execute()
        rows, now = [], time.time()
        for inbox_id, values, score in zip(ids, replies[::2], replies[1::2], strict=True):
            email, inbox_type, every_s, state_raw, age_days, age_at = map(text_or_none, values)
            if email is None:
                continue  # unregistered meanwhile
            state = _state_from(state_raw)
            rows.append(
                InboxRow(
                    inbox_id=inbox_id,
                    email=email,
                    inbox_type=inbox_type or "",
                    health=state.health.value,
                    every_s=float(every_s or 0),
                    last_checked_at=state.last_checked_at,
                    next_check_at=score / MS_PER_S if score is not None else None,
                    error_code=state.error_code,
                    reason=state.reason,
                    consecutive_failures=state.consecutive_failures,
                    account_age_days=account_age_days(
                        int(age_days) if age_days else None,
                        float(age_at) if age_at else None,
                        state.first_ok_at,
                        now,
                    ),
                )
            )
        return rows

    async def health_counts(self) -> dict[str, int]:
        """Registered inboxes by health: the counters, one read whatever the number of inboxes."""
        counts = {health.value: 0 for health in Health}
        stored = await cast(Awaitable[dict[Any, Any]], self.redis.hgetall(keys.INBOXES_COUNTS_KEY))
        for name, value in stored.items():
            counts[as_text(name)] = int(value)
        return counts

    async def enqueue_due(
        self, *, claim_ttl_s: float, batch: int, budget_s: float | None = None, now: float | None = None
    ) -> list[str]:
        """Enqueue a recheck of every due inbox; returns the job ids.

        One claim (one Lua call) takes at most `batch`; claims repeat while a whole batch came
        back, until nothing is due or `budget_s` has passed, so what one tick enqueues follows
        what is due, not a fixed number."""
        started = time.monotonic()
        job_ids: list[str] = []
        while True:
            at = time.time() if now is None else now
            claimed = await self._claim(
                keys=[keys.INBOXES_DUE_KEY],
                args=[int(at * MS_PER_S), int(claim_ttl_s * MS_PER_S), batch],
            )
            slots = [
                (as_text(raw_id), int(float(as_text(raw_slot) or 0)))
                for raw_id, raw_slot in zip(claimed[::2], claimed[1::2], strict=True)
            ]
            job_ids += await self._enqueue(slots, at)
            if len(slots) < batch or (budget_s is not None and time.monotonic() - started >= budget_s):
                break
        if job_ids:
            log.info("rechecks_enqueued", count=len(job_ids))
        return job_ids

    async def _enqueue(self, slots: list[tuple[str, int]], now: float) -> list[str]:
        """The rechecks of claimed inboxes: their hashes read in one round trip, the jobs
        enqueued in another."""
        if not slots:
            return []
        names = ["payload", "state", "age_days", "age_given_at"]
        async with self.redis.pipeline(transaction=False) as pipe:
            for inbox_id, _ in slots:
                pipe.hmget(keys.inbox_key(inbox_id), names)
            stored = await pipe.execute()
        job_ids, gone = [], []
        async with self.redis.pipeline(transaction=False) as pipe:
            for (inbox_id, slot_ms), values in zip(slots, stored, strict=True):
                raw_payload, state_raw, age_days, age_at = map(text_or_none, values)
                if raw_payload is None:
                    gone.append(inbox_id)  # hash gone: not registered
                    continue
                body = json.loads(raw_payload)
                # The age grows with every recheck, so the recommended daily limit ramps up with it.
                age = account_age_days(
                    int(age_days) if age_days else None,
                    float(age_at) if age_at else None,
                    _state_from(state_raw).first_ok_at,
                    now,
                )
                if age is not None:
                    body["request"]["account_age_days"] = age
                if self.sealer is not None:
                    # The stored token may be months old: each recheck's job gets one sealed now,
                    # so a queued job's maximum age holds for rechecks too.
                    body = payload.reseal(body, self.sealer)
                job_id = recheck_job_id(inbox_id, slot_ms)
                job_keys, args = producer.enqueue_job_call(self.queue_name, job_id, body)
                await self._scripts.enqueue_job(keys=job_keys, args=args, client=pipe)
                job_ids.append(job_id)
            if gone:
                pipe.zrem(keys.INBOXES_DUE_KEY, *gone)
            if job_ids or gone:
                await pipe.execute()
        return job_ids

    async def keep_refresh_token(self, inbox_id: str, used: str, rotated: str) -> bool:
        """Store the refresh token the provider rotated `used` into, sealed, in the inbox's
        payload: the next recheck refreshes with it. False when the inbox is gone or was
        registered again with another refresh token meanwhile (that one stays)."""
        key = keys.inbox_key(inbox_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    raw = as_text(await cast(Awaitable[Any], pipe.hget(key, "payload")))
                    body = payload.replace_secret(
                        json.loads(raw) if raw else None, self.sealer, "oauth2_refresh_token", used, rotated
                    )
                    if body is None:
                        await pipe.unwatch()
                        log.warning("refresh_token_not_kept", inbox_id=inbox_id)
                        return False
                    pipe.multi()
                    pipe.hset(key, "payload", json.dumps(body, separators=(",", ":")))
                    await pipe.execute()
                except WatchError:
                    continue
                log.info("refresh_token_kept", inbox_id=inbox_id)
                return True

    async def record_check(
        self,
        inbox_id: str,
        event: events.TerminalEvent,
        policy: HealthPolicy,
        *,
        stream_name: str,
        maxlen: int,
        now: float | None = None,
    ) -> Transition | None:
        """Apply a recheck's terminal event to the inbox's health, once per event.

        The state, the next check time and any health event are written in one transaction,
        guarded by the id of the last event applied: a job replayed after a crash changes nothing.
        """
        now = time.time() if now is None else now
        key = keys.inbox_key(inbox_id)
        event_id = event.id
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    state_raw, last_event, every_s = map(
                        text_or_none,
                        await cast(
                            Awaitable[list[Any]], pipe.hmget(key, ["state", "last_event_id", "every_s"])
                        ),
                    )
                    if state_raw is None or last_event == event_id:
                        await pipe.unwatch()
                        return None  # unregistered, or this event was applied already
                    # Each inbox has its own interval; the policy carries the rest.
                    inbox_policy = replace(policy, interval_s=float(every_s or policy.interval_s))
                    transition = advance(
                        _state_from(state_raw), observe(event, policy.cert_warning_days), inbox_policy, now
                    )
                    pipe.multi()
                    pipe.hset(
                        key,
                        mapping={"state": _state_json(transition.current), "last_event_id": event_id},
                    )
                    before, after = transition.previous.health, transition.current.health
                    if before is not after:
                        pipe.hincrby(keys.INBOXES_COUNTS_KEY, before.value, -1)
                        pipe.hincrby(keys.INBOXES_COUNTS_KEY, after.value, 1)
                    pipe.zadd(
                        keys.INBOXES_DUE_KEY, {inbox_id: int((now + transition.next_check_in_s) * MS_PER_S)}
                    )
                    for health_event in health_events(inbox_id, transition, event_id):
                        pipe.xadd(
                            stream_name,
                            {
                                stream.FIELD_EVENT: health_event.model_dump_json(),
                                stream.FIELD_TYPE: health_event.type,
                                stream.FIELD_INBOX_ID: inbox_id,
                            },
                            maxlen=maxlen,
                            approximate=True,
                        )
                    await pipe.execute()
                except WatchError:
                    continue  # the inbox changed meanwhile (re-registered): apply to the new state
                break
        if transition.changed:
            log.info(
                "inbox_health_changed",
                inbox_id=inbox_id,
                previous=transition.previous.health.value,
                health=transition.current.health.value,
                error_code=transition.current.error_code,
            )
        return transition


def health_events(
    inbox_id: str, transition: Transition, check_event_id: str | None
) -> list[events.HealthEvent]:
    """The events a transition produces: health changed, and a certificate nearing expiry."""
    out: list[events.HealthEvent] = []
    if transition.changed:
        out.append(
            events.HealthChangedEvent(
                id=_health_event_id(check_event_id, events.HEALTH_CHANGED),
                subject=inbox_id,
                data=changed_data(inbox_id, transition, check_event_id),
            )
        )
    if transition.new_cert_warnings:
        out.append(
            events.CertificateExpiringEvent(
                id=_health_event_id(check_event_id, events.CERT_EXPIRING),
                subject=inbox_id,
                data=expiring_data(inbox_id, transition, check_event_id),
            )
        )
    return out


def _health_event_id(check_event_id: str | None, event_type: str) -> str:
    if check_event_id:
        return str(uuid.uuid5(HEALTH_EVENT_NAMESPACE, f"{check_event_id}:{event_type}"))
    return str(uuid.uuid4())


def for_settings(redis: Redis, settings: Any) -> Registry:
    """The registry as the worker and the CLI use it (the Python client: register and list
    inboxes from a service with `for_settings(redis, get_settings())`)."""
    from worker.messages.sealing import sealer_for

    return Registry(
        redis,
        queue_name=settings.queue_name,
        sealer=sealer_for(settings.secret_key),
        allow_plaintext=settings.allow_plaintext_credentials,
    )
