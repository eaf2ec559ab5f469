"""The worker process for the end-to-end scenarios.

Real jobs: exactly what `inboxcheck worker` runs (worker.cli.main main(["worker"])), configured through
INBOXCHECK_* variables. With --noop: the same arq worker settings (worker_kwargs) with the job
function swapped for one that does nothing -- the queue's own ceiling.
--loop uvloop installs uvloop first; --ssl-max-size sets another TLS read buffer size, as
the memory rows do (bench.scenario.apply_ssl_max_size).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

from bench.scenario import apply_ssl_max_size


async def noop_job(ctx: dict[str, Any], payload: Any = None, **_: Any) -> None:
    return None


async def run_noop() -> None:
    from arq.worker import func

    from worker.messages import envelope
    from worker.runtime import redis_pool
    from worker.runtime.arq_settings import ARQ_MAX_TRIES_BACKSTOP, worker_kwargs
    from worker.runtime.inbox_worker import InboxWorker
    from worker.settings import get_settings

    settings = get_settings()
    pool = await redis_pool.connect(settings)
    kwargs = worker_kwargs(settings)
    kwargs["functions"] = [func(noop_job, name=envelope.FUNCTION_NAME, max_tries=ARQ_MAX_TRIES_BACKSTOP)]
    worker = InboxWorker(**kwargs, redis_pool=pool, handle_signals=False)
    main_task = asyncio.ensure_future(worker.main())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await worker.close()
    main_task.cancel()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--noop", action="store_true")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--ssl-max-size", type=int, default=0)
    parser.add_argument(
        "--no-pacing", action="store_true", help="diagnostic: run checks outside worker pacing"
    )
    args = parser.parse_args()
    if args.no_pacing:
        from worker.rechecks import hooks

        async def unpaced(ops, request, check, **_):
            # No lock, slots or done-mark read (Pacer.check); the append still writes one event.
            return await check(None)

        hooks.paced = unpaced
    apply_ssl_max_size(args.ssl_max_size)
    if args.loop == "uvloop":
        import uvloop

        uvloop.install()
    if args.noop:
        asyncio.run(run_noop())
        return
    from worker.cli.main import main as inboxcheck  # `inboxcheck worker`, logging set up as in production

    raise SystemExit(inboxcheck(["worker"]))


if __name__ == "__main__":
    main()
