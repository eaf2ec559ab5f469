"""Which addresses a check may connect to.

A check connects wherever a request points it, and tells what answered. Left open, that makes the
service a port scanner into the network it runs in (its Redis, its databases, the cloud's metadata
service). So a worker connects only to public addresses, plus the networks an operator allows.

The decision is taken on each address the socket is about to connect to, after resolution, so a
name that resolves to a private address (DNS rebinding included) is refused like the address
itself, and before the socket exists, so nothing at all reaches a refused address.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from jobs.setting_lists import entries

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Cloud instance metadata and platform services: credentials and instance secrets answer there.
# Most already fall in a non-public range; they are listed because they stay refused even when an
# allowed network covers them (allowing 100.64.0.0/10 for a Tailscale mail host must not open
# Alibaba's metadata service), and because Azure's is a public address.
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle
        "169.254.170.2",  # AWS ECS task metadata and credentials
        "169.254.169.253",  # AWS VPC DNS
        "fd00:ec2::254",  # AWS metadata over IPv6
        "fd00:ec2::253",  # AWS VPC DNS over IPv6
        "fd20:ce::254",  # GCP metadata over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure WireServer (a public address)
        "192.0.0.192",  # Oracle Cloud Classic
    )
)

# Ranges not public that the ipaddress properties miss, or do not miss in every Python version:
# is_private and is_global changed in 3.12.4 and 3.13, and this list does not depend on them.
_NOT_PUBLIC: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "100.64.0.0/10",  # carrier-grade NAT; cloud-internal and VPN (Tailscale) addresses
        "192.0.0.0/24",  # IETF protocol assignments
        "198.18.0.0/15",  # benchmarking
        "64:ff9b:1::/48",  # local-use NAT64 (RFC 8215): the operator's own translator
        "2001::/32",  # Teredo: a relay delivers to the IPv4 address inside, never judged here
    )
)

# The well-known NAT64 prefix: a connection there ends at the IPv4 address in the last 32 bits.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _ends_at(ip: IPAddress) -> IPAddress:
    """The address a connection to `ip` actually reaches: an IPv4-mapped IPv6 address goes to its
    IPv4 address on this host's own stack, and a NAT64 one through the translator to it."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def _tunnelled_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 endpoint a 6to4 address carries: its relay delivers there. (Teredo's 2001::/32
    needs no such look inside: _NOT_PUBLIC refuses all of it.)"""
    if isinstance(ip, ipaddress.IPv6Address):
        return ip.sixtofour
    return None


def _public_itself(ip: IPAddress) -> bool:
    if (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    ):
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return False
    return not any(ip in network for network in _NOT_PUBLIC if network.version == ip.version)


def is_public(ip: IPAddress) -> bool:
    """Whether `ip` is an ordinary address on the internet, where a mail server may live."""
    target = _ends_at(ip)
    if target in METADATA_ADDRESSES or not _public_itself(target):
        return False
    tunnelled = _tunnelled_ipv4(target)
    return tunnelled is None or _public_itself(tunnelled)


@dataclass(frozen=True, slots=True)
class DestinationPolicy:
    """Where a check may connect. The default is the worker's: public addresses only."""

    # Refuse every address that is not public (is_public) and not in allowed_networks.
    public_only: bool = True
    # Self-hosted mail servers on a private network, development on loopback. A metadata address
    # stays refused even inside one of these (see METADATA_ADDRESSES).
    allowed_networks: tuple[IPNetwork, ...] = ()

    def permits(self, address: str) -> bool:
        """Whether a socket may connect to `address`, as getaddrinfo gives it (an IPv6 scope
        included). Anything that is not an IP address is refused: there is nothing to judge."""
        if not self.public_only:
            return True
        try:
            # A scope ("fe80::1%eth0") says which link, not what kind of address.
            ip = ipaddress.ip_address(address.partition("%")[0])
        except ValueError:
            return False
        target = _ends_at(ip)
        if target in METADATA_ADDRESSES:
            return False
        if any(
            candidate in network
            for network in self.allowed_networks
            for candidate in {ip, target}
            if candidate.version == network.version
        ):
            return True
        return is_public(ip)


# `inboxcheck validate`, run by a person against their own server from their own machine.
ALLOW_ALL = DestinationPolicy(public_only=False)


def parse_networks(value: object) -> tuple[IPNetwork, ...]:
    """Networks from "10.0.0.0/8, fd00::/8" (a bare address is its /32 or /128), or a list of them.

    Host bits set ("10.0.0.1/8") are an error rather than silently widened or narrowed: which of
    the two was meant is for the operator to say.
    """
    networks: list[IPNetwork] = []
    for item in entries(value, "expected comma-separated networks in CIDR notation"):
        if isinstance(item, ipaddress.IPv4Network | ipaddress.IPv6Network):
            networks.append(item)
            continue
        text = str(item).strip()
        if not text:
            continue
        try:
            networks.append(ipaddress.ip_network(text))
        except ValueError:
            raise ValueError(
                f"{text!r} is not a network in CIDR notation (such as 10.0.0.0/8 or fd00::/8, "
                "without host bits set)"
            ) from None
    return tuple(networks)
