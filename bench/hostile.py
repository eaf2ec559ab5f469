"""A worker against hostile servers: the memory budget run and the soak.

    python -m bench.run --hostile        # good jobs alone, then with every slot on hostile servers
    python -m bench.run --soak 600       # ten minutes of mixed jobs, RSS and open fds over time

Both start one `inboxcheck worker` (INBOXCHECK_MAX_JOBS = --c) against the bench's Dovecot,
aiosmtpd and redis, plus the hostile servers of tests/servers/hostile.py in this process (their
CPU is the bench's, not the worker's). Hostile kinds, each an SMTP and an IMAP server:
  endless      an EHLO reply of endless 250- lines; an IMAP greeting line that never ends
  near-bound   just under each bound (30 KiB of EHLO reply, 120 KiB of IMAP literal), then silence:
               every such check holds close to the most a bound lets it for a whole step
  flood-lines  an SMTP line that never ends; endless untagged IMAP lines in answer to LOGIN
  drip         both greetings one byte every 0.5 s, forever
The soak adds good (Dovecot and aiosmtpd, right password), failing (wrong password) and silent
servers. Checks run with shorter limits than the defaults (BENCH_LIMITS) so the runs take minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import e2e
from bench.scenario import reset_peak, rss_kb
from bench.servers import LOOPBACK, user
from jobs.time_units import MS_PER_S
from tests.servers.certs import PKI
from tests.servers.fakes import FakeServer, silent
from tests.servers.hostile import IMAP_GREETING, SMTP_GREETING, drip, imap_flood, smtp_flood
from tests.servers.tcp import Handler

KIB = 1024
# The worker's budget at INBOXCHECK_MAX_JOBS = 100 with every slot on a hostile server (README).
RSS_BUDGET_MB = 200
STEP_TIMEOUT_S = 3
CHECK_TIMEOUT_S = 10
BENCH_LIMITS = {
    "INBOXCHECK_STEP_TIMEOUT": str(STEP_TIMEOUT_S),
    "INBOXCHECK_CHECK_TIMEOUT": str(CHECK_TIMEOUT_S),
    "INBOXCHECK_JOB_TIMEOUT": str(CHECK_TIMEOUT_S + 5),
    "INBOXCHECK_RETRY_BACKOFF": "1",
    "INBOXCHECK_LOG_LEVEL": "WARNING",
}
# The check's deadline plus the worker's own overhead: no check may take longer.
CHECK_SLACK_S = 1.0
POLL_S = 0.05
ENQUEUE_BATCH = 200
WAIT_LIMIT_S = 600
# Soak verdicts: after the first quarter (warm-up), the last quarter's median RSS may exceed the
# second quarter's by this much, and the idle worker's open fds at the end (its redis pool aside)
# its count at the start.
SOAK_RSS_GROWTH = 0.10
SOAK_RSS_GROWTH_MIN_MB = 8
SOAK_FD_SLACK = 2
# The worker's redis pool keeps what it once needed: one connection per job issuing a command at
# that moment, plus the poller, heartbeat and metrics. It grows to its high-water mark (under CPU
# contention more commands are in flight at once) and may not pass this.
SOAK_REDIS_SLACK = 10

HOSTILE_KINDS: dict[str, tuple[Handler, Handler]] = {
    "endless": (smtp_flood(b"250-PIPELINING\r\n"), imap_flood(b"x", head=b"* OK ")),
    "near-bound": (
        smtp_flood(b"250-PIPELINING\r\n", total=30 * KIB),
        imap_flood(b"x", head=b"* 1 FETCH (BODY[] {4294967296}\r\n", at_login=True, total=120 * KIB),
    ),
    "flood-lines": (smtp_flood(b"x"), imap_flood(b"* 1 EXISTS\r\n", at_login=True)),
    "drip": (drip(SMTP_GREETING), drip(IMAP_GREETING)),
}


@dataclass
class Endpoints:
    """Where each kind of job points: (smtp port, smtp security, imap port)."""

    by_kind: dict[str, tuple[int, str, int]] = field(default_factory=dict)
    fakes: list[FakeServer] = field(default_factory=list)

    def stop(self) -> None:
        for fake in self.fakes:
            fake.stop()


def start_endpoints(pki: PKI, smtp_port: int, imap_port: int) -> Endpoints:
    endpoints = Endpoints()
    tls = pki.valid.ssl_context

    def fake(handler: Handler) -> int:
        server = FakeServer(handler, ssl_context=tls).start()
        endpoints.fakes.append(server)
        return server.port

    for kind, (smtp, imap) in HOSTILE_KINDS.items():
        endpoints.by_kind[kind] = (fake(smtp), "ssl", fake(imap))
    endpoints.by_kind["good"] = endpoints.by_kind["failing"] = (smtp_port, "starttls", imap_port)
    endpoints.by_kind["silent"] = (fake(silent), "ssl", fake(silent))
    return endpoints


class Driver:
    """Enqueues jobs of given kinds to the worker and reads their events back."""

    def __init__(self, env: dict, tag: str, endpoints: Endpoints) -> None:
        from redis.asyncio import Redis

        from worker.messages.sealing import sealer_for
        from worker.settings import Settings

        self.settings = Settings(
            **{k[len("INBOXCHECK_") :].lower(): v for k, v in env.items() if k.startswith("INBOXCHECK_")}
        )
        self.sealer = sealer_for(self.settings.secret_key)
        self.redis_port = int(self.settings.redis_url.rsplit(":", 1)[1].split("/")[0])
        self.redis = Redis(host=LOOPBACK, port=self.redis_port)
        self.tag = tag
        self.endpoints = endpoints
        self.count = 0
        self.kinds: dict[str, str] = {}  # inbox id -> kind
        self.last_id = "0-0"

    async def enqueue(self, kinds: list[str]) -> None:
        from jobs.request import parse_request
        from worker.messages.producer import enqueue_validation

        requests = []
        for kind in kinds:
            self.count += 1
            inbox_id = f"{self.tag}-{kind}-{self.count}"
            self.kinds[inbox_id] = kind
            smtp_port, security, imap_port = self.endpoints.by_kind[kind]
            name, password = user(self.count)
            requests.append(
                parse_request(
                    {
                        "inbox_id": inbox_id,
                        "inbox_type": "CUSTOM_SMTP",
                        "email": name,
                        "smtp_host": LOOPBACK,
                        "smtp_port": smtp_port,
                        "smtp_security": security,
                        "imap_host": LOOPBACK,
                        "imap_port": imap_port,
                        "imap_use_ssl": True,
                        "smtp_password": password if kind != "failing" else "wrong-" + password,
                    }
                )
            )
        for start in range(0, len(requests), ENQUEUE_BATCH):
            batch = requests[start : start + ENQUEUE_BATCH]
            await asyncio.gather(
                *(
                    enqueue_validation(self.redis, r, settings=self.settings, sealer=self.sealer)
                    for r in batch
                )
            )

    async def read_events(self) -> list[dict]:
        """Events appended since the last call, each with its kind and check duration."""
        new = []
        while True:
            entries = await self.redis.xrange(self.settings.events_stream, min=f"({self.last_id}", count=1000)
            if not entries:
                return new
            for entry_id, fields in entries:
                self.last_id = entry_id.decode()
                data = json.loads(fields[b"event"]).get("data") or {}
                inbox_id = data.get("inbox_id", "")
                new.append(
                    {
                        "at": time.perf_counter(),
                        "kind": self.kinds.get(inbox_id, "?"),
                        "status": data.get("status"),
                        "outcome": "valid"
                        if data.get("status") == "valid"
                        else f"{data.get('error_code')}/{data.get('reason')}",
                        "seconds": max(
                            (data.get(p) or {}).get("duration_ms") or 0.0 for p in ("smtp", "imap")
                        )
                        / MS_PER_S,
                    }
                )

    async def wait_for(self, kinds_done: Callable[[Counter[str]], bool], popen: Any) -> list[dict]:
        """Read events until `kinds_done(counts by kind)` holds; every event read."""
        seen: list[dict] = []
        counts: Counter[str] = Counter()
        deadline = time.monotonic() + WAIT_LIMIT_S
        while not kinds_done(counts):
            if popen.poll() is not None:
                raise RuntimeError("worker exited")
            if time.monotonic() > deadline:
                raise RuntimeError(f"events missing after {WAIT_LIMIT_S}s: {dict(counts)}")
            new = await self.read_events()
            seen += new
            counts.update(e["kind"] for e in new)
            if not new:
                await asyncio.sleep(POLL_S)
        return seen

    async def close(self) -> None:
        await self.redis.aclose()


def open_fds(pid: int, redis_port: int) -> tuple[int, int]:
    """The worker's open file descriptors: all of them, and its TCP connections to redis (its
    connection pool, which grows to what the job concurrency needs and is no leak)."""
    fd_dir = f"/proc/{pid}/fd"
    inodes = set()
    count = 0
    for name in os.listdir(fd_dir):
        count += 1
        with contextlib.suppress(OSError):
            target = os.readlink(f"{fd_dir}/{name}")
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    to_redis = 0
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as fh:
            next(fh)
            for line in fh:
                fields = line.split()
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                if fields[9] in inodes and remote_port == redis_port:
                    to_redis += 1
    return count, to_redis


def pace(events: list[dict], started: float) -> dict:
    """How fast `events` came after `started` (until the last of them) and how long each check took."""
    times = sorted(e["seconds"] for e in events)
    wall_s = max(e["at"] for e in events) - started
    return {
        "n": len(events),
        "rate": len(events) / wall_s,
        "median_s": statistics.median(times) if times else None,
        "p99_s": times[min(len(times) - 1, round(0.99 * (len(times) - 1)))] if times else None,
        "valid": sum(e["status"] == "valid" for e in events),
    }


def slowest(events: list[dict]) -> float:
    return max((e["seconds"] for e in events), default=0.0)


async def _memory_budget(popen: Any, driver: Driver, n: int, c: int) -> int:
    pid = popen.pid
    await driver.enqueue(["good"] * 2)  # warm-up: imports, connections, first handshakes
    await driver.wait_for(lambda k: k["good"] >= 2, popen)

    reset_peak(pid)
    started = time.perf_counter()
    await driver.enqueue(["good"] * n)
    good_alone = await driver.wait_for(lambda k: k["good"] >= n, popen)
    baseline = pace(good_alone, started)
    baseline_peak_mb = rss_kb("VmHWM", pid) / KIB

    # Every slot on a server that sends just under each bound and then holds the check for its
    # step limit (the most memory a hostile server can cost), then the good jobs with as many
    # hostile ones of every kind again among them.
    kinds = list(HOSTILE_KINDS)
    hostile_first = ["near-bound"] * c
    every_kind = itertools.cycle(kinds)
    mixed: list[str] = []
    for i in range(n):
        mixed.append("good")
        if i % max(1, n // c) == 0:
            mixed.append(next(every_kind))
    hostile_total = c + sum(k != "good" for k in mixed)
    reset_peak(pid)
    started = time.perf_counter()
    await driver.enqueue(hostile_first)
    await driver.enqueue(mixed)
    events = await driver.wait_for(
        lambda k: k["good"] >= n and sum(k[h] for h in kinds) >= hostile_total, popen
    )
    peak_mb = rss_kb("VmHWM", pid) / KIB
    good = [e for e in events if e["kind"] == "good"]
    hostile = [e for e in events if e["kind"] in HOSTILE_KINDS]
    with_hostile = pace(good, started)

    print(f"\nworker at INBOXCHECK_MAX_JOBS={c}, limits: step {STEP_TIMEOUT_S}s, check {CHECK_TIMEOUT_S}s")
    print(
        f"{'phase':<34} {'good n':>6} {'valid':>6} {'good/s':>7} {'median s':>9} {'p99 s':>7} "
        f"{'peak RSS MB':>11}"
    )
    for name, row, peak in (
        ("good alone", baseline, baseline_peak_mb),
        (f"good + {hostile_total} hostile", with_hostile, peak_mb),
    ):
        print(
            f"{name:<34} {row['n']:>6} {row['valid']:>6} {row['rate']:>7.1f} "
            f"{row['median_s']:>9.3f} {row['p99_s']:>7.3f} {peak:>11.1f}"
        )
    outcomes = Counter(f"{e['kind']}: {e['outcome']}" for e in hostile)
    print("hostile outcomes:")
    for outcome, count in sorted(outcomes.items()):
        print(f"  {count:>5}  {outcome}")
    longest = slowest(hostile)
    print(f"longest hostile check: {longest:.2f}s (deadline {CHECK_TIMEOUT_S}s)")
    failures = []
    if peak_mb > RSS_BUDGET_MB:
        failures.append(f"peak RSS {peak_mb:.1f} MB over the {RSS_BUDGET_MB} MB budget")
    if longest > CHECK_TIMEOUT_S + CHECK_SLACK_S:
        failures.append(f"a hostile check took {longest:.2f}s, past its {CHECK_TIMEOUT_S}s deadline")
    if with_hostile["valid"] != n or baseline["valid"] != n:
        failures.append("a good job did not end valid")
    for failure in failures:
        print(f"FAIL: {failure}")
    if not failures:
        print(f"PASS: peak RSS {peak_mb:.1f} MB within the {RSS_BUDGET_MB} MB budget")
    return 1 if failures else 0


SOAK_MIX = ["good"] * 4 + ["failing"] * 2 + ["silent"] + list(HOSTILE_KINDS)[:3]


async def _soak(popen: Any, driver: Driver, seconds: float, every_s: float, c: int) -> int:
    pid = popen.pid
    await driver.enqueue(["good"] * 2)
    await driver.wait_for(lambda k: k["good"] >= 2, popen)
    idle_fds, _ = open_fds(pid, driver.redis_port)
    target_inflight = max(1, c // 2)
    kinds = [*SOAK_MIX, "drip"]  # one drip per round keeps slow checks in the mix
    enqueued = 2
    done = 2
    samples: list[tuple[float, float, int, int, int]] = []  # (t, rss MB, fds, of which to redis, events)
    events: list[dict] = []
    started = time.monotonic()
    next_sample = started
    print(f"\nsoak: {seconds:g}s, worker INBOXCHECK_MAX_JOBS={c}, about {target_inflight} jobs in flight")
    print(f"{'t s':>6} {'RSS MB':>7} {'fds':>5} {'redis':>5} {'events':>7} {'load':>5}")
    while time.monotonic() - started < seconds:
        if popen.poll() is not None:
            raise RuntimeError("worker exited")
        new = await driver.read_events()
        events += new
        done += len(new)
        if enqueued - done < target_inflight:
            batch = [kinds[(enqueued + i) % len(kinds)] for i in range(target_inflight)]
            await driver.enqueue(batch)
            enqueued += len(batch)
        now = time.monotonic()
        if now >= next_sample:
            sample = (now - started, rss_kb("VmRSS", pid) / KIB, *open_fds(pid, driver.redis_port), done)
            samples.append(sample)
            print(
                f"{sample[0]:>6.0f} {sample[1]:>7.1f} {sample[2]:>5} {sample[3]:>5} {sample[4]:>7} "
                f"{os.getloadavg()[0]:>5.2f}",
                flush=True,
            )
            next_sample += every_s
        await asyncio.sleep(POLL_S)
    total = enqueued
    events += await driver.wait_for(lambda k: sum(k.values()) >= total - done, popen)
    end_fds, end_redis = open_fds(pid, driver.redis_port)
    end_rss = rss_kb("VmRSS", pid) / KIB
    print(
        f"drained: {total} jobs, {len(events) + 2} events; idle, open fds {idle_fds} before, "
        f"{end_fds} after ({end_redis} of them to redis); RSS {end_rss:.1f} MB"
    )
    quarter = max(1, len(samples) // 4)
    second = statistics.median(s[1] for s in samples[quarter : 2 * quarter])
    last = statistics.median(s[1] for s in samples[-quarter:])
    by_kind = Counter(f"{e['kind']}: {e['outcome']}" for e in events)
    for outcome, count in sorted(by_kind.items()):
        print(f"  {count:>6}  {outcome}")
    longest = slowest(events)
    print(
        f"RSS median, second quarter {second:.1f} MB, last quarter {last:.1f} MB; "
        f"longest check {longest:.2f}s"
    )
    failures = []
    if last - second > max(SOAK_RSS_GROWTH * second, SOAK_RSS_GROWTH_MIN_MB):
        failures.append(f"RSS kept growing: {second:.1f} MB -> {last:.1f} MB")
    most_redis = max(s[3] for s in samples)
    if end_fds - end_redis > idle_fds + SOAK_FD_SLACK:
        failures.append(
            f"open fds grew: {idle_fds} idle before, {end_fds - end_redis} idle after (redis aside)"
        )
    if most_redis > c + SOAK_REDIS_SLACK:
        failures.append(f"redis connections grew to {most_redis}, past {c} jobs + {SOAK_REDIS_SLACK}")
    if longest > CHECK_TIMEOUT_S + CHECK_SLACK_S:
        failures.append(f"a check took {longest:.2f}s, past its {CHECK_TIMEOUT_S}s deadline")
    for failure in failures:
        print(f"FAIL: {failure}")
    if not failures:
        print("PASS: RSS and open fds level")
    return 1 if failures else 0


def run(
    mode: str,
    *,
    root: Path,
    pki: PKI,
    redis_port: int,
    smtp_port: int,
    imap_port: int,
    n: int,
    c: int,
    soak_s: float = 0,
    every_s: float = 15,
) -> int:
    """`mode` "hostile" (the memory budget) or "soak"; 0 when it passes."""
    endpoints = start_endpoints(pki, smtp_port, imap_port)
    popen, env, tag, _ = e2e.start_worker(root, redis_port, c, str(pki.ca_file), extra_env=BENCH_LIMITS)

    async def drive() -> int:
        driver = Driver(env, tag, endpoints)
        try:
            if mode == "soak":
                return await _soak(popen, driver, soak_s, every_s, c)
            return await _memory_budget(popen, driver, n, c)
        finally:
            await driver.close()

    try:
        return asyncio.run(drive())
    finally:
        e2e.stop_worker(popen)
        endpoints.stop()
