"""httpx clients whose every connection is made by jobs.net: the OAuth2 token request and webhooks.

A URL's name resolves to whatever its DNS says now: checked once and resolved again for the
connection, it could lead the service into its own network (Redis, the cloud's metadata service).
So the check sits where the socket is made. httpcore, under httpx, opens every TCP connection
through one `AsyncNetworkBackend.connect_tcp(host, port)` call and does TLS (SNI, certificate
name) and the Host header itself, from the URL, above that call. `_PolicyBackend` resolves the
name there as the mail hosts' are (--resolve pins, INBOXCHECK_DNS_SERVERS) and connects with
jobs.net, which judges each address by the destination policy right before its socket: nothing
is resolved twice, TLS and HTTP still speak to the name, and failures are the checks' CheckErrors
(DESTINATION_REFUSED, NO_SUCH_HOST, CONNECTION_REFUSED...), which httpx lets through unchanged.

No proxy or .netrc from the environment, no redirects: either would send the request somewhere
the policy never judged.
"""

from __future__ import annotations

import importlib.util
import socket
import ssl
import sys
from collections.abc import Mapping
from functools import lru_cache

import anyio.abc
import httpcore
import httpx

# The one private httpcore name used: httpcore's stream over an anyio socket stream. Its public
# backend only connects by name (resolving it again, unjudged), so the socket jobs.net connected
# is wrapped here; its start_tls is what httpcore's TLS and HTTP need (httpcore 1.x).
from httpcore._backends.anyio import AnyIOStream

from jobs import net
from jobs.options import CheckOptions


class _PolicyBackend(httpcore.AsyncNetworkBackend):
    """Connects through jobs.net, with the check options' pins, DNS servers and policy."""

    def __init__(self, options: CheckOptions, where: str | None) -> None:
        self.options = options
        self.where = where

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's signature; the caller's deadline applies
        local_address: str | None = None,
        socket_options: object = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await net.resolve(host, port, self.options.pins, self.options.dns_servers)
        sock = await net.connect(addresses, self.where or host, self.options.destinations)
        try:
            # As anyio's own connect does: httpcore writes headers and body separately, and Nagle
            # would hold the second write until the first is acknowledged.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return AnyIOStream(await anyio.abc.SocketStream.from_socket(sock))
        except BaseException:
            sock.close()
            raise

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


@lru_cache(maxsize=8)
def tls_context(ca_file: str | None) -> ssl.SSLContext:
    # Not the mail checks' shared context (jobs.tls): httpcore sets ALPN (http/1.1) on the one it
    # is given.
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context


def remember_missing_sniffio() -> None:
    """httpcore tries `import sniffio` on every lock it takes (several per request); when sniffio
    is not installed (it is optional), each try searches sys.path again: about 12% of the CPU of
    a request (bench.webhooks). A None in sys.modules is Python's own "known missing" mark, so
    the import fails at once, as it would anyway. Nothing changes when sniffio is installed."""
    if "sniffio" not in sys.modules and importlib.util.find_spec("sniffio") is None:
        sys.modules["sniffio"] = None  # type: ignore[assignment]


def client(
    options: CheckOptions,
    *,
    where: str | None = None,
    max_connections: int = 1,
    timeout_s: float | None = None,
    headers: Mapping[str, str] | None = None,
) -> httpx.AsyncClient:
    """A client whose pool of at most `max_connections` connects only as `options` allow. Errors
    name `where`, or else the host connected to. `timeout_s` bounds each read; a caller that must
    bound a whole exchange wraps it in its own deadline."""
    remember_missing_sniffio()
    context = tls_context(options.ca_file)
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    transport = httpx.AsyncHTTPTransport(verify=context, trust_env=False, limits=limits)
    # httpx takes no network backend: its transport's pool is swapped for the same pool on ours
    # (the refusal tests of the token step and of webhooks fail if a new httpx stops using it).
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=context,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=_PolicyBackend(options, where),
    )
    return httpx.AsyncClient(
        transport=transport, trust_env=False, follow_redirects=False, timeout=timeout_s, headers=headers
    )
