"""Who runs an inbox's mail servers, told from the host names and the inbox type.

Several providers answer one generic text for causes that only they have (iCloud's
`Authentication failed` means an app-specific password is missing; GMX's means IMAP is switched
off in the mailbox settings): the reply decides the reason, the provider decides the advice. The
name is the one the request gives, never the address it resolves to (--resolve included), so a
host pinned to a test server is still that provider's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from types import MappingProxyType

from jobs.hosts import canonical_host, is_loopback_host
from jobs.presets import PROVIDER_DOMAINS, InboxType


class Provider(StrEnum):
    GOOGLE = "GOOGLE"
    MICROSOFT = "MICROSOFT"
    YAHOO = "YAHOO"  # Yahoo and AOL: one mail platform
    ICLOUD = "ICLOUD"
    ZOHO = "ZOHO"
    FASTMAIL = "FASTMAIL"
    GMX = "GMX"
    WEB_DE = "WEB_DE"
    IONOS = "IONOS"
    YANDEX = "YANDEX"
    MAIL_RU = "MAIL_RU"
    PROTON = "PROTON"  # only through Proton Mail Bridge on the user's machine
    # Hosting platforms whose mail host names are their own.
    RACKSPACE = "RACKSPACE"
    GODADDY = "GODADDY"
    NAMECHEAP = "NAMECHEAP"
    OVH = "OVH"
    HOSTINGER = "HOSTINGER"
    AMAZON_WORKMAIL = "AMAZON_WORKMAIL"
    STRATO = "STRATO"


_BY_INBOX_TYPE: Mapping[InboxType, Provider] = MappingProxyType(
    {InboxType.GOOGLE_WORKSPACE: Provider.GOOGLE, InboxType.OUTLOOK_365: Provider.MICROSOFT}
)

# A host that is one of these domains or below one (label by label) is that provider's. Google's
# and Microsoft's come from the presets' table, which caps their daily sending.
DOMAINS: Mapping[str, Provider] = MappingProxyType(
    {
        **{domain: _BY_INBOX_TYPE[inbox_type] for domain, inbox_type in PROVIDER_DOMAINS.items()},
        "yahoo.com": Provider.YAHOO,  # smtp.mail.yahoo.com, imap.mail.yahoo.com
        "aol.com": Provider.YAHOO,  # smtp.aol.com, imap.aol.com
        "mail.me.com": Provider.ICLOUD,  # smtp.mail.me.com, imap.mail.me.com
        "icloud.com": Provider.ICLOUD,
        "zoho.com": Provider.ZOHO,  # smtp.zoho.com, imappro.zoho.com
        "zoho.eu": Provider.ZOHO,
        "zoho.in": Provider.ZOHO,
        "zoho.com.au": Provider.ZOHO,
        "zoho.jp": Provider.ZOHO,
        "fastmail.com": Provider.FASTMAIL,  # smtp.fastmail.com, imap.fastmail.com
        "messagingengine.com": Provider.FASTMAIL,
        "gmx.net": Provider.GMX,  # mail.gmx.net, imap.gmx.net
        "gmx.com": Provider.GMX,
        "gmx.de": Provider.GMX,
        "web.de": Provider.WEB_DE,  # smtp.web.de, imap.web.de
        "ionos.com": Provider.IONOS,
        "ionos.de": Provider.IONOS,  # smtp.ionos.de, imap.ionos.de
        "ionos.co.uk": Provider.IONOS,
        "ionos.fr": Provider.IONOS,
        "ionos.es": Provider.IONOS,
        "1and1.com": Provider.IONOS,
        "yandex.ru": Provider.YANDEX,  # smtp.yandex.ru, imap.yandex.ru
        "yandex.com": Provider.YANDEX,
        "mail.ru": Provider.MAIL_RU,  # smtp.mail.ru, imap.mail.ru
        "proton.me": Provider.PROTON,
        "protonmail.com": Provider.PROTON,
        "protonmail.ch": Provider.PROTON,
        "emailsrvr.com": Provider.RACKSPACE,  # secure.emailsrvr.com
        "secureserver.net": Provider.GODADDY,  # smtpout.secureserver.net, imap.secureserver.net
        "privateemail.com": Provider.NAMECHEAP,  # mail.privateemail.com
        "ovh.net": Provider.OVH,  # ssl0.ovh.net, pro1.mail.ovh.net
        "hostinger.com": Provider.HOSTINGER,  # smtp.hostinger.com, imap.hostinger.com
        "awsapps.com": Provider.AMAZON_WORKMAIL,  # imap.mail.<region>.awsapps.com
        "strato.de": Provider.STRATO,  # smtp.strato.de, imap.strato.de
    }
)

# Proton Mail Bridge listens on the user's own machine: IMAP on 1143, SMTP on 1025 by default.
PROTON_BRIDGE_PORTS = frozenset({1143, 1025})


def provider_of_host(host: str, port: int | None = None) -> Provider | None:
    """The provider whose domain `host` is or is under; Proton for Bridge's default ports on
    loopback; None for any other host."""
    name = canonical_host(host)
    labels = name.split(".")
    for start in range(len(labels)):
        provider = DOMAINS.get(".".join(labels[start:]))
        if provider is not None:
            return provider
    if port in PROTON_BRIDGE_PORTS and is_loopback_host(name):
        return Provider.PROTON
    return None


def identify(inbox_type: InboxType, endpoints: Iterable[tuple[str, int]] = ()) -> Provider | None:
    """The provider of an inbox: its servers' first, as the servers are what answers; else the
    one its type names (a GOOGLE_WORKSPACE inbox is Google's); None for a custom host no table
    knows."""
    for host, port in endpoints:
        provider = provider_of_host(host, port)
        if provider is not None:
            return provider
    return _BY_INBOX_TYPE.get(inbox_type)
