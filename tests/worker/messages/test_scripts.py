"""The Lua scripts: registered once per client, run by EVALSHA, against a real redis-server."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis

from jobs.request import ValidationRequest, parse_request
from worker.messages import events, scripts, stream
from worker.rechecks.pacing import Held, Pacer, PacingPolicy
from worker.rechecks.registry import Registry
from worker.webhooks.ledger import Ledger

HOST = "mail.example"
ALL_SCRIPTS = [
    scripts.ACQUIRE,
    scripts.RELEASE,
    scripts.BACKOFF,
    scripts.BEGIN,
    scripts.COUNT_ATTEMPT,
    scripts.APPEND_ONCE,
    scripts.CLAIM_DUE,
    scripts.REGISTER,
    scripts.UNREGISTER,
    scripts.ENQUEUE_JOB,
    scripts.RELEASE_LOCK,
    scripts.WEBHOOK_FAN_OUT,
    scripts.WEBHOOK_SETTLE,
]


def inbox(inbox_id: str) -> ValidationRequest:
    return parse_request(
        {
            "inbox_id": inbox_id,
            "inbox_type": "CUSTOM_SMTP",
            "email": "user@example.test",
            "smtp_host": "127.0.0.1",
            "smtp_port": 2525,
            "imap_host": "127.0.0.1",
            "imap_port": 1993,
            "smtp_password": "not-a-secret-here",
        }
    )


def event(event_id: str) -> events.Event:
    return events.failed(events.Failure(inbox_id="inbox-1", reason="X", attempts=1), event_id)


async def every_script_once(redis: Redis, run: str) -> None:
    """One call of each script, the way the worker makes them."""
    pacer = Pacer(redis, PacingPolicy(default_limit=2))
    held = Held()
    done = f"test:done:{run}"
    async with pacer.check(
        "inbox-1",
        [HOST],
        0,
        done_key=done,
        attempts_key=f"test:n:{run}",
        attempts_ttl_s=60,
        max_tries=1,
        held=held,
    ):
        pass
    await stream.append_once(
        redis,
        stream="test:events",
        maxlen=100,
        done_key=done,
        done_ttl_s=60,
        event=event(run),
        release=held.pending,
    )
    lease, _ = await pacer.try_acquire(HOST)
    assert lease is not None
    await pacer.release(HOST, lease)
    await pacer.back_off(f"{run}.example", 1)  # a host of its own: the next run takes HOST
    registry = Registry(redis, queue_name="test:queue", sealer=None, allow_plaintext=True)
    await registry.register(inbox(f"inbox-{run}"), 60, spread_s=0)
    assert await registry.enqueue_due(claim_ttl_s=60, batch=10)  # enqueued: ENQUEUE_JOB ran
    assert await registry.unregister(f"inbox-{run}")
    await scripts.of(redis).count_attempt(keys=[f"test:counted:{run}"], args=[60_000, 1])
    await scripts.of(redis).release_lock(keys=[f"test:lock:{run}"], args=["holder"])
    ledger = Ledger(redis, stream="test:events", group="test:group", queue_max=10, dead_max=10)
    await ledger.fan_out(f"replay:{run}", "", "{}", "test", run, [f"ep-{run}"])
    [delivery] = await ledger.claim(f"ep-{run}", 1, 60)
    await ledger.delivered(delivery)


async def test_each_client_registers_every_script_once(
    redis: Redis, aredis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    registered: list[str] = []
    register = redis.register_script

    def counting(text: Any) -> Any:
        registered.append(text)
        return register(text)

    monkeypatch.setattr(redis, "register_script", counting)
    await every_script_once(redis, "first")
    await every_script_once(redis, "second")  # new Pacer and Registry, same client
    assert sorted(registered) == sorted(ALL_SCRIPTS)
    assert scripts.of(redis) is scripts.of(redis)
    assert scripts.of(aredis) is not scripts.of(redis)  # each client has its own


async def test_every_script_runs_by_evalsha_even_after_the_server_forgot_it(redis: Redis) -> None:
    await redis.config_resetstat()
    await every_script_once(redis, "first")
    await redis.script_flush()  # as after a restart: EVALSHA fails, the script is loaded again
    await every_script_once(redis, "second")
    stats = await redis.info("commandstats")
    assert "cmdstat_eval" not in stats
    assert stats["cmdstat_evalsha"]["calls"] >= 2 * len(ALL_SCRIPTS)
    assert await redis.xlen("test:events") == 2
