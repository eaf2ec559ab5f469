"""The settings of webhook delivery: a group of fields that worker.settings.Settings takes in.

The webhooks process also uses the shared ones: redis_url, events_stream, secret_key (the seal of
the endpoints' signing secrets), allow_networks (where an endpoint may be), tls_ca_file, the
reconnect delays and the log settings."""

from __future__ import annotations

from pydantic import BaseModel, Field

from jobs.time_units import SECONDS_PER_DAY, SECONDS_PER_HOUR
from worker.rechecks.settings import Duration


class WebhookSettings(BaseModel):
    """Webhook delivery (the README's settings table says what each does)."""

    # The consumer group the webhooks processes share on the events stream.
    webhook_group: str = Field(default="inboxcheck-webhooks", min_length=1)
    # One POST, from connect to the last byte read; a delivery is leased for twice this.
    webhook_timeout: Duration = Field(default=10.0, gt=0, le=120)
    # POSTs in flight per endpoint in each process: a slow endpoint holds only its own.
    webhook_concurrency: int = Field(default=4, ge=1, le=100)
    # Deliveries waiting per endpoint (retries included); past it an event goes to the dead letters.
    webhook_queue_max: int = Field(default=10_000, ge=1)
    # First retry delay, doubling per attempt with jitter, capped by webhook_retry_max_delay,
    # which also caps a receiver's Retry-After.
    webhook_retry_backoff: Duration = Field(default=5.0, ge=0)
    webhook_retry_max_delay: Duration = Field(default=float(SECONDS_PER_HOUR), ge=0)
    # A delivery still failing this long after its first attempt goes to the dead letters.
    webhook_give_up_after: Duration = Field(default=float(SECONDS_PER_DAY), gt=0)
    # How often each endpoint's due retries are looked for (new events wake it at once).
    webhook_poll: Duration = Field(default=1.0, gt=0)
    # An event read by a process that died is taken over by another after this.
    webhook_claim_idle: Duration = Field(default=60.0, gt=0)
    webhook_dead_letters_max: int = Field(default=10_000, ge=1)
    # The webhooks process's own Prometheus port (the worker's is metrics_port); 0 turns it off.
    webhook_metrics_port: int = Field(default=9109, ge=0, le=65_535)
    # The webhooks process's heartbeat (the worker's is heartbeat_file): its own setting, so one
    # settings file shared by both never makes a live process vouch for a dead one.
    webhook_heartbeat_file: str | None = None
