"""Where inboxcheck's Redis is and how to reach it: the one place every client is built from.

INBOXCHECK_REDIS_URL names either one server (`redis://`, `rediss://` for TLS, `unix://`) or a
master watched by Redis Sentinel:

    redis+sentinel://[[user]:password@]host1[:26379],host2[:26379]/<master-name>[/<db>]
    rediss+sentinel://...    (TLS to the sentinels and to the master)

The credentials in a Sentinel URL are the master's (Redis's own ACL user and password); the
sentinels' password, when they have one (`requirepass` in sentinel.conf), is
INBOXCHECK_REDIS_SENTINEL_PASSWORD. A client of a Sentinel URL asks the sentinels for the master's
address on every new connection, and a connection that meets a demoted master (READONLY) is closed
and asks again (redis-py's SentinelConnectionPool); and at most every MASTER_CHECK_INTERVAL_S a
client asks the sentinels whether the master moved (ConcurrentSentinelConnectionPool), so clients
follow a failover even while the old master still takes writes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

import structlog
from redis.asyncio import Redis
from redis.asyncio.connection import ConnectionPool
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.exceptions import AuthenticationError, AuthenticationWrongNumberOfArgsError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from jobs.setting_lists import parse_port

if TYPE_CHECKING:
    from worker.settings import Settings

log = structlog.get_logger("inboxcheck.redis")

TLS_SCHEME = "rediss"
DIRECT_SCHEMES = frozenset({"redis", TLS_SCHEME, "unix"})
# Scheme -> whether the master and the sentinels are reached over TLS.
SENTINEL_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}
DEFAULT_SENTINEL_PORT = 26_379
DEFAULT_REDIS_PORT = 6_379
# A sentinel that does not answer within this is skipped for the next one in the URL.
SENTINEL_TIMEOUT_S = 1.0
# How often a client asks the sentinels whether the master moved (one SENTINEL MASTERS).
MASTER_CHECK_INTERVAL_S = 1.0
# Operators name a handful of sentinels (three or five); a list far longer is a mistake.
MAX_SENTINELS = 16
URL_FORM = "redis+sentinel://[[user]:password@]host1:26379,host2:26379/<master-name>[/<db>]"
# Redis answered but took neither the URL's user nor its password (WRONGPASS; NOAUTH for a URL
# without one; an AUTH the server does not take). redis-py makes AuthenticationError a
# ConnectionError, yet the fix is the URL's credentials, not the network.
CREDENTIALS_REFUSED: tuple[type[Exception], ...] = (AuthenticationError, AuthenticationWrongNumberOfArgsError)


@dataclass(frozen=True, slots=True)
class SentinelTarget:
    """A master watched by the sentinels; the password is kept out of the repr."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int
    tls: bool
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)

    def where(self) -> str:
        hosts = ",".join(_host_port(host, port) for host, port in self.sentinels)
        return f"master {self.master!r} of the sentinels at {hosts}"


