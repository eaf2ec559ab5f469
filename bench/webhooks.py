"""Webhook delivery throughput: N events on the stream, `inboxcheck webhooks` (a real subprocess)
delivering them to M receivers on loopback that verify every signature (in this process, so the
process measured spends its CPU on delivery alone).

    python -m bench.webhooks [--events 2000] [--endpoints 2] [--concurrency 4]

Prints deliveries per second from the first POST to the last, and the webhooks process's CPU
time per delivery (its start-up included).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import signal
import tempfile
import time
from pathlib import Path

from redis.asyncio import Redis

from tests.servers.redis import RedisServer
from tests.servers.webhook_receiver import WebhookReceiver
from tests.worker.webhooks.support import (
    add_endpoint,
    append,
    batch_of,
    unsettled,
    webhook_settings,
    webhooks_process,
)
from worker.logs import configure_logging

POLL_S = 0.01
DEADLINE_S = 300.0
STOP_S = 30.0


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def run(events: int, endpoints: int, concurrency: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp)).start()
        receivers = [WebhookReceiver().start() for _ in range(endpoints)]
        try:
            settings = webhook_settings(server, webhook_concurrency=concurrency, webhook_timeout=10.0)
            redis = Redis.from_url(server.url)
            for receiver in receivers:
                _, receiver.secret = await add_endpoint(redis, settings, receiver.url)
            await append(redis, settings, *batch_of(events))
            cpu_before = children_cpu_s()
            process = webhooks_process(settings, Path(tmp) / "webhooks.log")
            deadline = time.monotonic() + DEADLINE_S
            while await unsettled(redis, settings):
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the webhooks process did not deliver everything")
                await asyncio.sleep(POLL_S)
            process.send_signal(signal.SIGTERM)
            process.wait(STOP_S)
            cpu = children_cpu_s() - cpu_before
            times = [r.at for receiver in receivers for r in receiver.received]
            delivered = sum(len(receiver.verified_ids()) for receiver in receivers)
            elapsed = max(times) - min(times)
            print(f"events={events} endpoints={endpoints} concurrency={concurrency}")
            print(
                f"delivered={delivered}/{events * endpoints} in {elapsed:.2f} s: "
                f"{delivered / elapsed:.0f} deliveries/s; the process's CPU "
                f"{cpu * 1000 / max(delivered, 1):.2f} ms/delivery"
            )
            await redis.aclose()
        finally:
            for receiver in receivers:
                receiver.stop()
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--endpoints", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    configure_logging("console", "WARNING")
    asyncio.run(run(args.events, args.endpoints, args.concurrency))


if __name__ == "__main__":
    main()
