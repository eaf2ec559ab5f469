"""INBOXCHECK_DNS_SERVERS: ask these DNS servers, not the system's resolver.

Operators name the resolver a worker trusts (one of their own, or one that answers the same on
every node); tests name a DNS server they start on loopback, so whether a name exists or DNS is
down is the test's own fact, never the machine's. Without servers, names go to getaddrinfo as
every other program on the machine does.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

from jobs.errors import Reason, check_error
from jobs.setting_lists import entries, parse_port

# (address, port) of each server, in the order given.
DnsServers = tuple[tuple[str, int], ...]
SYSTEM_DNS: DnsServers = ()

DNS_PORT = 53
_EXAMPLE = "such as 192.0.2.53, 127.0.0.1:5353 or [2001:db8::53]:53"


def parse_dns_server(entry: str) -> tuple[str, int]:
    """One ADDRESS[:PORT] entry (an IPv6 address with a port in brackets); ValueError naming the
    entry and the problem."""
    text = entry.strip()
    address, port_text = text, ""
    if text.startswith("["):
        address, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"{entry!r} is not ADDRESS[:PORT] ({_EXAMPLE})")
        port_text = rest[1:]
    elif text.count(":") == 1:
        address, _, port_text = text.partition(":")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise ValueError(f"{entry!r}: a DNS server is an IP address ({_EXAMPLE})") from None
    if not port_text:
        return str(ip), DNS_PORT
    return str(ip), parse_port(port_text, entry)


def parse_dns_servers(value: object) -> DnsServers:
    """Servers from "ADDRESS[:PORT],..." or a list of entries; empty means the system's resolver."""
    servers = []
    for entry in entries(value, "DNS servers are a comma-separated list of ADDRESS[:PORT]"):
        if isinstance(entry, tuple):  # already parsed: (address, port)
            entry = f"[{entry[0]}]:{entry[1]}"
        if not isinstance(entry, str):
            raise ValueError(f"{entry!r} is not ADDRESS[:PORT] ({_EXAMPLE})")
        if entry.strip():
            servers.append(parse_dns_server(entry))
    return tuple(servers)


def _resolver(servers: DnsServers) -> dns.asyncresolver.Resolver:
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = [dns.nameserver.Do53Nameserver(address, port) for address, port in servers]
    # The DNS step's own limit ends a lookup that gets no answer; dnspython's must not end it
    # first and call a slow server a missing name.
    resolver.lifetime = float("inf")
    return resolver


async def lookup(host: str, servers: DnsServers) -> list[tuple[socket.AddressFamily, str]]:
    """Every address of `host` (IPv6 first, as getaddrinfo orders them by default), asking
    `servers`. NO_SUCH_HOST when a server says the name or its addresses do not exist;
    DNS_UNAVAILABLE when none answers usefully (refused, failed, or silent)."""
    resolver = _resolver(servers)
    try:
        v6, v4 = await asyncio.gather(
            resolver.resolve(host, dns.rdatatype.AAAA, raise_on_no_answer=False, search=False),
            resolver.resolve(host, dns.rdatatype.A, raise_on_no_answer=False, search=False),
        )
    except (dns.resolver.NXDOMAIN, dns.name.NameTooLong, dns.name.LabelTooLong, dns.name.EmptyLabel):
        # A name too long (or with an empty label) cannot exist: no server need be asked.
        raise check_error(Reason.NO_SUCH_HOST, f"{host} does not resolve: no such name") from None
    except dns.exception.DNSException as exc:
        raise check_error(
            Reason.DNS_UNAVAILABLE, f"DNS lookup of {host} failed: {type(exc).__name__}"
        ) from None
    addresses = [(socket.AF_INET6, rr.address) for rr in v6] + [(socket.AF_INET, rr.address) for rr in v4]
    if not addresses:
        raise check_error(Reason.NO_SUCH_HOST, f"{host} does not resolve: the name has no addresses")
    return addresses
