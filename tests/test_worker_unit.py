"""In-process tests of the worker's logic: arq in burst mode against a real redis-server."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from jobs.request import parse_request
from tests.servers.redis import RedisServer
from tests.worker_support import closed_port, scan_for, stream_events
from worker.cli import main as cli
from worker.messages import envelope as serialization
from worker.messages import keys, payload
from worker.messages.events import COMPLETED, REJECTED
from worker.messages.producer import enqueue_validation, envelope
from worker.messages.sealing import Sealer, generate_key
from worker.runtime.arq_settings import InboxWorker, check_settings, redis_settings, worker_kwargs
from worker.settings import Settings, SettingsError

PASSWORD = "unit-s3cret-Pa55"
KEY = generate_key()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    server = RedisServer(tmp_path_factory.mktemp("redis-unit")).start()
    yield server
    server.stop()


def make_settings(redis_server: RedisServer, **changes: Any) -> Settings:
    name = uuid.uuid4().hex[:8]
    base: dict[str, Any] = dict(
        redis_url=redis_server.url,
        queue_name=f"q:{name}",
        events_stream=f"ev:{name}",
        step_timeout=1,
        check_timeout=1,
        job_timeout=5,
        max_tries=3,
        retry_backoff=0.01,
        secret_key=KEY,
        allow_plaintext_credentials=False,
        start_local_redis=False,
        poll_delay=0.01,
    )
    base.update(changes)
    return Settings(**base)


def request_fields(inbox_id: str = "inbox-1", port: int | None = None, **extra: Any) -> dict[str, Any]:
    port = port or closed_port()
    return {
        "inbox_id": inbox_id,
        "inbox_type": "CUSTOM_SMTP",
        "email": "u@example.com",
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "imap_host": "127.0.0.1",
        "imap_port": port,
        "smtp_password": PASSWORD,
        **extra,
    }


def request(inbox_id: str = "inbox-1", port: int | None = None, **extra: Any) -> Any:
    return parse_request(request_fields(inbox_id, port, **extra))


async def burst(settings: Settings) -> None:
    worker = InboxWorker(
        **worker_kwargs(settings), redis_settings=redis_settings(settings), burst=True, handle_signals=False
    )
    try:
        await worker.main()
    finally:
        await worker.close()


@pytest.fixture
async def aredis(redis_server: RedisServer) -> Any:
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def test_retryable_outcome_retried_then_one_event_with_attempts(redis_server, aredis) -> None:
    settings = make_settings(redis_server)
    job_id = await enqueue_validation(aredis, request(), settings=settings)
    await burst(settings)
    events = stream_events(redis_server.client(), settings.events_stream)
    assert len(events) == 1
    data = events[0]["data"]
    assert (events[0]["type"], data["error_code"], data["reason"]) == (
        COMPLETED,
        "CONNECTION_FAILED",
        "CONNECTION_REFUSED",
    )
    assert data["attempts"] == settings.max_tries
    # The arq result is the same event.
    result = json.loads(await aredis.get(keys.result_key(job_id)))
    assert result["r"] == events[0]
    assert result["a"] == []  # the credentials are not kept with the result


async def test_same_request_twice_is_one_job(redis_server, aredis) -> None:
    settings = make_settings(redis_server)
    first = await enqueue_validation(aredis, request(), settings=settings)
    port = int(json.loads(await aredis.get(keys.job_key(first)))["a"][0]["request"]["smtp_port"])
    again = await enqueue_validation(aredis, request(port=port), settings=settings)
    assert first == again and await aredis.zcard(settings.queue_name) == 1
    await burst(settings)
    # Fresh result: still the same job, nothing new queued.
    assert await enqueue_validation(aredis, request(port=port), settings=settings) == first
    assert await aredis.zcard(settings.queue_name) == 0
    assert await aredis.xlen(settings.events_stream) == 1


def test_job_id_is_keyed_and_ignores_nothing() -> None:
    sealer = Sealer(KEY)
    one = request(port=1)
    assert payload.job_id_for(one, sealer) != payload.job_id_for(
        request(port=1, smtp_password="other"), sealer
    )
    assert payload.job_id_for(one, sealer) != payload.job_id_for(one, Sealer(generate_key()))
    assert payload.job_id_for(one, None) == payload.job_id_for(request(port=1, smtp_password="x"), None)
    assert payload.job_id_for(one, sealer) != payload.job_id_for(request("inbox-2", port=1), sealer)
    assert payload.job_id_for(one, sealer, "queue-a") != payload.job_id_for(one, sealer, "queue-b")


async def test_rerun_after_crash_appends_no_second_event(redis_server, aredis) -> None:
    settings = make_settings(redis_server, max_tries=1)
    job_id = await enqueue_validation(aredis, request(), settings=settings)
    raw_job = await aredis.get(keys.job_key(job_id))
    await burst(settings)
    # As if the worker had died after the XADD but before arq recorded the result.
    await aredis.delete(keys.result_key(job_id))
    await aredis.set(keys.job_key(job_id), raw_job)
    await aredis.zadd(settings.queue_name, {job_id: 1})
    await burst(settings)
    events = stream_events(redis_server.client(), settings.events_stream)
    assert len(events) == 1
    assert json.loads(await aredis.get(keys.result_key(job_id)))["r"]["id"] == events[0]["id"]


async def write_raw(aredis: Redis, settings: Settings, job_id: str, raw: bytes) -> None:
    await aredis.set(keys.job_key(job_id), raw)
    await aredis.zadd(settings.queue_name, {job_id: int(time.time() * 1000)})


def raw_job(job_payload: Any) -> bytes:
    return envelope(job_payload, int(time.time() * 1000))


async def test_hostile_payloads_end_in_rejected_events(redis_server, aredis) -> None:
    settings = make_settings(redis_server)
    good = payload.encode(request("victim"), Sealer(KEY))
    nested: Any = []
    for _ in range(100_000):
        nested = [nested]
    hostile = {
        "garbage": b"\x80\x81\xfe\xff not json at all \x00",
        "pickle": b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00}\x94.",
        "huge": raw_job({"v": 1, "request": {"inbox_id": "x" * 200_000}, "credentials": {"plain": {}}}),
        "deep": b'{"t":null,"f":"validate_inbox","a":[' + b"[" * 50_000 + b"]" * 50_000 + b'],"k":{},"et":1}',
        "envelope-types": b'{"t":"1","f":"validate_inbox","a":[{}],"k":{},"et":1}',
        "wrong-function": b'{"t":null,"f":"os.system","a":["rm -rf /"],"k":{},"et":1}',
        "et-string": b'{"t":null,"f":"validate_inbox","a":[{}],"k":{},"et":"soon"}',
        "kwargs": b'{"t":null,"f":"validate_inbox","a":[{}],"k":{"x":1},"et":1}',
        "list-payload": raw_job([1, 2, 3]),
        "wrong-types": raw_job(
            {
                "v": 1,
                "request": {"inbox_id": "victim", "inbox_type": 7, "email": ["a"], "smtp_port": "abc"},
                "credentials": {"sealed": good["credentials"]["sealed"]},
            }
        ),
        "plaintext-refused": raw_job({**good, "credentials": {"plain": {"smtp_password": "pw"}}}),
        "wrong-key": raw_job(payload.encode(request("victim"), Sealer(generate_key()))),
        "other-inbox": raw_job({**good, "request": {**good["request"], "inbox_id": "thief"}}),
        "tampered": raw_job({**good, "credentials": {"sealed": good["credentials"]["sealed"][:-4] + "AAAA"}}),
        "password-in-request": raw_job({**good, "request": {**good["request"], "smtp_password": "pw"}}),
    }
    for name, raw in hostile.items():
        await write_raw(aredis, settings, f"hostile-{name}", raw)
    await burst(settings)
    events = stream_events(redis_server.client(), settings.events_stream)
    assert len(events) == len(hostile)
    assert {e["type"] for e in events} == {REJECTED}
    assert {e["data"]["error_code"] for e in events} == {"INVALID_REQUEST"}
    reasons = {
        json.loads(await aredis.get(keys.result_key(f"hostile-{n}")))["r"]["data"]["reason"]
        for n in ("wrong-key", "plaintext-refused", "other-inbox", "tampered")
    }
    assert reasons == {"SEALED_CREDENTIALS"}
    for name in ("garbage", "deep", "wrong-types", "huge"):
        result = json.loads(await aredis.get(keys.result_key(f"hostile-{name}")))
        assert result["r"]["data"]["reason"] == "MALFORMED_PAYLOAD"
    assert not await aredis.zcard(settings.queue_name)


async def test_producer_without_key_refuses_plaintext(redis_server, aredis) -> None:
    settings = make_settings(redis_server, secret_key=None)
    with pytest.raises(payload.PlaintextRefused, match="INBOXCHECK_SECRET_KEY"):
        await enqueue_validation(aredis, request("refused"), settings=settings)
    assert not await aredis.zcard(settings.queue_name)
    assert PASSWORD.encode() not in b"".join(
        [
            await aredis.get(k) or b""
            async for k in aredis.scan_iter("arq:job:*")
            if await aredis.type(k) == b"string"
        ]
    )


async def test_worker_without_key_refuses_sealed_and_plaintext_needs_permission(redis_server, aredis) -> None:
    producer_settings = make_settings(redis_server)
    worker_settings = producer_settings.model_copy(update={"secret_key": None})
    await enqueue_validation(aredis, request("sealed"), settings=producer_settings)
    # A producer without a key writes plaintext only when told it is development.
    plain_settings = producer_settings.model_copy(
        update={"secret_key": None, "allow_plaintext_credentials": True}
    )
    await enqueue_validation(aredis, request("plain"), settings=plain_settings)
    await burst(worker_settings)
    events = {e["subject"]: e for e in stream_events(redis_server.client(), producer_settings.events_stream)}
    assert events["sealed"]["type"] == REJECTED
    assert "no INBOXCHECK_SECRET_KEY" in events["sealed"]["data"]["problems"][0]
    assert events["plain"]["type"] == REJECTED
    assert events["plain"]["data"]["reason"] == "SEALED_CREDENTIALS"
    # Allowed explicitly, plaintext is checked.
    dev = worker_settings.model_copy(
        update={
            "allow_plaintext_credentials": True,
            "events_stream": producer_settings.events_stream + ":dev",
        }
    )
    await enqueue_validation(aredis, request("plain2"), settings=dev)
    await burst(dev)
    [event] = stream_events(redis_server.client(), dev.events_stream)
    assert event["type"] == COMPLETED


async def test_no_password_in_redis_in_sealed_mode(redis_server, aredis) -> None:
    settings = make_settings(redis_server, max_tries=1)
    for n in range(3):
        await enqueue_validation(aredis, request(f"scan-{n}"), settings=settings)
    assert scan_for(redis_server.client(), [PASSWORD.encode()]) == []  # queued jobs are sealed
    await burst(settings)
    assert scan_for(redis_server.client(), [PASSWORD.encode()]) == []


def test_job_timeout_must_exceed_check_deadline(redis_server) -> None:
    with pytest.raises(SettingsError, match="INBOXCHECK_JOB_TIMEOUT"):
        check_settings(make_settings(redis_server, check_timeout=30, job_timeout=31))


def test_deserializer_never_raises() -> None:
    for raw in (b"", b"null", b"[]", b'"x"', b"{", b"\xff" * 10, b"1e999999", b'{"f":1}'):
        job = serialization.deserialize_job(raw)
        assert job["f"] == serialization.FUNCTION_NAME and "unreadable" in job["k"]


def run_cli(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker", *args],
        capture_output=True,
        text=True,
        env=env,
        input=stdin,
        timeout=60,
    )


def cli_env(settings: Settings) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("INBOXCHECK_")}
    env.update(
        {
            "INBOXCHECK_REDIS_URL": settings.redis_url,
            "INBOXCHECK_QUEUE_NAME": settings.queue_name,
            "INBOXCHECK_EVENTS_STREAM": settings.events_stream,
            "INBOXCHECK_SECRET_KEY": KEY,
        }
    )
    return env


def test_schema_and_keygen(capsys: pytest.CaptureFixture[str]) -> None:
    # In-process: these commands read no settings and touch nothing outside; the subprocess CLI
    # (`python -m worker`) is exercised by the enqueue and events tests below.
    for which in ("request", "event", "payload"):
        assert cli.main(["schema", which]) == 0
        assert json.loads(capsys.readouterr().out)["type"] == "object"
    assert cli.main(["keygen"]) == 0
    Sealer(capsys.readouterr().out.strip())  # a usable key
    with pytest.raises(SystemExit) as usage:
        cli.main(["schema", "nope"])
    assert usage.value.code == 2


async def test_enqueue_bulk_csv_reports_bad_rows_and_enqueues_good(
    redis_server, aredis, tmp_path: Path
) -> None:
    settings = make_settings(redis_server, max_tries=1)
    port = closed_port()
    csv_file = tmp_path / "inboxes.csv"
    csv_file.write_text(
        "inbox_id,inbox_type,email,smtp_host,smtp_port,imap_host,imap_port,smtp_password\n"
        f"a,CUSTOM_SMTP,a@example.com,127.0.0.1,{port},127.0.0.1,{port},{PASSWORD}\n"
        f"b,CUSTOM_SMTP,not-an-email,127.0.0.1,{port},127.0.0.1,{port},{PASSWORD}\n"
        f"c,CUSTOM_SMTP,c@example.com,127.0.0.1,{port},127.0.0.1,{port},{PASSWORD}\n"
    )
    result = run_cli("enqueue", "--requests", str(csv_file), "--wait", "0", env=cli_env(settings))
    assert result.returncode == 2
    assert "line 3: email:" in result.stderr and PASSWORD not in result.stderr + result.stdout
    assert await aredis.zcard(settings.queue_name) == 2
    await burst(settings)
    jsonl = tmp_path / "inboxes.jsonl"
    jsonl.write_text(
        "\n".join(json.dumps(request_fields(i, port, email=f"{i}@example.com")) for i in ("a", "c")) + "\n"
    )
    result = run_cli("enqueue", "--requests", str(jsonl), "--json", "--wait", "10", env=cli_env(settings))
    assert result.returncode == 1, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(e["subject"] for e in lines) == ["a", "c"]


async def test_enqueue_wait_and_events_group_resume(redis_server, aredis, tmp_path: Path) -> None:
    settings = make_settings(redis_server, max_tries=1)
    req = tmp_path / "req.json"
    req.write_text(json.dumps(request_fields("w1")))
    env = cli_env(settings)
    queued = run_cli("enqueue", "--request", str(req), "--json", env=env)
    assert queued.returncode == 0 and "job_id" in json.loads(queued.stdout)
    pending = run_cli("enqueue", "--request", str(req), "--wait", "0.2", env=env)
    assert pending.returncode == 3 and "still queued" in pending.stderr
    await burst(settings)
    waited = run_cli("enqueue", "--request", str(req), "--wait", "5", "--json", env=env)
    assert waited.returncode == 1 and json.loads(waited.stdout)["data"]["error_code"] == "CONNECTION_FAILED"
    first = run_cli("events", "--group", "g", "--consumer", "c1", env=env)
    assert first.returncode == 0 and len(first.stdout.splitlines()) == 1
    again = run_cli("events", "--group", "g", "--consumer", "c1", env=env)
    assert again.stdout == ""  # acknowledged: a restarted consumer does not see it again
    assert len(run_cli("events", env=env).stdout.splitlines()) == 1
    bad = run_cli("enqueue", "--request", str(tmp_path / "missing.json"), env=env)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


async def test_enqueue_without_key_exits_2_naming_it(redis_server, aredis, tmp_path: Path) -> None:
    settings = make_settings(redis_server)
    req = tmp_path / "req.json"
    req.write_text(json.dumps(request_fields("nokey")))
    env = {k: v for k, v in cli_env(settings).items() if k != "INBOXCHECK_SECRET_KEY"}
    result = run_cli("enqueue", "--request", str(req), env=env)
    assert result.returncode == 2 and "INBOXCHECK_SECRET_KEY" in result.stderr
    assert "Traceback" not in result.stderr and PASSWORD not in result.stderr
    assert not await aredis.zcard(settings.queue_name)
    bad_key = run_cli("enqueue", "--request", str(req), env={**env, "INBOXCHECK_SECRET_KEY": "nope"})
    assert bad_key.returncode == 2 and "INBOXCHECK_SECRET_KEY: is not a Fernet key" in bad_key.stderr


def test_an_unexpected_value_error_prints_no_input(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pydantic import BaseModel

    class Strict(BaseModel):
        port: int

    def leaky(_args: Any, _settings: Any) -> int:
        Strict(port=PASSWORD)  # a pydantic ValidationError: a ValueError whose text holds the input
        return 0

    monkeypatch.setattr("worker.cli.keygen.run", leaky)
    assert cli.main(["keygen"]) == 2
    err = capsys.readouterr().err
    assert PASSWORD not in err and "ValidationError" in err


@pytest.mark.parametrize("body", [b"[1, 2]", b'"text"', b"3", b"null"])
def test_a_sealed_body_that_is_not_an_object_is_a_seal_error(body: bytes) -> None:
    from cryptography.fernet import Fernet

    from worker.messages.sealing import SealError

    token = Fernet(KEY).encrypt(body).decode()  # right key, wrong shape: a buggy producer
    with pytest.raises(SealError):
        Sealer(KEY).open(token, "inbox-1")
    fields = {k: v for k, v in request_fields("inbox-1", 25).items() if k != "smtp_password"}
    with pytest.raises(payload.PayloadRejected) as rejected:  # a rejected event, not a crash
        payload.decode(
            {"v": payload.PAYLOAD_VERSION, "request": fields, "credentials": {"sealed": token}},
            Sealer(KEY),
            allow_plaintext=False,
        )
    assert rejected.value.reason.value == "SEALED_CREDENTIALS"


@pytest.mark.parametrize(
    "raw",
    [
        b"\x00\xffgarbage",
        b"[1]",
        b'{"f": "validate_inbox", "a": [], "et": 123}',
        b'{"f": "nope", "et": 1700000000000}',
        b"x" * (serialization.MAX_JOB_BYTES + 1),
    ],
)
def test_an_unreadable_job_gets_the_same_event_id_every_time_it_is_read(raw: bytes) -> None:
    from worker.runtime.job import event_id

    first, later = serialization.deserialize_job(raw), serialization.deserialize_job(raw)
    assert "unreadable" in first["k"]
    assert event_id("job-1", first["et"]) == event_id("job-1", later["et"])
    assert first["et"] != serialization.deserialize_job(raw + b" ")["et"] or b"et" in raw


async def test_health_checks_this_hosts_own_worker(redis_server, aredis) -> None:
    import asyncio
    import os
    import socket

    from worker.cli import liveness as health_cmd

    settings = make_settings(redis_server, health_check_interval=5)
    assert await health_cmd.alive(settings) is None  # no worker yet
    worker = InboxWorker(
        **worker_kwargs(settings), redis_settings=redis_settings(settings), handle_signals=False
    )
    main = asyncio.ensure_future(worker.main())
    key = keys.worker_alive_key(socket.gethostname(), os.getpid())
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while not await aredis.exists(key):
            assert asyncio.get_running_loop().time() < deadline and not main.done(), "no liveness key"
            await asyncio.sleep(0.02)
        assert await aredis.get(key) == settings.queue_name.encode()
        assert 10_000 < await aredis.pttl(key) <= 15_000  # three intervals
        assert await health_cmd.alive(settings) == key
        # another pod's worker does not make this one healthy; the fleet-wide check says alive
        assert await health_cmd.alive(settings, hostname="other-pod") is None
        assert await health_cmd.alive(settings.model_copy(update={"queue_name": "q:other"})) is None
        assert "j_complete=" in await health_cmd.alive(settings, any_worker=True)
        await aredis.delete(key)  # as when this worker hangs: its key expires
        assert await health_cmd.alive(settings) is None
        assert await health_cmd.alive(settings, any_worker=True) is not None
    finally:
        await worker.close()
        main.cancel()
    assert not await aredis.exists(key)
