"""One spelling per mail host, for everything keyed or looked up by host (pacing, provider caps).

A request's host is the label its producer typed: `smtp.gmail.com`, `SMTP.GMAIL.COM` and
`smtp.gmail.com.` reach the same servers, as do `::1` and `[0:0::1]`, or `127.1` and `127.0.0.1`
(the resolver reads short and hex IPv4 forms as inet_aton does). A cap keyed by the label would
let each spelling count on its own. Names are not resolved: a name and its addresses stay apart
(a lookup per key would put DNS in front of every pacing decision, and a provider's names map to
many addresses that change).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from functools import lru_cache

# Forms inet_aton may read as an IPv4 address (decimal, octal, hex parts; fewer than four parts).
# Checked first because inet_aton also takes anything after a space.
_IPV4_NUMBERS = re.compile(r"^[0-9A-Fa-fXx.]+$")


# A fleet checks a handful of providers' hosts over and over: each spelling is worked out once.
@lru_cache(maxsize=4096)
def canonical_host(host: str) -> str:
    """Lower case, without the root's trailing dot, IDNA (punycode) for a Unicode name; an IP
    address (bracketed or not, IPv4-mapped IPv6 included) in its compressed standard form."""
    name = host.strip().rstrip(".")
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        return str(mapped or ip)
    if _IPV4_NUMBERS.match(name):
        try:
            return socket.inet_ntoa(socket.inet_aton(name))
        except OSError:
            pass
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            pass  # not a valid IDN (an empty or overlong label): it cannot resolve anyway
    return name.lower()


LOOPBACK_NAMES = frozenset({"localhost"})


def is_loopback_host(host: str) -> bool:
    """Whether `host` names this machine by its address (127.0.0.0/8, ::1) or as localhost: where
    plain http (a token endpoint, a webhook) is allowed for development."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
