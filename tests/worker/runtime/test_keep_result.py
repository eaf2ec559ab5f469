"""INBOXCHECK_KEEP_RESULT bounds idempotent enqueueing: once a result has lapsed, enqueueing the
same request again checks the inbox again (while it is kept, test_job.py shows it is the same job);
a worker refuses to start with one too short to keep a job from being checked twice."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from tests.servers.redis import RedisServer
from tests.servers.wait import wait_until
from tests.worker.support import burst, closed_port, make_settings, request, stream_events
from worker.messages import keys
from worker.messages.producer import enqueue_validation
from worker.runtime.arq_settings import check_settings
from worker.settings import SettingsError

# Short, so the test waits little; a loaded machine may let it lapse before the next line runs,
# which is why this test does not also check the result while it is kept. Far below what the
# worker's start-up demands (check_settings): the in-process worker skips that check, and nothing
# here crashes or fails over, which is what the floor is for.
KEEP_RESULT_S = 0.3
# Generous for Redis expiring a key on a loaded machine; the wait ends as soon as it has.
EXPIRY_DEADLINE_S = 5.0


async def test_the_same_request_after_its_result_lapsed_is_checked_again(
    shared_redis: RedisServer, aredis: Redis
) -> None:
    settings = make_settings(shared_redis, keep_result=KEEP_RESULT_S, max_tries=1)
    same = request(port=closed_port())
    first = await enqueue_validation(aredis, same, settings=settings)
    await burst(settings)
    client = shared_redis.client()
    await asyncio.to_thread(
        wait_until,
        lambda: not client.exists(keys.result_key(first)),
        timeout=EXPIRY_DEADLINE_S,
        what="the result lapsing",
    )
    again = await enqueue_validation(aredis, same, settings=settings)
    assert await aredis.zcard(settings.queue_name) == 1
    await burst(settings)
    events = stream_events(client, settings.events_stream)
    assert [event["data"]["inbox_id"] for event in events] == ["inbox-1", "inbox-1"]
    assert events[0]["id"] != events[1]["id"] and again == first  # a new run of the same job id


def test_a_result_kept_shorter_than_a_job_and_its_rerun_is_refused_at_start_up(
    shared_redis: RedisServer,
) -> None:
    # Twice the job timeout + 2 s: with 5 s, 12 s.
    settings = make_settings(shared_redis, job_timeout=5, keep_result=11)
    with pytest.raises(SettingsError, match=r"^INBOXCHECK_KEEP_RESULT \(11 s\) must be at least 12 s"):
        check_settings(settings)
    check_settings(settings.model_copy(update={"keep_result": 12}))
