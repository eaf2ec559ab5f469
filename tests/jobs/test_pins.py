"""--resolve HOST:PORT:ADDRESS entries: their edges, and the lookup a connection makes."""

from __future__ import annotations

import pytest

from jobs.pins import NO_PINS, parse_pin, parse_pins, pinned
from jobs.setting_lists import MAX_PORT


@pytest.mark.parametrize("port", [1, MAX_PORT])
def test_the_lowest_and_highest_ports_are_accepted(port: int) -> None:
    assert parse_pin(f"mail.example.com:{port}:192.0.2.1") == (("mail.example.com", port), "192.0.2.1")


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("mail.example.com:0:192.0.2.1", "the port must be a number from 1 to 65535"),
        (f"mail.example.com:{MAX_PORT + 1}:192.0.2.1", "the port must be a number from 1 to 65535"),
        ("mail.example.com:-1:192.0.2.1", "the port must be a number"),
        ("[2001:db8::1:25:192.0.2.1", "is not HOST:PORT:ADDRESS"),
        ("[2001:db8::1]25:192.0.2.1", "is not HOST:PORT:ADDRESS"),
        (":25:192.0.2.1", "is not HOST:PORT:ADDRESS"),
        ("mail.example.com::192.0.2.1", "is not HOST:PORT:ADDRESS"),
        ("mail.example.com:25:", "is not HOST:PORT:ADDRESS"),
        ("mail.example.com:25:[::1", "the address must be an IP address"),
        ("mail.example.com:25:::1]", "the address must be an IP address"),
    ],
)
def test_a_bad_entry_is_refused_with_the_problem(entry: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_pin(entry)


def test_an_ipv6_host_and_a_bracketed_ipv6_address() -> None:
    assert parse_pin(" [2001:DB8::1]:587:[2001:db8::25] ") == (("2001:db8::1", 587), "2001:db8::25")


def test_entries_come_as_text_or_a_list_and_blank_ones_are_skipped() -> None:
    expected = {("mail.example.com", 25): ("192.0.2.1", "192.0.2.2")}
    assert parse_pins(",mail.example.com:25:192.0.2.1, ,mail.example.com:25:192.0.2.2,") == expected
    assert parse_pins(["mail.example.com:25:192.0.2.1", "", "mail.example.com:25:192.0.2.2"]) == expected
    assert parse_pins(expected) == expected


def test_anything_else_is_refused_with_the_expected_form() -> None:
    with pytest.raises(ValueError, match="expected comma-separated HOST:PORT:ADDRESS entries"):
        parse_pins(25)


def test_a_connection_finds_the_pins_of_its_host_and_port_only() -> None:
    pins = parse_pins("mail.example.com:25:192.0.2.1")
    assert pinned(pins, "MAIL.example.com.", 25) == ("192.0.2.1",)
    assert pinned(pins, "mail.example.com", 587) == ()
    assert pinned(pins, "other.example.com", 25) == ()
    assert pinned(NO_PINS, "mail.example.com", 25) == ()


def test_a_wildcard_is_refused_rather_than_matching_nothing() -> None:
    with pytest.raises(ValueError, match=r"'\*\.gmail\.com:993:192\.0\.2\.1': no wildcards, name each host"):
        parse_pins("*.gmail.com:993:192.0.2.1")
