"""The per-host semaphore, the per-inbox lock and host back-off, against a real redis-server."""

from __future__ import annotations

import asyncio
import json
import math
import time

import pytest
from redis.asyncio import Redis

from jobs.replies import MAX_BACKOFF_S
from jobs.time_units import MS_PER_S
from worker.messages import events, keys, stream
from worker.rechecks.pacing import AlreadyDone, Held, HostBusy, InboxBusy, Pacer, PacingPolicy, TriesUsedUp
from worker.rechecks.settings import RecheckSettings

HOST = "mail.example"
CAP = 5
HOLDERS = 100
HOLD_S = 0.01
WAIT_S = 20.0
SHORT_LEASE_S = 0.3
OTHER = "imap.example"
DONE, ATTEMPTS = "test:done", "test:attempts"
MAX_TRIES = 20


def check(
    p: Pacer,
    hosts: list[str],
    inbox: str = "inbox-1",
    wait_s: float = 0.0,
    held: Held | None = None,
    max_tries: int = MAX_TRIES,
):
    return p.check(
        inbox,
        hosts,
        wait_s,
        done_key=DONE,
        attempts_key=ATTEMPTS,
        attempts_ttl_s=60,
        max_tries=max_tries,
        held=held,
    )


def pacer(redis: Redis, *, lease_s: float = 30.0, cap: int = CAP) -> Pacer:
    return Pacer(redis, PacingPolicy(host_limits={HOST: cap}, default_limit=cap, lease_s=lease_s))


async def test_hundred_holders_never_exceed_the_cap(redis: Redis) -> None:
    p = pacer(redis)
    holding, peak, peak_in_redis = 0, 0, 0

    async def holder() -> None:
        nonlocal holding, peak, peak_in_redis
        async with p.hosts([HOST], WAIT_S):
            holding += 1
            peak = max(peak, holding)
            peak_in_redis = max(peak_in_redis, await p.in_use(HOST))
            await asyncio.sleep(HOLD_S)  # the "connection" being held
            holding -= 1

    await asyncio.gather(*(holder() for _ in range(HOLDERS)))
    # How many overlap depends on timing; that they never exceed the cap does not.
    assert 1 <= peak <= CAP and peak_in_redis <= CAP
    assert await p.in_use(HOST) == 0


async def test_the_cap_is_reached_and_then_refused(redis: Redis) -> None:
    # deterministic: CAP holders that release nothing fill the host, the next is refused
    p = pacer(redis)
    leases = [(await p.try_acquire(HOST))[0] for _ in range(CAP)]
    assert None not in leases and await p.in_use(HOST) == CAP
    assert (await p.try_acquire(HOST))[0] is None
    await p.release(HOST, leases[0])
    assert (await p.try_acquire(HOST))[0] is not None


async def test_two_connections_to_one_host_take_two_slots(redis: Redis) -> None:
    p = pacer(redis, cap=3)
    async with p.hosts([HOST, HOST.upper()], WAIT_S):
        assert await p.in_use(HOST) == 2
        with pytest.raises(HostBusy):
            async with p.hosts([HOST, HOST], 0):
                pass
        assert await p.in_use(HOST) == 2  # the failed attempt holds nothing


async def test_a_crashed_holders_slots_expire(redis: Redis) -> None:
    p = pacer(redis, lease_s=SHORT_LEASE_S, cap=1)
    lease, _ = await p.try_acquire(HOST)  # a worker takes the slot and dies without releasing
    assert lease is not None
    assert (await p.try_acquire(HOST))[0] is None
    started = time.monotonic()
    async with p.hosts([HOST], WAIT_S):
        waited = time.monotonic() - started
    assert SHORT_LEASE_S * 0.5 <= waited < WAIT_S