class ConcurrentSentinelConnectionPool(SentinelConnectionPool):
    """SentinelConnectionPool with a checkout that holds no pool-wide lock across an await (as
    redis_pool.ConcurrentConnectionPool, which says why), and which follows a new master while
    the old one still takes writes.

    redis-py asks the sentinels only when it opens a connection, and drops a connection only when
    the server answers READONLY. After `SENTINEL FAILOVER` (or a partition) the old master goes on
    taking writes until the sentinels demote it, about ten seconds later, and everything written
    there meanwhile is lost when it resyncs. So at most every MASTER_CHECK_INTERVAL_S a checkout
    asks the sentinels where the master is, and a connection to any other address is closed
    before use (it reconnects to the master the sentinels name).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._next_master_check = 0.0
        self._announced: tuple[str, int] | None = None  # the master last seen, for the log line

    async def get_master_address(self) -> Any:
        """redis-py's, which every way of finding the master goes through, plus one log line when
        the master moved: what an operator looks for after a failover."""
        address = await super().get_master_address()
        # Compared after the await: of two lookups in flight, only one logs the move.
        if address != self._announced:
            if self._announced is not None:
                log.warning(
                    "redis_master_moved",
                    master=_host_port(*address),
                    previous=_host_port(*self._announced),
                    name=self.service_name,
                )
            self._announced = address
        return address

    async def get_connection(self, command_name: Any = None, *keys: Any, **options: Any) -> Any:
        if time.monotonic() >= self._next_master_check:
            # Set before the await: one checkout asks, the others go on meanwhile.
            self._next_master_check = time.monotonic() + MASTER_CHECK_INTERVAL_S
            try:
                await self.get_master_address()  # on a change, closes the idle connections
            except (RedisConnectionError, RedisTimeoutError):
                pass  # no sentinel answers: the master connected to is the best known
        connection = self.get_available_connection()
        try:
            where = (connection.host, connection.port)
            if connection.is_connected and self.master_address not in (None, where):
                await connection.disconnect()  # it was in use when the master changed
            await self.ensure_connection(connection)
        except BaseException:
            await self.release(connection)
            raise
        return connection


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _bad(problem: str) -> ValueError:
    # Never the URL itself in the message: it may carry the password.
    return ValueError(f"{problem} (expected {URL_FORM})")


def _sentinel_address(entry: str) -> tuple[str, int]:
    if entry.startswith("["):  # [IPv6]:port
        host, bracket, rest = entry[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise _bad(f"sentinel {entry!r}: an IPv6 address is written [address]:port")
        port_text = rest[1:]
    else:
        host, _, port_text = entry.partition(":")
    if not host:
        raise _bad(f"sentinel {entry!r} has no host")
    port = parse_port(port_text, entry) if port_text else DEFAULT_SENTINEL_PORT
    return host, port


def parse_sentinel_url(url: str) -> SentinelTarget | None:
    """The Sentinel target a redis+sentinel:// or rediss+sentinel:// URL names; None for any other
    URL. ValueError saying what is wrong (without the URL's password) for a malformed one."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in SENTINEL_SCHEMES:
        return None
    # The credentials first, up to the last `@`: a password may hold `/`, `:` or `@` (so no part of
    # it is ever taken for a host or the path, and so never echoed in an error), while the
    # sentinels, the master name and the database never do.
    userinfo, at, location = rest.rpartition("@")
    hosts, _, path = location.partition("/")
    if "?" in path or "#" in path or "?" in hosts:
        raise _bad("a Sentinel URL takes no query or fragment")
    username = password = None
    if at:
        user_text, colon, password_text = userinfo.partition(":")
        username = unquote(user_text) or None
        password = unquote(password_text) if colon else None
    entries = [entry.strip() for entry in hosts.split(",")]
    if not hosts or any(not entry for entry in entries):
        raise _bad("no sentinel host, or an empty one between commas")
    if len(entries) > MAX_SENTINELS:
        raise _bad(f"{len(entries)} sentinels; at most {MAX_SENTINELS}")
    sentinels = tuple(_sentinel_address(entry) for entry in entries)
    parts = path.split("/") if path else []
    if not parts or not parts[0]:
        raise _bad("no master name (the name the sentinels monitor, as in `sentinel monitor <name>`)")
    if len(parts) > 2 or (len(parts) == 2 and not (parts[1].isascii() and parts[1].isdigit())):
        raise _bad("after the master name only a database number may follow")
    db = int(parts[1]) if len(parts) == 2 else 0
    return SentinelTarget(
        sentinels=sentinels,
        master=unquote(parts[0]),
        db=db,
        tls=SENTINEL_SCHEMES[scheme.lower()],
        username=username,
        password=password,
    )


def check_url(url: str) -> str:
    """`url` when inboxcheck can reach Redis by it; ValueError saying why not otherwise."""
    if parse_sentinel_url(url) is not None:
        return url
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme not in DIRECT_SCHEMES:
        known = ", ".join(f"{name}://" for name in sorted(DIRECT_SCHEMES | set(SENTINEL_SCHEMES)))
        raise ValueError(f"the URL must start with one of {known}")
    return url


def uses_tls(url: str) -> bool:
    target = parse_sentinel_url(url)
    return target.tls if target is not None else urlparse(url).scheme == TLS_SCHEME


def tls_options(settings: Settings, url: str | None = None) -> dict[str, Any]:
    """redis-py's TLS arguments for a TLS URL (by default settings.redis_url): the server's
    certificate verified against INBOXCHECK_REDIS_CA_FILE (or the system's trust store) and its
    name against the host connected to, which redis-py does not check by default. Behind Sentinel
    that host is the address the sentinels give for the master (and each sentinel's own, from the
    URL)."""
    return _verified_tls(settings) if uses_tls(url or settings.redis_url) else {}


def _verified_tls(settings: Settings) -> dict[str, Any]:
    options: dict[str, Any] = {"ssl_cert_reqs": "required", "ssl_check_hostname": True}
    if settings.redis_ca_file is not None:
        options["ssl_ca_certs"] = str(settings.redis_ca_file)
    return options


def where(url: str) -> str:
    """Where a Redis URL points, without its password, for messages."""
    target = parse_sentinel_url(url)
    if target is not None:
        return target.where()
    parsed = urlparse(url)
    return f"{parsed.hostname}:{parsed.port or DEFAULT_REDIS_PORT}"


def refused_credentials(exc: BaseException) -> bool:
    """Redis (behind Sentinel, the master) answered and refused the credentials of the URL."""
    return isinstance(exc, CREDENTIALS_REFUSED)


def credentials_refused_text(url: str) -> str:
    """What to tell an operator whose Redis refused the URL's credentials: where, never what."""
    return f"Redis at {where(url)} refused the credentials in INBOXCHECK_REDIS_URL"


def log_connect_failure(logger: Any, url: str, exc: BaseException, retry_in_s: float) -> None:
    """The line a process that keeps reconnecting logs for a failed connection: a refused
    password as such (waiting on it is waiting for someone to fix the URL or Redis's ACL), any
    other failure as Redis unreachable."""
    if refused_credentials(exc):
        logger.error(
            "redis_credentials_refused",
            redis=where(url),
            note="Redis answered and refused the user or password in INBOXCHECK_REDIS_URL",
            retry_in_s=retry_in_s,
        )
    else:
        logger.warning("redis_unreachable", error=type(exc).__name__, retry_in_s=retry_in_s)


def sentinels(settings: Settings, target: SentinelTarget) -> Sentinel:
    """The sentinels of `target`, reached with their own password, TLS as the URL says, and a
    timeout so that one that is down costs a second, not a hang."""
    password = settings.redis_sentinel_password
    sentinel_kwargs: dict[str, Any] = {
        "socket_connect_timeout": SENTINEL_TIMEOUT_S,
        "socket_timeout": SENTINEL_TIMEOUT_S,
        **({"ssl": True, **_verified_tls(settings)} if target.tls else {}),
        **({"password": password.get_secret_value()} if password is not None else {}),
    }
    return Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_kwargs)


def connection_pool(
    settings: Settings,
    url: str | None = None,
    *,
    direct_class: type[ConnectionPool] = ConnectionPool,
    sentinel_class: type[SentinelConnectionPool] = ConcurrentSentinelConnectionPool,
    **options: Any,
) -> ConnectionPool:
    """A pool of connections to the Redis `url` names (by default settings.redis_url): a
    `direct_class` pool for one server, a `sentinel_class` pool that follows the master for a
    Sentinel URL. `options` go to every connection (timeouts); TLS options come from settings."""
    url = url or settings.redis_url
    target = parse_sentinel_url(url)
    if target is None:
        return direct_class.from_url(url, **tls_options(settings, url), **options)
    credentials = {"username": target.username, "password": target.password}
    return sentinel_class(
        target.master,
        sentinels(settings, target),
        db=target.db,
        ssl=target.tls,
        **credentials,
        **tls_options(settings, url),
        **options,
    )


def client(settings: Settings, url: str | None = None, **options: Any) -> Redis:
    """A redis-py client of the settings' Redis (one server or the Sentinel master), which closes
    its pool when closed: for the commands, the webhooks process and Python producers."""
    return Redis.from_pool(connection_pool(settings, url, **options))
