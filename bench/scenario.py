"""One benchmark scenario in its own process, so its CPU time and peak RSS are its own.

    python -m bench.scenario --kind raw|inproc|naive --n N --c C --smtp-port P --imap-port P --ca PEM
        [--loop asyncio|uvloop] [--ssl-max-size BYTES]

Prints one JSON line: wall time, per-check times, CPU seconds (user+sys of this process, all
threads), baseline and peak RSS (VmHWM reset just before the timed run via clear_refs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import statistics
import sys
import time

from bench.servers import LOOPBACK, mail_request, user


def rss_kb(field: str = "VmRSS", pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def reset_peak(pid: int | str = "self") -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def machine_busy_s() -> float:
    """CPU seconds the whole machine spent not idle (all cores), from /proc/stat."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def apply_ssl_max_size(size: int | None) -> None:
    """Shrink asyncio's per-TLS-connection read buffer (bench-side monkeypatch; see README)."""
    if size:
        import asyncio.sslproto

        asyncio.sslproto.SSLProtocol.max_size = size


def summary(times: list[float]) -> dict:
    times = sorted(times)
    if not times:
        return {"median_s": None, "p99_s": None}
    return {
        "median_s": statistics.median(times),
        "p99_s": times[min(len(times) - 1, round(0.99 * (len(times) - 1)))],
    }


async def run_async(kind: str, n: int, c: int, smtp_port: int, imap_port: int, ca: str) -> dict:
    times: list[float] = []
    failures: dict[str, int] = {}
    inflight = 0
    peak_inflight = 0
    if kind == "raw":
        from bench import raw

        context = ssl.create_default_context(cafile=ca)

        async def one(i: int) -> str | None:
            name, pw = user(i)
            await raw.check(LOOPBACK, smtp_port, imap_port, name, pw, context)
            return None
    else:
        from jobs.destinations import DestinationPolicy, parse_networks
        from jobs.options import CheckOptions
        from jobs.request import parse_request
        from jobs.validate import validate_inbox

        # The bench's servers are on loopback, which the default policy refuses.
        loopback = DestinationPolicy(allowed_networks=parse_networks("127.0.0.0/8"))
        options = CheckOptions(ca_file=ca, ehlo_hostname="localhost", destinations=loopback)
        requests = [
            parse_request(mail_request(i, smtp_port, imap_port, inbox_id=f"bench-{i}")) for i in range(n)
        ]

        async def one(i: int) -> str | None:
            result = await validate_inbox(requests[i], options)
            if result.status != "valid":
                return f"{result.error_code}/{result.reason}: {result.smtp.detail or result.imap.detail}"
            return None

    sem = asyncio.Semaphore(c)

    async def bounded(i: int) -> None:
        nonlocal inflight, peak_inflight
        async with sem:
            inflight += 1
            peak_inflight = max(peak_inflight, inflight)
            started = time.perf_counter()
            try:
                problem = await one(i)
            except Exception as exc:  # noqa: BLE001 - a benchmark counts failures, never hides them
                problem = f"{type(exc).__name__}: {exc}"[:200]
            times.append(time.perf_counter() - started)
            inflight -= 1
            if problem:
                failures[problem] = failures.get(problem, 0) + 1

    # Warm up (imports, contexts, first handshakes) outside the timed window.
    for i in range(2):
        await bounded(i)
    times.clear()
    failures.clear()
    peak_inflight = 0
    base = rss_kb()
    peak_reset = reset_peak()
    cpu0, wall0, busy0 = cpu_s(), time.perf_counter(), machine_busy_s()
    await asyncio.gather(*(bounded(i) for i in range(n)))
    wall = time.perf_counter() - wall0
    return {
        "wall_s": wall,
        "cpu_s": cpu_s() - cpu0,
        "machine_busy_s": machine_busy_s() - busy0,
        "rss_base_kb": base,
        "rss_peak_kb": rss_kb("VmHWM"),
        "peak_reset": peak_reset,
        "peak_inflight": peak_inflight,
        "failures": failures,
        "n": n,
        **summary(times),
    }


def run_naive(n: int, smtp_port: int, imap_port: int, ca: str) -> dict:
    from bench import naive

    context = ssl.create_default_context(cafile=ca)
    failures: dict[str, int] = {}
    times = []
    naive.check(LOOPBACK, smtp_port, imap_port, *user(0), context)  # warm-up
    base = rss_kb()
    peak_reset = reset_peak()
    cpu0, wall0, busy0 = cpu_s(), time.perf_counter(), machine_busy_s()
    for i in range(n):
        started = time.perf_counter()
        try:
            naive.check(LOOPBACK, smtp_port, imap_port, *user(i), context)
        except Exception as exc:  # noqa: BLE001 - a benchmark counts failures, never hides them
            key = f"{type(exc).__name__}: {exc}"[:200]
            failures[key] = failures.get(key, 0) + 1
        times.append(time.perf_counter() - started)
    wall = time.perf_counter() - wall0
    return {
        "wall_s": wall,
        "cpu_s": cpu_s() - cpu0,
        "machine_busy_s": machine_busy_s() - busy0,
        "rss_base_kb": base,
        "rss_peak_kb": rss_kb("VmHWM"),
        "peak_reset": peak_reset,
        "peak_inflight": 1,
        "failures": failures,
        "n": n,
        **summary(times),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kind", choices=["raw", "inproc", "naive"], required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--c", type=int, required=True)
    parser.add_argument("--smtp-port", type=int, required=True)
    parser.add_argument("--imap-port", type=int, required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--ssl-max-size", type=int, default=0)
    args = parser.parse_args(argv)
    import logging

    logging.disable(logging.CRITICAL)
    try:  # inboxcheck logs each protocol at INFO; a worker in production would write them too
        from worker.logs import configure_logging

        configure_logging("json", "WARNING")
    except Exception:  # noqa: BLE001 - logging set-up is optional here; the figures are not
        pass
    if args.kind == "inproc":
        from jobs.tls import use_small_tls_read_buffers

        use_small_tls_read_buffers()  # as the worker and the CLI run the engine
    apply_ssl_max_size(args.ssl_max_size)
    if args.kind == "naive":
        out = run_naive(args.n, args.smtp_port, args.imap_port, args.ca)
    else:
        coro = run_async(args.kind, args.n, args.c, args.smtp_port, args.imap_port, args.ca)
        if args.loop == "uvloop":
            import uvloop

            out = uvloop.run(coro)
        else:
            out = asyncio.run(coro)
    out.update(
        kind=args.kind,
        c=args.c if args.kind != "naive" else 1,
        loop=args.loop,
        ssl_max_size=args.ssl_max_size or None,
    )
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
