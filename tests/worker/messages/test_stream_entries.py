"""What a consumer reads from the events stream, written by a real arq worker (burst mode) into a
real redis-server: each entry's fields, the CloudEvents envelope, the same event as the arq result
and in one log line, and the stream kept near INBOXCHECK_EVENTS_MAXLEN."""

from __future__ import annotations

import json
import time
from datetime import datetime

import structlog
from redis.asyncio import Redis

from tests.servers.redis import RedisServer
from tests.worker.support import burst, make_settings, raw_job, request, write_raw
from worker.messages import keys
from worker.messages.events import COMPLETED, REJECTED, SOURCE
from worker.messages.producer import enqueue_validation
from worker.runtime.job import event_id

ENVELOPE = {"specversion", "id", "source", "type", "time", "subject", "datacontenttype", "data"}
MAXLEN = 100  # the smallest INBOXCHECK_EVENTS_MAXLEN allowed
# Redis trims MAXLEN ~ by whole stream nodes: with nodes this small the stream must stay within
# MAXLEN plus one node, where the default node (100 entries) would let it reach twice MAXLEN.
NODE_ENTRIES = 10


async def test_entries_carry_the_event_its_type_and_inbox_id_in_a_cloudevents_envelope(
    shared_redis: RedisServer, aredis: Redis
) -> None:
    settings = make_settings(shared_redis, max_tries=1)
    before = time.time()
    job_ids = {
        inbox: await enqueue_validation(aredis, request(inbox), settings=settings)
        for inbox in ("stream-a", "stream-b")
    }
    with structlog.testing.capture_logs() as logs:
        await burst(settings)
    entries = await aredis.xrange(settings.events_stream)
    assert len(entries) == len(job_ids)
    finished = {line["inbox_id"]: line for line in logs if line["event"] == "job_finished"}
    assert len(finished) == len([line for line in logs if line["event"] == "job_finished"]) == len(job_ids)
    for _, fields in entries:
        assert set(fields) == {b"event", b"type", b"inbox_id"}
        event = json.loads(fields[b"event"])
        assert (fields[b"type"].decode(), fields[b"inbox_id"].decode()) == (event["type"], event["subject"])
        assert set(event) == ENVELOPE
        job_id = job_ids[event["subject"]]
        result = json.loads(await aredis.get(keys.result_key(job_id)))
        assert result["r"] == event  # the arq result is the same event
        enqueued_ms = result["et"]
        assert (event["specversion"], event["source"], event["type"]) == ("1.0", SOURCE, COMPLETED)
        assert event["id"] == event_id(job_id, enqueued_ms)  # derived from the job: a rerun keeps it
        assert event["datacontenttype"] == "application/json"
        stamped = datetime.fromisoformat(event["time"])
        assert stamped.utcoffset() is not None and before <= stamped.timestamp() <= time.time()
        assert event["data"]["inbox_id"] == event["subject"]
        logged = finished[event["subject"]]  # and one log line says the same
        assert (logged["event_id"], logged["type"], logged["error_code"]) == (
            event["id"],
            event["type"],
            event["data"]["error_code"],
        )


async def test_the_stream_is_trimmed_to_about_its_maxlen(redis_server: RedisServer) -> None:
    client = Redis.from_url(redis_server.url)
    try:
        await client.config_set("stream-node-max-entries", NODE_ENTRIES)
        settings = make_settings(redis_server, events_maxlen=MAXLEN)
        jobs = 3 * MAXLEN
        for n in range(jobs):  # unreadable payloads: each ends in a rejected event, no network
            await write_raw(client, settings, f"trim-{n}", raw_job({"not": "a payload"}))
        await burst(settings)
        assert await client.zcard(settings.queue_name) == 0  # every job ran and wrote its event
        length = await client.xlen(settings.events_stream)
        assert MAXLEN <= length <= MAXLEN + NODE_ENTRIES
        entries = await client.xrange(settings.events_stream)
        assert {fields[b"type"] for _, fields in entries} == {REJECTED.encode()}
    finally:
        await client.aclose()
