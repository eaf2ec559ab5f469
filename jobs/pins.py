"""--resolve HOST:PORT:ADDRESS, curl's convention: connect to ADDRESS for HOST:PORT.

Only the address changes. The name stays what TLS verifies (SNI and the certificate), what
identifies the provider, what pacing and caps are keyed on and what the result names; the
destination policy still judges the pinned address like any resolved one. Operators pin a
provider's host; tests point a provider's host name at a server on loopback.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from types import MappingProxyType

from jobs.hosts import canonical_host
from jobs.setting_lists import entries, parse_port

# (canonical host, port) -> addresses, in the order given.
Pins = Mapping[tuple[str, int], tuple[str, ...]]
NO_PINS: Pins = MappingProxyType({})

_EXAMPLE = "such as imap.gmail.com:993:127.0.0.1 or smtp.example.com:587:[2001:db8::25]"


def _unbracket(text: str) -> str:
    return text[1:-1] if text.startswith("[") and text.endswith("]") else text


def parse_pin(entry: str) -> tuple[tuple[str, int], str]:
    """One HOST:PORT:ADDRESS entry; ValueError naming the entry and the problem."""
    text = entry.strip()
    if text.startswith("["):  # an IPv6 literal as HOST
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise ValueError(f"{entry!r} is not HOST:PORT:ADDRESS ({_EXAMPLE})")
        rest = rest[1:]
    else:
        host, _, rest = text.partition(":")
    port_text, _, address = rest.partition(":")
    if not host or not port_text or not address:
        raise ValueError(f"{entry!r} is not HOST:PORT:ADDRESS ({_EXAMPLE})")
    if "*" in host:  # curl would pin no other host either; say so rather than match nothing
        raise ValueError(f"{entry!r}: no wildcards, name each host ({_EXAMPLE})")
    port = parse_port(port_text, entry)
    try:
        ip = ipaddress.ip_address(_unbracket(address))
    except ValueError:
        raise ValueError(f"{entry!r}: the address must be an IP address ({_EXAMPLE})") from None
    return (canonical_host(host), port), str(ip)


def parse_pins(value: object) -> Pins:
    """Pins from "HOST:PORT:ADDRESS,HOST:PORT:ADDRESS" or a list of entries (or a ready mapping).
    An entry repeated for one HOST:PORT adds an address."""
    # A plain dict, not a read-only view: settings are deep-copied, and a mappingproxy cannot be.
    if isinstance(value, Mapping):
        return dict(value)
    pins: dict[tuple[str, int], tuple[str, ...]] = {}
    for entry in entries(value, f"expected comma-separated HOST:PORT:ADDRESS entries ({_EXAMPLE})"):
        if not str(entry).strip():
            continue
        key, address = parse_pin(str(entry))
        if address not in pins.get(key, ()):
            pins[key] = (*pins.get(key, ()), address)
    return pins


def pinned(pins: Pins, host: str, port: int) -> tuple[str, ...]:
    """The addresses pinned for host:port; empty when it is not pinned."""
    if not pins:
        return ()
    return pins.get((canonical_host(host), port), ())