async def test_back_off_pauses_the_host(redis: Redis) -> None:
    p = pacer(redis)
    await p.back_off(HOST, 60)
    with pytest.raises(HostBusy) as raised:
        await p.acquire(HOST, 1, wait_s=1)
    assert raised.value.backed_off and raised.value.retry_in_s >= 59
    # a shorter pause never shortens a longer one
    await p.back_off(HOST, 1)
    assert await redis.pttl(keys.pacing_backoff_key(HOST)) > 50_000
    assert (await p.try_acquire("other.example"))[0] is not None


async def test_one_check_per_inbox(redis: Redis) -> None:
    p = pacer(redis)
    async with check(p, []):
        with pytest.raises(InboxBusy):
            async with check(p, []):
                pass
        async with check(p, [], inbox="inbox-2"):
            pass
    async with check(p, []):
        pass


async def test_back_off_inbox_pauses_that_inbox_only(redis: Redis) -> None:
    # TOO_MANY_CONNECTIONS is a per-account limit: the account waits, its host does not
    p = pacer(redis)
    await p.back_off_inbox("inbox-1", 300)
    with pytest.raises(InboxBusy) as raised:
        async with check(p, [HOST]):
            pass
    assert 299 <= raised.value.retry_in_s <= 300
    # a paused inbox takes no lock, no slot and no attempt
    assert not await redis.exists(keys.inbox_lock_key("inbox-1"), ATTEMPTS)
    assert await p.in_use(HOST) == 0
    async with check(p, [HOST], inbox="inbox-2"):
        assert await p.in_use(HOST) == 1
    assert not await redis.exists(keys.pacing_backoff_key(HOST))


async def test_check_takes_lock_slots_and_attempt_in_one_go_and_gives_them_back(redis: Redis) -> None:
    p = pacer(redis, cap=3)
    async with check(p, [HOST, OTHER, HOST.upper()]) as attempts:
        assert attempts == 1 and int(await redis.get(ATTEMPTS)) == 1
        assert await p.in_use(HOST) == 2 and await p.in_use(OTHER) == 1
        assert await redis.exists(keys.inbox_lock_key("inbox-1"))
        with pytest.raises(InboxBusy):
            async with check(p, [HOST]):
                pass
    assert await p.in_use(HOST) == 0 and await p.in_use(OTHER) == 0
    assert not await redis.exists(keys.inbox_lock_key("inbox-1"))
    async with check(p, [HOST]) as attempts:
        assert attempts == 2


async def test_check_of_a_done_job_takes_nothing(redis: Redis) -> None:
    p = pacer(redis)
    await redis.set(DONE, '{"id": "e1"}')
    with pytest.raises(AlreadyDone) as raised:
        async with check(p, [HOST]):
            pass
    assert json.loads(raised.value.event) == {"id": "e1"}
    assert not await redis.exists(keys.inbox_lock_key("inbox-1"), ATTEMPTS)
    assert await p.in_use(HOST) == 0


async def test_check_on_a_full_host_waits_like_hosts_and_counts_nothing_itself(redis: Redis) -> None:
    p = pacer(redis, cap=1)
    lease, _ = await p.try_acquire(HOST)
    with pytest.raises(HostBusy):  # no slot within the wait; lock given back, nothing counted
        async with check(p, [HOST, OTHER]):
            pass
    assert not await redis.exists(keys.inbox_lock_key("inbox-1"), ATTEMPTS)
    assert await p.in_use(OTHER) == 0

    async def free_once_the_check_waits() -> None:
        # The check holds the inbox lock while it polls for the host: the slot is freed then.
        while not await redis.exists(keys.inbox_lock_key("inbox-1")):  # noqa: ASYNC110 - state in Redis
            await asyncio.sleep(0)
        await p.release(HOST, lease)

    releaser = asyncio.ensure_future(free_once_the_check_waits())
    async with check(p, [HOST, OTHER], wait_s=WAIT_S) as attempts:
        assert attempts is None  # the caller counts it: the slots came the polling way
        assert await p.in_use(HOST) == 1 and await p.in_use(OTHER) == 1
        assert await redis.exists(keys.inbox_lock_key("inbox-1"))
    await releaser
    assert await p.in_use(HOST) == 0 and await p.in_use(OTHER) == 0
    assert not await redis.exists(keys.inbox_lock_key("inbox-1"))


