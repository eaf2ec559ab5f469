"""The edges of per-host pacing against a real redis-server: a full host told apart from a paused
one, a pause refused at once rather than waited out, a wait shorter than a second still waited,
no pause at all when the policy says 0, the operator's log lines, and expired leases not counted."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from redis.asyncio import Redis
from structlog.testing import capture_logs

from worker.rechecks.pacing import POLL_FIRST_S, HostBusy, InboxBusy, Pacer, PacingPolicy

HOST = "mail.example"


def _pacer(redis: Redis, *, cap: int = 1, lease_s: float = 30.0, backoff_s: float = 300.0) -> Pacer:
    return Pacer(redis, PacingPolicy(host_limits={}, default_limit=cap, lease_s=lease_s, backoff_s=backoff_s))


async def test_a_full_host_is_busy_not_backed_off_and_retried_soon(redis: Redis) -> None:
    p = _pacer(redis)
    assert (await p.try_acquire(HOST))[0] is not None
    assert await p.try_acquire(HOST) == (None, 0.0)
    with pytest.raises(HostBusy) as raised:
        await p.acquire("MAIL.Example.", 1, wait_s=0)
    assert (raised.value.host, raised.value.backed_off) == ("MAIL.Example.", False)
    assert POLL_FIRST_S <= raised.value.retry_in_s < 2 * POLL_FIRST_S
    assert str(raised.value) == "MAIL.Example.: at its connection cap"


async def test_a_pause_longer_than_the_wait_is_refused_at_once(redis: Redis) -> None:
    p = _pacer(redis)
    await p.back_off(HOST, 60)
    started = time.monotonic()
    with pytest.raises(HostBusy) as raised:
        await p.acquire(HOST, 1, wait_s=30)
    assert time.monotonic() - started < 15  # not waited out: 30 s would not end the pause anyway
    assert raised.value.backed_off and str(raised.value) == f"{HOST}: backed off"


async def test_a_wait_under_a_second_is_still_waited(redis: Redis) -> None:
    p = _pacer(redis, lease_s=0.2)
    assert (await p.try_acquire(HOST))[0] is not None  # a holder that will not give it back
    await p.acquire(HOST, 1, wait_s=0.9)  # its lease expires within the wait


async def test_a_policy_pause_of_zero_pauses_nothing(redis: Redis) -> None:
    p = _pacer(redis, backoff_s=0.0)
    assert await p.back_off(HOST, None) == 0.0
    assert (await p.try_acquire(HOST))[0] is not None


async def test_each_pause_is_logged_for_the_operator(redis: Redis) -> None:
    p = _pacer(redis)
    with capture_logs() as logs:
        await p.back_off("MAIL.Example.", 60)
        await p.back_off_inbox("inbox-1", 30)
    assert logs == [
        {"event": "host_backed_off", "host": HOST, "pause_s": 60, "log_level": "warning"},
        {"event": "inbox_backed_off", "inbox_id": "inbox-1", "pause_s": 30, "log_level": "warning"},
    ]


async def _redis_ms(redis: Redis) -> int:
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def test_an_expired_lease_is_not_in_use(redis: Redis) -> None:
    # A holder that died leaves its lease behind; a live one's lease keeps the host's set alive.
    assert (await _pacer(redis, cap=5, lease_s=0.05).try_acquire(HOST))[0] is not None
    expired_by = await _redis_ms(redis) + 52  # the 50 ms lease was taken before this reading
    live = _pacer(redis, cap=5)
    assert (await live.try_acquire(HOST))[0] is not None
    for _ in range(5_000):  # Redis's clock, which scores the leases, passing its expiry
        if await _redis_ms(redis) >= expired_by:
            break
        await asyncio.sleep(0.001)
    assert await live.in_use(HOST) == 1


async def test_an_inbox_being_checked_is_busy_without_a_pause(redis: Redis) -> None:
    p = _pacer(redis)

    def check(inbox: str) -> Any:
        return p.check(
            inbox, [HOST], 0, done_key="t:done", attempts_key="t:attempts", attempts_ttl_s=60, max_tries=5
        )

    async with check("inbox-1"):
        with pytest.raises(InboxBusy) as raised:
            async with check("inbox-1"):
                pass
    # Busy, not backed off: the job is deferred by the short busy delay, not by a pause.
    assert (raised.value.inbox_id, raised.value.retry_in_s) == ("inbox-1", 0.0)


async def test_a_pause_under_a_second_is_still_a_pause(redis: Redis) -> None:
    p = _pacer(redis)
    await p.back_off(HOST, 0.5)
    with pytest.raises(HostBusy) as raised:
        await p.acquire(HOST, 1, wait_s=0)
    assert raised.value.backed_off and 0 < raised.value.retry_in_s <= 1.0


async def test_a_shorter_lease_does_not_expire_a_longer_one(redis: Redis) -> None:
    """Workers with different job timeouts (a rolling deploy) share a host's cap: the short
    lease ends on its own, the long one still counts."""
    long_holder, short_holder = _pacer(redis, cap=2, lease_s=30.0), _pacer(redis, cap=2, lease_s=0.2)
    assert (await long_holder.try_acquire(HOST))[0] is not None
    assert (await short_holder.try_acquire(HOST))[0] is not None
    deadline = time.monotonic() + 5
    while (live := await long_holder.in_use(HOST)) == 2:
        assert time.monotonic() < deadline, "the short lease never expired"
        await asyncio.sleep(0.02)
    assert live == 1
    assert await long_holder.try_acquire(HOST) != (None, 0.0)  # the freed slot is free...
    assert await long_holder.try_acquire(HOST) == (None, 0.0)  # ...and the long lease still counts
