"""The providers the README names are the ones the result can carry, and each is told from its
servers' host names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from jobs.providers import Provider, provider_of_host

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def readme_providers() -> set[str]:
    """The backticked names of the paragraph that says who runs the servers."""
    paragraph = README.split("`provider` is who runs the servers", 1)[1].split("\n\n", 1)[0]
    return set(re.findall(r"`([A-Z][A-Z_]+)`", paragraph))


def test_the_readme_names_every_provider_and_no_other() -> None:
    assert readme_providers() == {provider.value for provider in Provider}


# One real host of each provider not already covered by test_resolve_and_providers.py.
@pytest.mark.parametrize(
    ("host", "provider"),
    [
        ("mail.privateemail.com", Provider.NAMECHEAP),
        ("ssl0.ovh.net", Provider.OVH),
        ("imap.hostinger.com", Provider.HOSTINGER),
        ("imap.mail.us-east-1.awsapps.com", Provider.AMAZON_WORKMAIL),
        ("imap.strato.de", Provider.STRATO),
        ("smtp.protonmail.ch", Provider.PROTON),
        ("SMTP.ICLOUD.COM.", Provider.ICLOUD),
    ],
)
def test_the_hosting_platforms_are_told_from_their_hosts(host: str, provider: Provider) -> None:
    assert provider_of_host(host, 993) is provider
