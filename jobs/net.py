"""Name resolution and TCP connect as separate, separately timed steps."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
from collections.abc import Sequence

import structlog

from jobs.destinations import DestinationPolicy
from jobs.dns_servers import SYSTEM_DNS, DnsServers, lookup
from jobs.errors import CheckError, Reason, check_error
from jobs.pins import NO_PINS, Pins, pinned

log = structlog.get_logger("inboxcheck.check")

# As socket.getaddrinfo returns them.
SockAddr = tuple[str, int] | tuple[str, int, int, int] | tuple[int, bytes]
AddrInfo = tuple[socket.AddressFamily, socket.SocketKind, int, str, SockAddr]


def _literal(host: str, port: int) -> list[AddrInfo] | None:
    """What getaddrinfo would answer for an IP literal, without its trip through the thread pool
    (a thread hand-off and two GIL switches per connection); None for a name (or a scoped one)."""
    if "%" in host:
        return None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if ip.version == 4:
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (str(ip), port))]
    return [(socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (str(ip), port, 0, 0))]


async def resolve(
    host: str, port: int, pins: Pins = NO_PINS, dns_servers: DnsServers = SYSTEM_DNS
) -> Sequence[AddrInfo]:
    """The addresses of host:port: its pinned ones (--resolve) when it has any, else DNS's (the
    named servers', else the system resolver's)."""
    addresses = pinned(pins, host, port)
    if addresses:
        return [info for address in addresses for info in _literal(address, port) or ()]
    literal = _literal(host, port)
    if literal is not None:
        return literal
    if dns_servers:
        found = await lookup(host, dns_servers)
        return [info for _, address in found for info in _literal(address, port) or ()]
    loop = asyncio.get_running_loop()
    try:
        return await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        if exc.errno == socket.EAI_AGAIN:
            raise check_error(
                Reason.DNS_UNAVAILABLE, f"DNS lookup of {host} failed: {exc.strerror}"
            ) from None
        raise check_error(Reason.NO_SUCH_HOST, f"{host} does not resolve: {exc.strerror}") from None
    except UnicodeError:
        # The IDNA codec refuses a label over 63 characters: such a name cannot exist.
        raise check_error(Reason.NO_SUCH_HOST, f"{host} does not resolve: not a valid host name") from None


def connect_error(exc: OSError, where: str) -> CheckError:
    """The CheckError for an OSError raised while talking to `where`."""
    if isinstance(exc, ConnectionRefusedError):
        return check_error(Reason.CONNECTION_REFUSED, f"{where} refused the connection")
    if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL):
        return check_error(Reason.NETWORK_UNREACHABLE, f"{where} is unreachable: {exc.strerror}")
    return check_error(Reason.CONNECTION_CLOSED, f"connection to {where} failed: {exc}")


def destination_refused(where: str) -> CheckError:
    # The refused address is not in the text: it goes to whoever sent the request, and the
    # address an internal name resolves to is a fact about the platform's network. The
    # operator's log has it.
    return check_error(
        Reason.DESTINATION_REFUSED,
        f"{where} was not contacted: it resolves to no public address (only private, loopback, "
        "link-local, reserved or cloud metadata ones), and this service does not connect to those",
    )


async def connect(addresses: Sequence[AddrInfo], where: str, policy: DestinationPolicy) -> socket.socket:
    """A connected non-blocking socket to the first address that `policy` permits and accepts.

    Every address is judged right before its socket is made, so a refused one never sees a packet;
    the policy is a required argument so that no connection can be opened without one.
    """
    loop = asyncio.get_running_loop()
    last_error: OSError | None = None
    refused_addresses: list[str] = []
    for family, type_, proto, _, sockaddr in addresses:
        address = sockaddr[0]
        # A name with a public and a private address is still usable through the public one.
        if not (isinstance(address, str) and policy.permits(address)):
            refused_addresses.append(str(address))
            continue
        sock = socket.socket(family, type_, proto)
        # No mutant here: a blocking socket freezes the event loop without using CPU, which
        # mutmut's CPU-time limit never ends (every check's step limit would show it instead).
        sock.setblocking(False)  # pragma: no mutate
        try:
            await loop.sock_connect(sock, sockaddr)
            return sock
        except OSError as exc:
            sock.close()
            last_error = exc
        except BaseException:
            sock.close()
            raise
    if last_error is None and refused_addresses:
        log.info("destination_refused", where=where, addresses=refused_addresses)
        raise destination_refused(where)
    assert last_error is not None, "getaddrinfo returned no addresses"
    raise connect_error(last_error, where)
