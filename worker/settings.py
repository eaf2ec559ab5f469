"""Every setting, read from INBOXCHECK_* environment variables into one Settings object.

A worker and every command take all they use from that object, so a worker built in a test runs
with exactly the settings the test gave it."""

from __future__ import annotations

import socket
from functools import lru_cache
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field, FilePath, SecretStr, ValidationError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from jobs.destinations import DestinationPolicy, IPNetwork, parse_networks
from jobs.dns_servers import DnsServers, parse_dns_servers
from jobs.errors import InboxcheckError
from jobs.options import DEFAULT_CHECK_TIMEOUT_S, DEFAULT_STEP_TIMEOUT_S, CheckOptions
from jobs.pins import Pins, parse_pins
from jobs.time_units import SECONDS_PER_DAY
from worker.rechecks.settings import Duration, RecheckSettings
from worker.runtime.redis_target import check_url
from worker.webhooks.settings import WebhookSettings

ENV_PREFIX = "INBOXCHECK_"

# Comma-separated, as operators write them in an environment variable, not a JSON list.
Networks = Annotated[tuple[IPNetwork, ...], NoDecode, BeforeValidator(parse_networks)]
# HOST:PORT:ADDRESS entries, comma-separated (curl's --resolve).
PinsSetting = Annotated[Pins, NoDecode, BeforeValidator(parse_pins)]
# ADDRESS[:PORT] entries, comma-separated.
DnsServersSetting = Annotated[DnsServers, NoDecode, BeforeValidator(parse_dns_servers)]
# One server (redis://, rediss://, unix://) or a Sentinel-watched master (worker.runtime.redis_target).
RedisUrl = Annotated[str, AfterValidator(check_url)]


class Settings(BaseSettings, RecheckSettings, WebhookSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    # The check
    step_timeout: float = Field(default=DEFAULT_STEP_TIMEOUT_S, gt=0, le=300)
    check_timeout: float = Field(default=DEFAULT_CHECK_TIMEOUT_S, gt=0, le=600)
    tls_ca_file: FilePath | None = None
    ehlo_hostname: str = Field(default_factory=socket.getfqdn, min_length=1)
    # Non-public networks checks may connect to anyway (self-hosted mail servers, development);
    # every other private, loopback, link-local or metadata address is refused.
    allow_networks: Networks = ()
    # Addresses to connect to for HOST:PORT instead of DNS's; TLS still verifies HOST.
    resolve: PinsSetting = {}
    # DNS servers to ask instead of the system's resolver (empty: the system's).
    dns_servers: DnsServersSetting = ()

    # Logging
    log_format: Literal["json", "console", "auto"] = "auto"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # The worker
    # Out of the repr: the URL may carry Redis's password.
    redis_url: RedisUrl = Field(default="redis://127.0.0.1:6379/0", repr=False)
    # rediss:// URLs: the CA that signed Redis's certificate (else the system's trust store).
    redis_ca_file: FilePath | None = None
    # redis+sentinel:// URLs: the sentinels' own password (requirepass in sentinel.conf), if any.
    redis_sentinel_password: SecretStr | None = None
    queue_name: str = "inboxcheck:queue"
    max_jobs: int = Field(default=100, ge=1, le=10_000)
    job_timeout: float = Field(default=60.0, gt=0)
    max_tries: int = Field(default=3, ge=1, le=20)
    retry_backoff: float = Field(default=5.0, ge=0)
    events_stream: str = "inboxcheck:events"
    events_maxlen: int = Field(default=100_000, ge=100)
    secret_key: SecretStr | None = None
    # A queued job's sealed credentials older than this are refused (a replayed old job, or one
    # that sat in Redis for days); registered inboxes are sealed afresh for every recheck.
    sealed_max_age: Duration = Field(default=float(SECONDS_PER_DAY), gt=0)
    allow_plaintext_credentials: bool = False
    health_check_interval: int = Field(default=10, ge=1)
    # The worker renews this file's time every health_check_interval: `inboxcheck health --liveness`.
    heartbeat_file: str | None = None
    poll_delay: float = Field(default=0.05, gt=0)
    # How long a finished job's result (the event) is kept: the idempotency freshness window.
    keep_result: float = Field(default=900.0, gt=0)
    # On SIGTERM, how long in-flight checks may run on before they are handed back to the queue.
    shutdown_grace: float = Field(default=20.0, ge=0)
    # Start Debian's redis-server when nothing answers at a loopback redis_url (development).
    start_local_redis: bool = True
    local_redis_dir: str | None = None
    # Reconnecting after Redis drops: first wait and the cap of the doubling backoff.
    reconnect_delay: float = Field(default=0.5, gt=0)
    reconnect_max_delay: float = Field(default=10.0, gt=0)

    # Metrics (Prometheus text format); 0 turns the endpoint off.
    metrics_port: int = Field(default=9108, ge=0, le=65_535)
    # Loopback by default; containers set 0.0.0.0 so the cluster can scrape them.
    metrics_host: str = "127.0.0.1"
    # Queue depth and inboxes-by-health are read from Redis this often.
    metrics_refresh: Duration = Field(default=15.0, gt=0)

    def check_options(self) -> CheckOptions:
        return CheckOptions(
            step_timeout=self.step_timeout,
            # One slow step is allowed its full limit even when it alone outlasts the deadline.
            check_timeout=max(self.check_timeout, self.step_timeout),
            ca_file=str(self.tls_ca_file) if self.tls_ca_file else None,
            ehlo_hostname=self.ehlo_hostname,
            destinations=DestinationPolicy(public_only=True, allowed_networks=self.allow_networks),
            pins=self.resolve,
            dns_servers=self.dns_servers,
        )


class SettingsError(InboxcheckError, ValueError):
    """Settings that cannot be used, named by their environment variables."""


def describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors(include_url=False, include_input=False):
        name = ENV_PREFIX + "_".join(str(part) for part in item["loc"]).upper()
        lines.append(f"{name}: {item['msg']}")
    return "invalid settings: " + "; ".join(lines)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError(describe(exc)) from None
