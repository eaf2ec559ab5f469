"""Redis over TLS (rediss://) for the worker, the producer and the commands, against a real
redis-server that speaks only TLS on loopback, its certificate from the test CA."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.servers.certs import PKI
from tests.servers.redis import TlsRedisServer
from tests.worker.support import burst, cli_env, make_settings, request, run_cli, stream_events
from worker.messages.producer import enqueue_validation
from worker.runtime import redis_pool
from worker.runtime.arq_settings import redis_settings
from worker.settings import Settings


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory, pki: PKI) -> Iterator[TlsRedisServer]:
    server = TlsRedisServer(Path(tmp_path_factory.mktemp("tls-redis")), pki)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def tls_settings(server: TlsRedisServer, ca_file: Path | None) -> Settings:
    return make_settings(server, max_tries=1, metrics_port=0, redis_ca_file=ca_file)


async def test_a_job_goes_through_redis_over_tls(tls_redis: TlsRedisServer, pki: PKI) -> None:
    settings = tls_settings(tls_redis, pki.ca_file)
    producer = await redis_pool.connect(settings)
    try:
        await enqueue_validation(producer, request(), settings=settings)
    finally:
        await producer.aclose(close_connection_pool=True)
    worker = await burst(settings)
    assert worker.jobs_complete == 1
    [event] = stream_events(tls_redis.client(), settings.events_stream)
    assert event["subject"] == "inbox-1"


@pytest.mark.parametrize("trust", ["system", "rogue"])
async def test_a_redis_certificate_the_worker_cannot_verify_is_refused(
    tls_redis: TlsRedisServer, pki: PKI, trust: str
) -> None:
    settings = tls_settings(tls_redis, None if trust == "system" else pki.rogue_ca_file)
    with pytest.raises(RedisConnectionError, match="certificate verify failed"):
        await redis_pool.connect(settings)


async def test_the_certificate_must_name_the_host(
    tmp_path: Path, pki: PKI, tls_redis: TlsRedisServer
) -> None:
    elsewhere = TlsRedisServer(tmp_path, pki, pki.wrong_host).start()  # signed by the CA, for another name
    try:
        settings = tls_settings(elsewhere, pki.ca_file)
        with pytest.raises(RedisConnectionError, match="match"):
            await redis_pool.connect(settings)
    finally:
        elsewhere.stop()
    assert redis_settings(tls_settings(tls_redis, pki.ca_file)).ssl_check_hostname  # arq's CLI too


def test_commands_reach_redis_over_tls(tls_redis: TlsRedisServer, pki: PKI) -> None:
    settings = tls_settings(tls_redis, pki.ca_file)
    env = {**cli_env(settings), "INBOXCHECK_REDIS_CA_FILE": str(pki.ca_file)}
    listed = run_cli("list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []
    del env["INBOXCHECK_REDIS_CA_FILE"]
    refused = run_cli("list", "--json", env=env)
    assert refused.returncode != 0 and "cannot reach Redis" in refused.stderr
