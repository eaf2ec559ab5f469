"""Webhook delivery throughput: N events through `inboxcheck webhooks`' dispatcher (in this
process) to M receivers on loopback that verify every signature, and the time until the last one
is delivered and the stream acknowledged.

    python -m bench.webhooks [--events 2000] [--endpoints 2] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import tempfile
import time
from pathlib import Path

from redis.asyncio import Redis

from tests.servers.redis import RedisServer
from tests.servers.webhook_receiver import WebhookReceiver
from tests.worker.webhooks.support import add_endpoint, append, batch_of, running, unsettled, webhook_settings
from worker.logs import configure_logging

POLL_S = 0.01
DEADLINE_S = 300.0


async def run(events: int, endpoints: int, concurrency: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp)).start()
        receivers = [WebhookReceiver().start() for _ in range(endpoints)]
        try:
            settings = webhook_settings(server, webhook_concurrency=concurrency, webhook_timeout=10.0)
            redis = Redis.from_url(server.url)
            for receiver in receivers:
                _, receiver.secret = await add_endpoint(redis, settings, receiver.url)
            batch = batch_of(events)
            cpu0 = time.process_time()
            async with running(settings):
                started = time.monotonic()
                await append(redis, settings, *batch)
                deadline = started + DEADLINE_S
                while await unsettled(redis, settings):
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"not all delivered after {DEADLINE_S} s")
                    await asyncio.sleep(POLL_S)
                elapsed = time.monotonic() - started
            cpu = time.process_time() - cpu0
            delivered = sum(len(r.verified_ids()) for r in receivers)
            rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"events={events} endpoints={endpoints} concurrency={concurrency}")
            print(
                f"delivered={delivered}/{events * endpoints} in {elapsed:.2f} s: "
                f"{delivered / elapsed:.0f} deliveries/s, "
                f"CPU {cpu * 1000 / max(delivered, 1):.2f} ms/delivery "
                f"(receivers' signature checks included), peak RSS {rss_mb:.0f} MB"
            )
            await redis.aclose()
        finally:
            for receiver in receivers:
                receiver.stop()
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--endpoints", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    configure_logging("console", "WARNING")  # one line per delivery would be the benchmark
    asyncio.run(run(args.events, args.endpoints, args.concurrency))


if __name__ == "__main__":
    main()
