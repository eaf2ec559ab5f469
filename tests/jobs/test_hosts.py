"""Canonical host names: one spelling per host, for pacing keys and provider caps."""

from __future__ import annotations

import pytest

from jobs.hosts import canonical_host, is_loopback_host


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("smtp.gmail.com", "smtp.gmail.com"),
        ("SMTP.GMAIL.COM", "smtp.gmail.com"),
        ("smtp.gmail.com.", "smtp.gmail.com"),
        ("Smtp.Gmail.Com.", "smtp.gmail.com"),
        ("Bücher.Example", "xn--bcher-kva.example"),
        ("XN--BCHER-KVA.example", "xn--bcher-kva.example"),
        ("mail.example\u3002com", "mail.example.com"),  # an ideographic full stop separates labels
        ("127.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),  # short and hex forms: what the resolver connects to
        ("0x7f.0.0.1", "127.0.0.1"),
        ("::1", "::1"),
        ("[::1]", "::1"),
        ("0:0:0:0:0:0:0:1", "::1"),
        ("2001:DB8:0:0::1", "2001:db8::1"),
        ("::ffff:192.0.2.1", "192.0.2.1"),  # IPv4-mapped: the same IPv4 host
        ("1e100.net", "1e100.net"),  # digits and hex letters, yet a name
    ],
)
def test_canonical_host(given: str, canonical: str) -> None:
    assert canonical_host(given) == canonical


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("localhost", True), ("LocalHost", True), ("127.0.0.2", True), ("::1", True), ("example.test", False)],
)
def test_plain_http_is_for_this_machine_by_name_or_address(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback
