"""How a check runs: time limits, trust anchors, the name it introduces itself with, where it may
connect."""

from __future__ import annotations

from dataclasses import dataclass, field

from jobs.destinations import DestinationPolicy
from jobs.dns_servers import SYSTEM_DNS, DnsServers
from jobs.pins import NO_PINS, Pins

DEFAULT_STEP_TIMEOUT_S = 10.0
DEFAULT_CHECK_TIMEOUT_S = 30.0
# QUIT and LOGOUT come after the verdict: a server slow to say goodbye must not hold it up.
GOODBYE_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class CheckOptions:
    step_timeout: float = DEFAULT_STEP_TIMEOUT_S
    # The hard deadline for one protocol's whole conversation, however many steps answer slowly.
    check_timeout: float = DEFAULT_CHECK_TIMEOUT_S
    ca_file: str | None = None
    ehlo_hostname: str = "localhost"
    # Public addresses only unless told otherwise: whoever builds options without thinking about
    # it gets the worker's safe policy, not an open one.
    destinations: DestinationPolicy = field(default_factory=DestinationPolicy)
    # --resolve: addresses to use for HOST:PORT instead of DNS's (jobs.pins).
    pins: Pins = field(default_factory=lambda: NO_PINS)
    # INBOXCHECK_DNS_SERVERS: who answers DNS questions; empty, the system's resolver.
    dns_servers: DnsServers = SYSTEM_DNS
