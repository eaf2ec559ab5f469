"""What the OAuth2 token step costs: a refresh-token fetch over loopback (plain HTTP and TLS),
many at once, and a token taken from the worker's Redis cache instead.

    python -m bench.token_step [--n 200] [--concurrency 50]

Everything runs on 127.0.0.1: the token endpoint stand-in from tests/servers/oauth.py, trustme
certificates, a redis-server of its own. Prints one line per figure.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from jobs.destinations import ALLOW_ALL
from jobs.options import CheckOptions
from jobs.request import ValidationRequest, parse_request
from jobs.token_step import DirectTokens, TokenSource, obtain_token
from tests.servers.certs import PKI
from tests.servers.oauth import TokenEndpoint
from tests.servers.redis import RedisServer
from worker.messages.sealing import Sealer, generate_key
from worker.runtime.token_cache import RedisTokens

MS = 1000.0


def requests_for(endpoint: TokenEndpoint, count: int) -> list[ValidationRequest]:
    endpoint.add_client("bench-app", "bench-secret")
    out = []
    for n in range(count):
        email = f"bench{n}@inboxcheck.test"
        out.append(
            parse_request(
                {
                    "inbox_type": "CUSTOM_SMTP",
                    "email": email,
                    "auth": "oauth2",
                    "oauth2": {
                        "refresh_token": endpoint.issue_refresh_token(email, "bench-app"),
                        "client_id": "bench-app",
                        "client_secret": "bench-secret",
                        "token_url": endpoint.token_url,
                    },
                    "smtp_host": "127.0.0.1",
                    "smtp_port": 1,
                    "imap_host": "127.0.0.1",
                    "imap_port": 1,
                }
            )
        )
    return out


async def timed(request: ValidationRequest, options: CheckOptions, source: TokenSource) -> float:
    started = time.perf_counter()
    outcome = await obtain_token(request, options, source)
    assert outcome.token is not None, outcome.error
    return (time.perf_counter() - started) * MS


def report(label: str, samples: list[float]) -> None:
    cut = statistics.quantiles(samples, n=20)
    print(
        f"{label:<34} n={len(samples):<5} median {statistics.median(samples):7.2f} ms   p95 {cut[-1]:7.2f} ms"
    )


async def sequential(endpoint: TokenEndpoint, options: CheckOptions, n: int, label: str) -> None:
    report(label, [await timed(r, options, DirectTokens()) for r in requests_for(endpoint, n)])


async def concurrent(endpoint: TokenEndpoint, options: CheckOptions, n: int, c: int) -> None:
    gate = asyncio.Semaphore(c)

    async def one(request: ValidationRequest) -> float:
        async with gate:
            return await timed(request, options, DirectTokens())

    started = time.perf_counter()
    samples = await asyncio.gather(*(one(r) for r in requests_for(endpoint, n)))
    elapsed = time.perf_counter() - started
    report(f"fetch, TLS, {c} at once", list(samples))
    print(f"{'  throughput':<34} {n / elapsed:7.0f} fetches/s")


async def cached(endpoint: TokenEndpoint, options: CheckOptions, redis_url: str, n: int) -> None:
    redis: Any = Redis.from_url(redis_url)
    try:
        request = requests_for(endpoint, 1)[0]
        source = RedisTokens(redis, Sealer(generate_key()), lock_ttl_s=5)
        await timed(request, options, source)  # fills the cache
        report("cache hit (Redis, sealed)", [await timed(request, options, source) for _ in range(n)])
    finally:
        await redis.aclose()


async def main(n: int, c: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        pki = PKI(Path(tmp) / "pki")
        options = CheckOptions(step_timeout=10, ca_file=str(pki.ca_file), destinations=ALLOW_ALL)
        plain = TokenEndpoint().start()
        tls = TokenEndpoint(ssl_context=pki.valid.ssl_context).start()
        redis = RedisServer(Path(tmp) / "redis").start()
        try:
            await sequential(plain, options, n, "fetch, plain HTTP, one at a time")
            await sequential(tls, options, n, "fetch, TLS, one at a time")
            await concurrent(tls, options, n, c)
            await cached(plain, options, redis.url, n)
        finally:
            redis.stop()
            tls.stop()
            plain.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(main(args.n, args.concurrency))
