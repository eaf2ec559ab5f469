"""Safe pacing: a cap on concurrent connections per mail host across every worker, one check per
inbox at a time, and a pause for a host that said "try again later".

The per-host semaphore is a sorted set of lease ids scored by their expiry (Redis server time,
so workers' clocks do not matter). Acquiring drops expired leases first, so the slots of a
worker that crashed come back once its leases expire, without anyone cleaning up. The scripts
that take and give back leases and the inbox lock are in worker.messages.scripts.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import structlog
from redis.asyncio import Redis

from jobs.hosts import canonical_host
from jobs.replies import MAX_BACKOFF_S, bounded_backoff_s
from jobs.time_units import MS_PER_S, US_PER_MS
from worker.messages import keys, scripts

log = structlog.get_logger("inboxcheck.pacing")

# Far below what each provider tolerates from one client address: Gmail allows 15 IMAP
# connections per account and throttles bursts of logins from one IP; Exchange Online allows
# 3 concurrent SMTP AUTH connections per mailbox and 20 IMAP. Per host across all inboxes, 10
# leaves room for the product's own sending and for other tools on the same address.
# Keyed by canonical host (jobs.hosts.canonical_host), the form every lookup uses.
DEFAULT_HOST_LIMITS: dict[str, int] = {
    "smtp.gmail.com": 10,
    "imap.gmail.com": 10,
    "smtp.office365.com": 10,
    "outlook.office365.com": 10,
}
# Hosts not listed: Postfix's default per-client limit is 50 and Dovecot's 10 per user and IP.
DEFAULT_HOST_LIMIT = 10
# Polling a full host: start fast, double, stop growing here; jitter so waiters do not align.
POLL_FIRST_S = 0.02
POLL_MAX_S = 0.5


def _connections(hosts: list[str]) -> dict[str, int]:
    """How many connections a check opens to each canonical host."""
    counts: dict[str, int] = {}
    for host in map(canonical_host, hosts):
        counts[host] = counts.get(host, 0) + 1
    return counts


class Held:
    """What a check still holds after it ran, when its caller releases it later: the RELEASE
    script's keys and arguments (`pending`, see worker.messages.scripts), or None once released."""

    __slots__ = ("pending",)

    def __init__(self) -> None:
        self.pending: tuple[list[str], list[Any]] | None = None


class AlreadyDone(Exception):
    """The job wrote its event in an earlier run (`event`: that event's JSON); nothing was taken."""

    def __init__(self, event: bytes | str) -> None:
        super().__init__("event already written")
        self.event = event


class TriesUsedUp(Exception):
    """Every check this job may make has run (`attempts`, from its counter) and the job has no
    event: the last check's was never written (Redis failed after it, or its worker died). No
    check may log in again."""

    def __init__(self, attempts: int) -> None:
        super().__init__(f"{attempts} attempts made, the last one unrecorded")
        self.attempts = attempts


class HostBusy(Exception):
    """No slot within the wait: hand the job back and try again after `retry_in_s`."""

    def __init__(self, host: str, retry_in_s: float, backed_off: bool) -> None:
        super().__init__(f"{host}: {'backed off' if backed_off else 'at its connection cap'}")
        self.host = host
        self.retry_in_s = retry_in_s
        self.backed_off = backed_off


class InboxBusy(Exception):
    """Another check of the same inbox is running, or the inbox is backed off (`retry_in_s`)."""

    def __init__(self, inbox_id: str, retry_in_s: float = 0.0) -> None:
        super().__init__(inbox_id)
        self.inbox_id = inbox_id
        self.retry_in_s = retry_in_s


@dataclass(frozen=True, slots=True)
class PacingPolicy:
    host_limits: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_HOST_LIMITS))
    default_limit: int = DEFAULT_HOST_LIMIT
    # A lease outlives the longest check (the job timeout), so a live holder never loses it.
    lease_s: float = 60.0
    # How long a host pauses after "try again later" without a suggested time.
    backoff_s: float = 300.0

    def limit(self, host: str) -> int:
        return self.host_limits.get(canonical_host(host), self.default_limit)


