"""Provider presets from the product reference: hosts, ports, TLS modes and daily caps."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from jobs.hosts import canonical_host


class InboxType(StrEnum):
    GOOGLE_WORKSPACE = "GOOGLE_WORKSPACE"
    OUTLOOK_365 = "OUTLOOK_365"
    CUSTOM_SMTP = "CUSTOM_SMTP"


# Accepted by the public API for inboxes ColdSend runs itself; there is nothing to log into.
COLDSEND_NATIVE = "COLDSEND_NATIVE"


@dataclass(frozen=True, slots=True)
class Preset:
    smtp_host: str | None
    smtp_port: int | None
    smtp_use_tls: bool
    imap_host: str | None
    imap_port: int | None
    imap_use_ssl: bool
    max_daily_limit: int


PRESETS: dict[InboxType, Preset] = {
    InboxType.GOOGLE_WORKSPACE: Preset(
        smtp_host="smtp.gmail.com",
        smtp_port=587,
        smtp_use_tls=True,
        imap_host="imap.gmail.com",
        imap_port=993,
        imap_use_ssl=True,
        max_daily_limit=2_000,
    ),
    InboxType.OUTLOOK_365: Preset(
        smtp_host="smtp.office365.com",
        smtp_port=587,
        smtp_use_tls=True,
        imap_host="outlook.office365.com",
        imap_port=993,
        imap_use_ssl=True,
        max_daily_limit=5_000,
    ),
    # Custom hosts bring their own endpoints; only the cap is preset.
    InboxType.CUSTOM_SMTP: Preset(
        smtp_host=None,
        smtp_port=None,
        smtp_use_tls=True,
        imap_host=None,
        imap_port=None,
        imap_use_ssl=True,
        max_daily_limit=100_000,
    ),
}

SMTP_IMPLICIT_TLS_PORT = 465

# Mail domains by the provider that runs them: a host that is one of these or below one (label by
# label) is that provider's, whatever type the inbox was given, so its caps follow the servers
# (a CUSTOM_SMTP inbox at smtp.gmail.com is a Google account, capped as one).
PROVIDER_DOMAINS: Mapping[str, InboxType] = MappingProxyType(
    {
        "gmail.com": InboxType.GOOGLE_WORKSPACE,
        "googlemail.com": InboxType.GOOGLE_WORKSPACE,
        "google.com": InboxType.GOOGLE_WORKSPACE,
        "office365.com": InboxType.OUTLOOK_365,
        "outlook.com": InboxType.OUTLOOK_365,
        "office.com": InboxType.OUTLOOK_365,
        "hotmail.com": InboxType.OUTLOOK_365,
        "live.com": InboxType.OUTLOOK_365,
    }
)


def provider_of(host: str) -> InboxType | None:
    """The provider whose domain `host` is, or is under (PROVIDER_DOMAINS); None for others."""
    labels = canonical_host(host).split(".")
    for start in range(len(labels)):
        provider = PROVIDER_DOMAINS.get(".".join(labels[start:]))
        if provider is not None:
            return provider
    return None
