"""Allowed networks as an operator gives them (text, a list, ready networks), and what a refused
or unreachable destination tells the user."""

from __future__ import annotations

import errno
import ipaddress

import pytest

from jobs import net
from jobs.destinations import DestinationPolicy, parse_networks
from jobs.errors import Reason

TEN = ipaddress.ip_network("10.0.0.0/8")
DOC = ipaddress.ip_network("2001:db8::/32")


def test_a_list_may_mix_text_and_networks_and_blank_entries_are_skipped() -> None:
    assert parse_networks([TEN, "", " 2001:db8::/32 ", ipaddress.ip_network("192.0.2.0/24")]) == (
        TEN,
        DOC,
        ipaddress.ip_network("192.0.2.0/24"),
    )
    assert parse_networks((DOC, TEN)) == (DOC, TEN)


def test_anything_else_is_refused_with_the_expected_form() -> None:
    with pytest.raises(ValueError, match=r"^expected comma-separated networks in CIDR notation$"):
        parse_networks(8)


def test_a_network_with_host_bits_set_is_refused_with_the_rule() -> None:
    with pytest.raises(ValueError) as caught:
        parse_networks("10.0.0.1/8")
    assert str(caught.value) == (
        "'10.0.0.1/8' is not a network in CIDR notation (such as 10.0.0.0/8 or fd00::/8, without host bits set)"
    )


@pytest.mark.parametrize("number", [errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL])
def test_an_unreachable_network_is_told_apart_from_a_closed_connection(number: int) -> None:
    error = net.connect_error(OSError(number, "No route"), "mail.example.com:587")
    assert (error.reason, error.detail) == (
        Reason.NETWORK_UNREACHABLE,
        "mail.example.com:587 is unreachable: No route",
    )


def test_a_refused_destination_says_why_without_the_address() -> None:
    error = net.destination_refused("mail.example.com:587")
    assert error.reason is Reason.DESTINATION_REFUSED
    assert error.detail == (
        "mail.example.com:587 was not contacted: it resolves to no public address (only private, loopback, "
        "link-local, reserved or cloud metadata ones), and this service does not connect to those"
    )


@pytest.mark.parametrize(
    "address",
    [
        "4000::1",  # reserved IPv6, outside the global unicast 2000::/3, yet is_global in Python 3.11
        "e000::1",
        "64:ff9b:1::a00:1",  # local-use NAT64: the operator's own translator
        "100.64.0.1",  # carrier-grade NAT
        "2001:db8::1",  # documentation
    ],
)
def test_the_worker_default_refuses_reserved_and_local_use_ranges(address: str) -> None:
    assert not DestinationPolicy().permits(address)
