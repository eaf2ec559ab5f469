"""Prometheus metrics of the webhooks process, on its own registry and port
(INBOXCHECK_WEBHOOK_METRICS_PORT), in the pattern of worker.runtime.metrics.

Labelled by endpoint id: a set the operator makes and bounds (never a URL, which may carry a
token in its query)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

# One POST: loopback milliseconds up to the request timeout.
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
# From the event's first attempt to its 2xx: retries included, up to the day a delivery may take.
LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 86_400.0)


class WebhookMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.deliveries = Counter(
            "inboxcheck_webhook_deliveries",
            "Delivery attempts by endpoint and outcome: delivered, retried, failed (dead letter).",
            ["endpoint", "outcome"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "inboxcheck_webhook_request_seconds",
            "Duration of each POST, by endpoint.",
            ["endpoint"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.latency_seconds = Histogram(
            "inboxcheck_webhook_delivery_latency_seconds",
            "From an event's first attempt at an endpoint to its delivery, retries included.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    def attempt(self, endpoint_id: str, outcome: str, request_s: float) -> None:
        self.deliveries.labels(endpoint_id, outcome).inc()
        self.request_seconds.labels(endpoint_id).observe(request_s)

    def delivered(self, endpoint_id: str, latency_s: float) -> None:
        self.latency_seconds.labels(endpoint_id).observe(latency_s)

    def sample(self, name: str, **labels: str) -> Any:
        """A sample's value (tests and `webhook list` read them the same way)."""
        return self.registry.get_sample_value(name, labels)
