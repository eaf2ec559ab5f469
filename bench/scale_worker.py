"""A worker process for the scale benchmark: exactly `inboxcheck worker` (supervisor, arq, pacing,
events, health updates, the recheck cron), with ONE change made here, inside the benchmark only:
the mail check itself is a fixed-latency stand-in (`--check-ms`) that returns a valid result.
So what is measured is the scheduler, the queue and Redis around the check, not SMTP or IMAP.

It records, to --record (one line each, written as they happen):
  check <unix start> <lag s>            a recheck's check started, lag = start - the slot it was due at
  tick <unix start> <seconds> <count>   one recheck tick: how long it took, how many it enqueued
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime
from typing import Any, TextIO

import structlog

from jobs.options import CheckOptions
from jobs.request import ValidationRequest
from jobs.result import ProtocolResult, RecommendedRange, ValidationResult
from jobs.time_units import MS_PER_S


def protocol_part(protocol: str, host: str, port: int) -> ProtocolResult:
    return ProtocolResult(protocol=protocol, status="ok", host=host, port=port, security="ssl", steps=[])


def install(check_s: float, record: TextIO) -> None:
    from worker.rechecks import registry
    from worker.runtime import job

    async def stand_in(request: ValidationRequest, options: CheckOptions, *_: Any) -> ValidationResult:
        job_id = str(structlog.contextvars.get_contextvars().get("job_id", ""))
        now = time.time()
        if registry.is_recheck(job_id):
            slot_ms = int(job_id.rsplit(":", 1)[1])
            record.write(f"check {now:.3f} {now - slot_ms / MS_PER_S:.3f}\n")
        await asyncio.sleep(check_s)
        return ValidationResult(
            inbox_id=request.inbox_id,
            inbox_type=request.inbox_type,
            email=request.email,
            status="valid",
            smtp=protocol_part("smtp", str(request.smtp_host), request.smtp_port or 0),
            imap=protocol_part("imap", str(request.imap_host), request.imap_port or 0),
            max_daily_limit=50,
            recommended_daily_limit=20,
            recommended_range=RecommendedRange(low=10, high=30),
            checked_at=datetime.now(UTC),
            duration_ms=check_s * MS_PER_S,
        )

    job.validate_inbox = stand_in  # type: ignore[assignment]
    enqueue_due = registry.Registry.enqueue_due

    async def timed_tick(self: registry.Registry, **kwargs: Any) -> list[str]:
        started, wall = time.perf_counter(), time.time()
        job_ids = await enqueue_due(self, **kwargs)
        record.write(f"tick {wall:.3f} {time.perf_counter() - started:.6f} {len(job_ids)}\n")
        return job_ids

    registry.Registry.enqueue_due = timed_tick  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--check-ms", type=float, required=True)
    parser.add_argument("--record", required=True)
    args = parser.parse_args()
    with open(args.record, "w", buffering=1) as record:
        install(args.check_ms / MS_PER_S, record)
        from worker.cli.main import main as inboxcheck

        code = inboxcheck(["worker"])
    raise SystemExit(code)


if __name__ == "__main__":
    main()
