"""The one HTTP request inboxcheck makes: a form POST to an OAuth2 token endpoint.

httpx does the HTTP; the connection is made by jobs.net, so the token endpoint gets the same
destination policy (judged on each resolved address) and the same DNS and connect errors as the
mail servers. No redirects, no proxies or .netrc from the environment, no compression, and the
answer is read in chunks up to MAX_RESPONSE_BYTES: a token answer is a few KB.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass, field
from functools import lru_cache

import anyio.abc
import httpcore
import httpx

# httpcore's stream over an anyio socket stream: its own backend only connects by name, so a
# socket that jobs.net connected is wrapped here (httpcore 1.x; httpx 0.28 requires it).
from httpcore._backends.anyio import AnyIOStream

from jobs import net
from jobs.errors import Reason, check_error
from jobs.options import CheckOptions

# A token answer is 2-5 KB (a Microsoft one with a refresh token); far more is not one.
MAX_RESPONSE_BYTES = 64 * 1024
_HEADERS = {"Accept": "application/json", "Accept-Encoding": "identity", "User-Agent": "inboxcheck"}


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    status: int
    retry_after: str | None
    body: bytes = field(repr=False)  # a token answer: the access and refresh tokens


class _PolicyBackend(httpcore.AsyncNetworkBackend):
    """Connects through jobs.net: names resolved as the mail hosts' are (--resolve, the DNS
    servers), every address judged by the policy before its socket."""

    def __init__(self, where: str, options: CheckOptions) -> None:
        self.where = where
        self.options = options

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's signature; the step's limit applies
        local_address: str | None = None,
        socket_options: object = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await net.resolve(host, port, self.options.pins, self.options.dns_servers)
        sock = await net.connect(addresses, self.where, self.options.destinations)
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
def _tls_context(ca_file: str | None) -> ssl.SSLContext:
    # Not the mail checks' shared context: httpcore sets ALPN (http/1.1) on the one it is given.
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context


async def post_form(url: str, form: dict[str, str], where: str, options: CheckOptions) -> HttpAnswer:
    """POST `form` to `url` and read the answer, at most MAX_RESPONSE_BYTES of it. The caller
    bounds the time (the token step's limit)."""
    context = _tls_context(options.ca_file)
    transport = httpx.AsyncHTTPTransport(verify=context, retries=0)
    # httpx takes no network backend; its pool is swapped for one that connects through jobs.net.
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=context, max_connections=1, retries=0, network_backend=_PolicyBackend(where, options)
    )
    async with (
        httpx.AsyncClient(
            transport=transport, trust_env=False, follow_redirects=False, timeout=None
        ) as client,
        client.stream("POST", url, data=form, headers=_HEADERS) as response,
    ):
        declared = response.headers.get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
            raise _too_long(where)
        body = bytearray()
        async for chunk in response.aiter_raw():
            body += chunk
            if len(body) > MAX_RESPONSE_BYTES:
                raise _too_long(where)
        if response.headers.get("content-encoding", "identity").lower() != "identity":
            body.clear()  # not asked for, and not decoded: no JSON in it
        return HttpAnswer(response.status_code, response.headers.get("retry-after"), bytes(body))


def _too_long(where: str) -> Exception:
    return check_error(
        Reason.PROTOCOL_ERROR, f"{where} answered more than {MAX_RESPONSE_BYTES} bytes; the rest was not read"
    )
