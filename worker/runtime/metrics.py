"""Prometheus metrics of a worker, served in the text format on INBOXCHECK_METRICS_PORT.

Counters and histograms are updated as jobs finish; the gauges that live in Redis (queue depth,
registered inboxes by health) are refreshed every INBOXCHECK_METRICS_REFRESH seconds by a task,
not on scrape, so a scrape never waits on Redis. Labels are bounded sets (outcome, error code,
protocol, step, event type, health): never an inbox id or a host, which would grow without end.
The one exception is the OAuth2 client id of an app the provider refused: a platform has a handful
of apps, and an app-wide failure must be seen as one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)

from jobs.errors import Reason
from jobs.time_units import MS_PER_S
from worker.messages.events import CompletedEvent, TerminalEvent

log = structlog.get_logger("inboxcheck.metrics")

# Mail steps take from a millisecond (loopback) to the step timeout (tens of seconds).
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
NO_ERROR = "none"


class Metrics:
    """One worker's metrics, on their own registry (tests make as many as they like)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.checks = Counter(
            "inboxcheck_checks",
            "Finished jobs by outcome (valid, invalid, rejected, failed) and error code.",
            ["outcome", "error_code"],
            registry=r,
        )
        self.check_duration = Histogram(
            "inboxcheck_check_duration_seconds",
            "Duration of each protocol's steps (step=total: the whole protocol).",
            ["protocol", "step"],
            buckets=STEP_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("inboxcheck_jobs_in_flight", "Jobs this worker is running.", registry=r)
        self.queue_depth = Gauge("inboxcheck_queue_depth", "Jobs waiting in the queue.", registry=r)
        self.events = Counter(
            "inboxcheck_events_written", "Events appended to the stream, by type.", ["type"], registry=r
        )
        self.inboxes = Gauge(
            "inboxcheck_registered_inboxes", "Registered inboxes by health.", ["health"], registry=r
        )
        self.pacing_waits = Counter(
            "inboxcheck_pacing_deferrals",
            "Jobs handed back because a host was full or backed off.",
            ["why"],
            registry=r,
        )
        self.oauth2_app_failures = Counter(
            "inboxcheck_oauth2_app_failures",
            "Checks failed with OAUTH_APP_MISCONFIGURED, by OAuth client id: the platform's app is "
            "refused, so every inbox using it fails.",
            ["client_id"],
            registry=r,
        )
        # Labelled children by label values: labels() checks and sorts its arguments and takes a
        # lock on every call, and each event makes one per step; the children never change once made.
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Any, *values: str) -> Any:
        key = (metric, *values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def observe_event(self, event: TerminalEvent) -> None:
        """Count a terminal event and its steps' timings."""
        data = event.data
        self._child(self.events, event.type).inc()
        self._child(self.checks, data.status, str(data.error_code or NO_ERROR)).inc()
        if not isinstance(event, CompletedEvent):
            return  # rejected and failed events ran no check: no timings
        if event.data.reason is Reason.OAUTH_APP_MISCONFIGURED and event.data.oauth2_client_id:
            self._child(self.oauth2_app_failures, event.data.oauth2_client_id).inc()
        for protocol, part in (("smtp", event.data.smtp), ("imap", event.data.imap)):
            for step in part.steps:
                self._child(self.check_duration, protocol, step.step).observe(step.ms / MS_PER_S)
            self._child(self.check_duration, protocol, "total").observe(part.duration_ms / MS_PER_S)

    def event_written(self, event_type: str) -> None:
        self._child(self.events, event_type).inc()

    def set_inboxes(self, counts: dict[str, int]) -> None:
        for health, count in counts.items():
            self.inboxes.labels(health=health).set(count)


def serve(metrics: Metrics, host: str, port: int) -> Any:
    """Start the HTTP endpoint in a thread; returns the server (its port: server.server_port)."""
    server, _thread = start_http_server(port, addr=host, registry=metrics.registry)
    log.info("metrics_serving", host=host, port=server.server_port)
    return server


async def refresh_forever(
    metrics: Metrics,
    read_queue_depth: Callable[[], Awaitable[int]],
    read_health_counts: Callable[[], Awaitable[dict[str, int]]],
    every_s: float,
) -> None:
    """Keep the Redis-backed gauges fresh; a Redis outage only leaves them stale."""
    while True:
        try:
            metrics.queue_depth.set(await read_queue_depth())
            metrics.set_inboxes(await read_health_counts())
        except Exception as exc:  # noqa: BLE001 - a gauge must never take the worker down
            log.warning("metrics_refresh_failed", error=type(exc).__name__)
        await asyncio.sleep(every_s)
