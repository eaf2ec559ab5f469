"""Where a webhook may connect: an httpx client whose every connection is judged at connect time.

A webhook URL is given by whoever may add endpoints, and its name resolves to whatever its DNS
says now: checked only when added (or resolved once for a check and again for the connection),
it would make the service a way into its own network (Redis, the cloud's metadata service). So
the check sits where the socket is made. httpcore, under httpx, opens every TCP connection
through one `AsyncNetworkBackend.connect_tcp(host, port)` call and does TLS (SNI, certificate
name) and the Host header itself, from the URL, above that call. `GuardedBackend` resolves the
name there, judges each address with the DestinationPolicy (jobs.destinations, as mail checks
do) and connects to the judged address itself: nothing is resolved twice, so nothing can change
in between, and TLS and HTTP still speak to the name. This is the thinnest correct place: a
transport that resolved and rewrote URLs to addresses would have to redo SNI, certificate checks
and Host headers by hand.

httpx takes no network backend; its transport builds an httpcore pool, which does.
`GuardedTransport` builds the same pool on `GuardedBackend` (httpx's `_pool`; the refusal test
in tests/worker/webhooks fails if a new httpx stops using it). No proxy from the environment, no
redirects: either would send the request somewhere the policy never judged.
"""

from __future__ import annotations

import asyncio
import importlib.util
import socket
import ssl
import sys
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx
import structlog

from jobs.destinations import DestinationPolicy

log = structlog.get_logger("inboxcheck.webhooks")

USER_AGENT = "inboxcheck-webhooks/0.1"


class DestinationRefused(Exception):
    """Every address of an endpoint's host is outside what the policy allows. Names the host only."""


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's own anyio backend, connecting only to addresses `policy` permits."""

    def __init__(self, policy: DestinationPolicy) -> None:
        self._policy = policy
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's signature
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            # A retryable failure: DNS may answer on the next attempt.
            raise httpcore.ConnectError(f"{host} does not resolve: {exc.strerror}") from None
        refused: list[str] = []
        last_error: Exception | None = None
        for *_, sockaddr in infos:
            address = str(sockaddr[0])
            if not self._policy.permits(address):
                refused.append(address)
                continue
            try:
                return await self._inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last_error = exc
        if last_error is not None:
            raise last_error
        # The operator's log has the addresses; the error (and a dead letter) only the host.
        log.warning("webhook_destination_refused", host=host, addresses=refused)
        raise DestinationRefused(f"{host} resolves to no address webhooks may reach")

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's signature
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise DestinationRefused("unix sockets are not webhook destinations")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """A verifying context of the webhook client's own: httpcore sets ALPN on the context it is
    given, which must not leak into the mail checks' shared one (jobs.tls)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context


class GuardedTransport(httpx.AsyncHTTPTransport):
    def __init__(self, policy: DestinationPolicy, context: ssl.SSLContext, max_connections: int) -> None:
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        super().__init__(verify=context, trust_env=False, limits=limits)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(policy),
        )


def remember_missing_sniffio() -> None:
    """httpcore tries `import sniffio` on every lock it takes (several per request); when sniffio
    is not installed (it is optional), each try searches sys.path again: about 12% of the CPU of
    a delivery (bench.webhooks). A None in sys.modules is Python's own "known missing" mark, so
    the import fails at once, as it would anyway. Nothing changes when sniffio is installed."""
    if "sniffio" not in sys.modules and importlib.util.find_spec("sniffio") is None:
        sys.modules["sniffio"] = None  # type: ignore[assignment]


def client(
    policy: DestinationPolicy, *, ca_file: str | None, timeout_s: float, max_connections: int
) -> httpx.AsyncClient:
    """The client of one endpoint: its own pool, so a slow endpoint holds only its own sockets."""
    remember_missing_sniffio()
    return httpx.AsyncClient(
        transport=GuardedTransport(policy, tls_context(ca_file), max_connections),
        follow_redirects=False,
        trust_env=False,
        timeout=timeout_s,
        headers={"user-agent": USER_AGENT, "content-type": "application/json"},
    )