class Pacer:
    """Every host is keyed by its canonical form (jobs.hosts.canonical_host), so the spellings
    of one host (case, a trailing dot, IP address forms) share its slots, cap and pause."""

    def __init__(self, redis: Redis, policy: PacingPolicy) -> None:
        self.redis = redis
        self.policy = policy
        self._scripts = scripts.of(redis)

    async def try_acquire(self, host: str, count: int = 1) -> tuple[str | None, float]:
        """A lease id, or None and how long the host stays backed off (0 when merely full)."""
        lease = uuid.uuid4().hex
        host = canonical_host(host)
        got = int(
            await self._scripts.acquire(
                keys=[keys.pacing_slots_key(host), keys.pacing_backoff_key(host)],
                args=[lease, int(self.policy.lease_s * MS_PER_S), count, self.policy.limit(host)],
            )
        )
        if got == 1:
            return lease, 0.0
        return None, max(-got, 0) / MS_PER_S

    async def release(self, host: str, lease: str, count: int = 1) -> None:
        await self._scripts.release(keys=[keys.pacing_slots_key(canonical_host(host))], args=[lease, count])

    async def acquire(self, host: str, count: int, wait_s: float) -> str:
        """Wait up to `wait_s` for `count` slots on `host`; raise HostBusy when none came."""
        deadline = time.monotonic() + wait_s
        delay = POLL_FIRST_S
        while True:
            lease, paused_s = await self.try_acquire(host, count)
            if lease is not None:
                return lease
            left = deadline - time.monotonic()
            if paused_s > left or left <= 0:
                retry_in = paused_s if paused_s else delay
                raise HostBusy(host, retry_in * (1 + random.random()), backed_off=paused_s > 0)
            await asyncio.sleep(min(max(paused_s, delay) * (1 + random.random()), left))
            delay = min(delay * 2, POLL_MAX_S)

    @asynccontextmanager
    async def hosts(self, hosts: list[str], wait_s: float) -> AsyncIterator[None]:
        """Hold one slot per connection for every host a check will open.

        Hosts are taken in sorted order, so two checks that want the same two hosts can never
        each hold one and wait for the other; a check that connects twice to one host (SMTP and
        IMAP on the same server) takes two slots there.
        """
        counts = _connections(hosts)
        held: list[tuple[str, str, int]] = []
        deadline = time.monotonic() + wait_s
        try:
            for host in sorted(counts):
                lease = await self.acquire(host, counts[host], max(deadline - time.monotonic(), 0))
                held.append((host, lease, counts[host]))
            yield
        finally:
            for host, lease, count in held:
                await self.release(host, lease, count)

    async def back_off_inbox(self, inbox_id: str, seconds: float | None) -> float:
        """Pause checks of one inbox: its account has too many connections open (a per-account
        limit, e.g. Gmail's 15 IMAP connections), which says nothing about the host's other
        inboxes. Returns the pause."""
        pause = await self._pause(keys.inbox_backoff_key(inbox_id), seconds)
        log.warning("inbox_backed_off", inbox_id=inbox_id, pause_s=pause)
        return pause

    async def back_off(self, host: str, seconds: float | None) -> float:
        """Pause new checks on `host` (the provider said "try again later"); returns the pause."""
        host = canonical_host(host)
        pause = await self._pause(keys.pacing_backoff_key(host), seconds)
        log.warning("host_backed_off", host=host, pause_s=pause)
        return pause

    async def _pause(self, key: str, seconds: float | None) -> float:
        """Set the pause at `key` (never shortening a longer one): the server's suggestion, or
        the policy's when it made none."""
        # Taken at most MAX_BACKOFF_S whoever asks (the engine already bounds what servers
        # suggest): a value past Redis's range would fail the PX, one within it could pause a
        # host for centuries.
        pause = min(bounded_backoff_s(seconds) or self.policy.backoff_s, MAX_BACKOFF_S)
        pause_ms = int(pause * MS_PER_S)
        if pause_ms > 0:  # a backoff setting of 0 means no pause; PX 0 is an error
            await self._scripts.back_off(keys=[key], args=[pause_ms])
        return pause

    async def in_use(self, host: str) -> int:
        """Live leases on `host` (expired ones do not count)."""
        seconds, micros = await self.redis.time()  # the clock the leases were scored with
        now_ms = seconds * MS_PER_S + micros // US_PER_MS
        return int(await self.redis.zcount(keys.pacing_slots_key(canonical_host(host)), now_ms, "+inf"))

    @asynccontextmanager
    async def check(
        self,
        inbox_id: str,
        hosts: list[str],
        wait_s: float,
        *,
        done_key: str,
        attempts_key: str,
        attempts_ttl_s: float,
        max_tries: int,
        held: Held | None = None,
    ) -> AsyncIterator[int | None]:
        """One check per inbox at a time (two logins at once look like an attack) and `hosts()`,
        plus the job's done mark and its attempt count, in one round trip at the start and one at
        the end when the hosts have room (the usual case).

        Yields the attempt count, or None when a host was full or backed off: then the slots were
        waited for as `hosts()` does, and the caller counts the attempt itself. Raises AlreadyDone
        (nothing taken) when the job's event is already written, TriesUsedUp (nothing taken) when
        `max_tries` checks already ran, InboxBusy or HostBusy when the inbox or a host must wait.
        With `held`, a check that ends without an exception keeps its lock and slots and leaves
        their release in `held.pending`, for the caller to do with the event's append (one round
        trip for both) or with `finish`; on an exception they are released here as always.
        """
        counts = _connections(hosts)
        ordered = sorted(counts)
        token = uuid.uuid4().hex
        lock_key = keys.inbox_lock_key(inbox_id)
        lease_ms = int(self.policy.lease_s * MS_PER_S)
        host_keys: list[str] = []
        host_args: list[int] = []
        for host in ordered:
            host_keys += [keys.pacing_slots_key(host), keys.pacing_backoff_key(host)]
            host_args += [counts[host], self.policy.limit(host)]
        reply = await self._scripts.begin(
            keys=[done_key, lock_key, keys.inbox_backoff_key(inbox_id), attempts_key, *host_keys],
            args=[token, lease_ms, int(attempts_ttl_s * MS_PER_S), max_tries, *host_args],
        )
        status = int(reply[0])
        if status == 1:
            raise AlreadyDone(reply[1])
        if status == 5:
            raise TriesUsedUp(int(reply[1]))
        if status == 2:
            raise InboxBusy(inbox_id, int(reply[1]) / MS_PER_S)
        if status == 3:
            raise InboxBusy(inbox_id)
        if status == 0:
            pending = (
                [*(keys.pacing_slots_key(h) for h in ordered), lock_key],
                [token, *(counts[h] for h in ordered)],
            )
            try:
                yield int(reply[1])
            except BaseException:
                await self.finish(pending)
                raise
            if held is None:
                await self.finish(pending)
            else:
                held.pending = pending
            return
        # A host is full or paused: wait for slots as hosts() does, holding the inbox lock.
        try:
            async with self.hosts(hosts, wait_s):
                yield None
        finally:
            await self.finish(([lock_key], [token]))

    async def finish(self, pending: tuple[list[str], list[Any]]) -> None:
        """Release what `check` left in `Held.pending`: the host leases, then our inbox lock."""
        await self._scripts.release(keys=pending[0], args=pending[1])