async def test_a_held_check_is_released_by_its_event_append_exactly_once(redis: Redis) -> None:
    # The check's lock and slots ride on the append's round trip: both happen, once, and the
    # append gives back exactly what the check's start took.
    p = pacer(redis)
    held = Held()
    async with check(p, [HOST, OTHER, HOST], held=held):
        pass
    others_lease, _ = await p.try_acquire(HOST)  # another check's slot on the same host
    assert others_lease is not None
    assert held.pending is not None  # still held: the append releases it
    assert await p.in_use(HOST) == 3 and await redis.exists(keys.inbox_lock_key("inbox-1"))
    event = events.failed(events.Failure(inbox_id="inbox-1", reason="X", attempts=1), "e1")
    for _ in range(2):  # a replay appends nothing and releases nothing of anyone else's
        written = await stream.append_once(
            redis,
            stream="test:events",
            maxlen=100,
            done_key=DONE,
            done_ttl_s=60,
            event=event,
            release=held.pending,
        )
        assert written.id == "e1"
    assert await redis.xlen("test:events") == 1
    assert await p.in_use(HOST) == 1 and await p.in_use(OTHER) == 0
    assert not await redis.exists(keys.inbox_lock_key("inbox-1"))
    await p.release(HOST, others_lease)
    assert await p.in_use(HOST) == 0


@pytest.mark.parametrize("release_by", ["append", "finish"])
async def test_a_late_release_leaves_the_next_checks_lock_and_slots(redis: Redis, release_by: str) -> None:
    # A check that outlived its lease: by the time it gives back what it held, the next check of
    # the inbox holds the lock and the same host's slots. Whichever way the late one releases,
    # what the next one took stays.
    p = pacer(redis, lease_s=SHORT_LEASE_S)
    late = Held()
    async with check(p, [HOST, OTHER], held=late):
        pass
    await asyncio.sleep(SHORT_LEASE_S * 1.5)
    assert await p.in_use(HOST) == 0 and not await redis.exists(keys.inbox_lock_key("inbox-1"))
    nxt = Held()
    async with check(p, [HOST, OTHER], held=nxt):
        pass
    lock = await redis.get(keys.inbox_lock_key("inbox-1"))
    assert lock is not None
    assert late.pending is not None
    if release_by == "append":
        event = events.failed(events.Failure(inbox_id="inbox-1", reason="X", attempts=1), "e1")
        await stream.append_once(
            redis,
            stream="test:events",
            maxlen=100,
            done_key=DONE,
            done_ttl_s=60,
            event=event,
            release=late.pending,
        )
    else:
        await p.finish(late.pending)
    assert await redis.get(keys.inbox_lock_key("inbox-1")) == lock
    assert await p.in_use(HOST) == 1 and await p.in_use(OTHER) == 1
    assert nxt.pending is not None
    await p.finish(nxt.pending)
    assert await p.in_use(HOST) == 0 and await p.in_use(OTHER) == 0
    assert not await redis.exists(keys.inbox_lock_key("inbox-1"))


async def test_a_held_check_that_raises_is_released_at_once(redis: Redis) -> None:
    p = pacer(redis)
    held = Held()
    with pytest.raises(RuntimeError):
        async with check(p, [HOST], held=held):
            raise RuntimeError
    assert held.pending is None and await p.in_use(HOST) == 0
    assert not await redis.exists(keys.inbox_lock_key("inbox-1"))


GMAIL = "smtp.gmail.com"


