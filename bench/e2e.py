"""End to end through arq (scenario 3) and arq no-op (scenario 5).

One worker process (bench.e2e_worker: `inboxcheck worker`'s run_worker, or the no-op variant)
with INBOXCHECK_MAX_JOBS=C against a local redis-server. The bench enqueues N requests with
the project's producer (worker.messages.producer.enqueue_validation, credentials sealed with a
fresh key as in production) and waits until N events are on the events stream (no-op: until N
arq results exist). Worker CPU = utime+stime from /proc/<pid>/stat over that window; peak RSS =
VmHWM of the worker after clear_refs reset it at the window's start.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from bench.scenario import machine_busy_s, reset_peak, rss_kb, summary
from bench.servers import LOOPBACK, mail_request
from jobs.time_units import MS_PER_S

ROOT = Path(__file__).resolve().parent.parent
WAIT_LIMIT_S = 600
# How often the bench looks for finished jobs: fine-grained, so wall time is not rounded up.
POLL_S = 0.01
PY_SPY_ATTACH_S = 1.0
WARMUP = 2


class NotAvailable(Exception):
    pass


def proc_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_worker(
    root: Path,
    redis_port: int,
    c: int,
    ca_file: str,
    *,
    loop: str = "asyncio",
    ssl_max_size: int = 0,
    noop: bool = False,
    no_pacing: bool = False,
    extra_env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen, dict, str, Path]:
    """One worker process on its own queue and stream (named by a fresh tag), sealing key and
    settings in its environment: the process, that environment, the tag and its log file."""
    from worker.messages.sealing import generate_key

    tag = uuid.uuid4().hex[:8]
    key = generate_key()
    env = {
        **os.environ,
        "INBOXCHECK_REDIS_URL": f"redis://{LOOPBACK}:{redis_port}/0",
        "INBOXCHECK_QUEUE_NAME": f"bench:{tag}:queue",
        "INBOXCHECK_EVENTS_STREAM": f"bench:{tag}:events",
        "INBOXCHECK_MAX_JOBS": str(c),
        "INBOXCHECK_TLS_CA_FILE": ca_file,
        "INBOXCHECK_EHLO_HOSTNAME": "localhost",
        # The bench's servers are on loopback, which a worker refuses unless allowed.
        "INBOXCHECK_ALLOW_NETWORKS": "127.0.0.0/8",
        "INBOXCHECK_SECRET_KEY": key,
        "INBOXCHECK_START_LOCAL_REDIS": "false",
        # Per-host pacing caps connections to one mail host (10 by default): every bench check
        # goes to 127.0.0.1, so the cap is lifted to measure the worker, not the politeness policy.
        "INBOXCHECK_DEFAULT_HOST_LIMIT": "1000000",
        "INBOXCHECK_METRICS_PORT": "0",
        "INBOXCHECK_LOG_FORMAT": "json",
        "INBOXCHECK_LOG_LEVEL": os.environ.get("INBOXCHECK_LOG_LEVEL", "INFO"),
        "PYTHONPATH": str(ROOT),
        **(extra_env or {}),
    }
    cmd = [sys.executable, "-m", "bench.e2e_worker", "--loop", loop, "--ssl-max-size", str(ssl_max_size or 0)]
    if noop:
        cmd.append("--noop")
    if no_pacing:
        cmd.append("--no-pacing")
    log = root / f"worker-{tag}.log"
    popen = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    return popen, env, tag, log


def run(
    *,
    root: Path,
    redis_port: int,
    n: int,
    c: int,
    smtp_port: int,
    imap_port: int,
    ca_file: str,
    noop: bool = False,
    loop: str = "asyncio",
    ssl_max_size: int = 0,
    no_pacing: bool = False,
) -> dict:
    try:
        from worker.messages.producer import enqueue_validation  # noqa: F401
        from worker.messages.sealing import generate_key  # noqa: F401
    except ImportError as exc:  # the runner skips the e2e rows and runs the rest
        raise NotAvailable(f"worker/ not importable: {exc}") from None
    popen, env, tag, log = start_worker(
        root, redis_port, c, ca_file, loop=loop, ssl_max_size=ssl_max_size, noop=noop, no_pacing=no_pacing
    )
    try:
        return asyncio.run(_drive(popen, env, tag, n, c, smtp_port, imap_port, noop, log))
    finally:
        stop_worker(popen)


def stop_worker(popen: subprocess.Popen) -> None:
    if popen.poll() is None:
        popen.terminate()
        try:
            popen.wait(30)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait(5)


async def _drive(
    popen: subprocess.Popen,
    env: dict,
    tag: str,
    n: int,
    c: int,
    smtp_port: int,
    imap_port: int,
    noop: bool,
    log: Path,
) -> dict:
    from redis.asyncio import Redis

    from jobs.request import parse_request
    from worker.messages.producer import enqueue_validation
    from worker.settings import Settings

    settings = Settings(
        **{k[len("INBOXCHECK_") :].lower(): v for k, v in env.items() if k.startswith("INBOXCHECK_")}
    )
    from worker.messages.sealing import sealer_for

    sealer = sealer_for(settings.secret_key)
    redis = Redis(host=LOOPBACK, port=int(settings.redis_url.rsplit(":", 1)[1].split("/")[0]))

    def request(i: int, phase: str):
        return parse_request(mail_request(i, smtp_port, imap_port, inbox_id=f"{tag}-{phase}-{i}"))

    async def enqueue(reqs) -> list[str]:
        ids: list[str] = []
        for start in range(0, len(reqs), 200):
            ids += await asyncio.gather(
                *(
                    enqueue_validation(redis, r, settings=settings, sealer=sealer)
                    for r in reqs[start : start + 200]
                )
            )
        return ids

    async def done_count(ids: list[str]) -> int:
        if noop:
            total = 0
            for start in range(0, len(ids), 500):
                total += await redis.exists(*[f"arq:result:{j}" for j in ids[start : start + 500]])
            return total
        return await redis.xlen(settings.events_stream)

    async def wait_for(ids: list[str], count: int) -> None:
        deadline = time.monotonic() + WAIT_LIMIT_S
        while await done_count(ids) < count:
            if popen.poll() is not None:
                # The run is over: blocking the loop to read the log delays nothing.
                raise RuntimeError("worker exited:\n" + log.read_text()[-3000:])  # noqa: ASYNC240
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {await done_count(ids)} of {count} done after {WAIT_LIMIT_S}s")
            await asyncio.sleep(POLL_S)

    try:
        # Warm up: the worker imports, connects and runs a couple of checks before the clock starts.
        warm = [request(i, "warm") for i in range(WARMUP)]
        warm_ids = await enqueue(warm)
        await wait_for(warm_ids, WARMUP)
        reqs = [request(i, "run") for i in range(n)]
        pid = popen.pid
        base = rss_kb("VmRSS", pid)
        peak_reset = reset_peak(pid)
        profiler = None
        if os.environ.get("BENCH_PROFILE"):  # py-spy collapsed stacks of the worker over the window
            profiler = subprocess.Popen(  # noqa: ASYNC220 -- started once, before the clock runs
                [
                    "py-spy",
                    "record",
                    "--pid",
                    str(pid),
                    "--format",
                    "raw",
                    "--rate",
                    "200",
                    "--nonblocking",
                    "-o",
                    os.environ["BENCH_PROFILE"],
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            await asyncio.sleep(PY_SPY_ATTACH_S)  # py-spy gives no ready signal; profiling runs only
        cpu0, busy0, wall0 = proc_cpu_s(pid), machine_busy_s(), time.perf_counter()
        ids = await enqueue(reqs)
        enqueue_s = time.perf_counter() - wall0
        await wait_for(ids, n + (0 if noop else WARMUP))
        wall = time.perf_counter() - wall0
        cpu, busy = proc_cpu_s(pid) - cpu0, machine_busy_s() - busy0
        peak = rss_kb("VmHWM", pid)
        if profiler is not None:
            profiler.send_signal(2)
            profiler.wait(30)
        times: list[float] = []
        failures: dict[str, int] = {}
        if not noop:
            for _, fields in await redis.xrange(settings.events_stream):
                raw = fields.get(b"event") or next(iter(fields.values()))
                event = json.loads(raw)
                data = event.get("data") or {}
                if not str(data.get("inbox_id", event.get("subject", ""))).startswith(f"{tag}-run-"):
                    continue
                if data.get("duration_ms") is not None:
                    times.append(data["duration_ms"] / MS_PER_S)
                if data.get("status") != "valid":
                    key = f"{event.get('type')} {data.get('error_code')}/{data.get('reason')}"
                    failures[key] = failures.get(key, 0) + 1
        return {
            "kind": "noop" if noop else "e2e",
            "n": n,
            "c": c,
            "wall_s": wall,
            "cpu_s": cpu,
            "machine_busy_s": busy,
            "rss_base_kb": base,
            "rss_peak_kb": peak,
            "peak_reset": peak_reset,
            "peak_inflight": 1 if noop else c,
            "failures": failures,
            "enqueue_s": enqueue_s,
            **summary(times),
        }
    finally:
        await redis.aclose()