async def test_spellings_of_one_host_share_its_slots_and_cap(redis: Redis) -> None:
    p = Pacer(redis, PacingPolicy(host_limits={GMAIL: 2}, default_limit=5))
    assert p.policy.limit("SMTP.GMAIL.COM.") == 2
    first, second = Held(), Held()
    async with check(p, [GMAIL], inbox="inbox-1", held=first):
        pass
    async with check(p, ["SMTP.GMAIL.COM"], inbox="inbox-2", held=second):
        pass
    assert await p.in_use("smtp.gmail.com.") == 2
    with pytest.raises(HostBusy):  # a trailing dot is the same host, at its cap
        async with check(p, ["smtp.gmail.com."], inbox="inbox-3"):
            pass
    assert (await p.try_acquire("Smtp.Gmail.Com."))[0] is None
    for held in (first, second):
        assert held.pending is not None
        await p.finish(held.pending)
    assert await p.in_use(GMAIL) == 0


@pytest.mark.parametrize(
    ("first", "others"),
    [("127.0.0.1", ["127.1", "0x7f.0.0.1", "::ffff:127.0.0.1"]), ("::1", ["[::1]", "0:0::1"])],
)
async def test_spellings_of_one_address_share_its_cap(redis: Redis, first: str, others: list[str]) -> None:
    p = Pacer(redis, PacingPolicy(default_limit=1))
    lease, _ = await p.try_acquire(first)
    assert lease is not None
    for other in others:
        assert (await p.try_acquire(other))[0] is None
    await p.release(others[0], lease)
    assert await p.in_use(first) == 0


async def test_a_pause_on_one_spelling_pauses_the_host(redis: Redis) -> None:
    p = Pacer(redis, PacingPolicy())
    await p.back_off("SMTP.GMAIL.COM.", 60)
    lease, paused_s = await p.try_acquire(GMAIL)
    assert lease is None and 59 <= paused_s <= 60


def test_host_limit_settings_are_keyed_by_canonical_host() -> None:
    policy = RecheckSettings(host_limits={"SMTP.Gmail.COM.": 3, "[::1]": 4}).pacing_policy(lease_s=60)
    assert (policy.limit(GMAIL), policy.limit("0:0::1")) == (3, 4)


@pytest.mark.parametrize("suggested", [1e17, 1e300], ids=["past-redis", "past-int64"])
async def test_a_pause_is_at_most_a_day_whatever_is_asked(redis: Redis, suggested: float) -> None:
    p = pacer(redis)
    assert await p.back_off(HOST, suggested) == MAX_BACKOFF_S
    assert await p.back_off_inbox("inbox-1", suggested) == MAX_BACKOFF_S
    for key in (keys.pacing_backoff_key(HOST), keys.inbox_backoff_key("inbox-1")):
        assert MAX_BACKOFF_S * MS_PER_S - 60_000 < await redis.pttl(key) <= MAX_BACKOFF_S * MS_PER_S


@pytest.mark.parametrize("suggested", [math.nan, math.inf, -1.0])
async def test_a_pause_without_a_usable_suggestion_is_the_policys(redis: Redis, suggested: float) -> None:
    p = pacer(redis)
    assert await p.back_off(HOST, suggested) == p.policy.backoff_s
    assert 0 < await redis.pttl(keys.pacing_backoff_key(HOST)) <= p.policy.backoff_s * MS_PER_S


async def test_a_check_whose_tries_are_used_up_takes_nothing(redis: Redis) -> None:
    p = pacer(redis)
    for counted in (1, 2):
        async with check(p, [HOST], max_tries=2) as attempts:
            assert attempts == counted
    await p.back_off_inbox("inbox-1", 300)  # tries used up ends the job now, not after the pause
    with pytest.raises(TriesUsedUp) as raised:
        async with check(p, [HOST], max_tries=2):
            pass
    assert raised.value.attempts == 2
    assert int(await redis.get(ATTEMPTS)) == 2
    assert not await redis.exists(keys.inbox_lock_key("inbox-1"))
    assert await p.in_use(HOST) == 0
