"""INBOXCHECK_DNS_SERVERS: names asked of a DNS server the test starts, so NO_SUCH_HOST and
DNS_UNAVAILABLE are the test's own facts, never the machine's resolver's."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import pytest

from jobs.dns_servers import DNS_PORT, lookup, parse_dns_servers
from jobs.errors import CheckError, ErrorCode, Reason
from jobs.imap_check import check_imap
from jobs.smtp_check import check_smtp
from jobs.validate import validate_inbox
from tests.jobs.checks import LOOPBACK, TIMEOUT_SLACK_S, options, request
from tests.servers.certs import PKI
from tests.servers.dns import DnsServer, Mode
from tests.servers.fakes import FakeServer, ImapScript
from tests.servers.smtp import SmtpServer

USER, PASSWORD = "ann@inboxcheck.test", "right-password"
MAIL_HOST = "mail.inboxcheck.test"
MISSING_HOST = "no-such-host.invalid"
SILENT_STEP_S = 0.5


async def test_a_name_is_looked_up_at_the_named_server_and_tls_still_verifies_the_name(
    dns_server: Callable[..., DnsServer], smtp_server: Callable[..., SmtpServer], pki: PKI, ca_file: str
) -> None:
    dns = dns_server({MAIL_HOST: [LOOPBACK]})
    smtp = smtp_server(users={USER: PASSWORD}, cert=pki.server_cert("dns-mail", MAIL_HOST))
    result = await check_smtp(
        request(smtp_host=MAIL_HOST, smtp_port=smtp.port, smtp_password=PASSWORD),
        options(ca_file, dns_servers=(dns.address,)),
    )
    assert result.status == "ok", result.detail
    assert (MAIL_HOST, "A") in dns.questions


async def test_an_imap_host_is_looked_up_at_the_named_server_too(
    dns_server: Callable[..., DnsServer], fake_server: Callable[..., FakeServer], pki: PKI, ca_file: str
) -> None:
    dns = dns_server({MAIL_HOST: [LOOPBACK]})
    imap = fake_server(
        ImapScript(login_reply="OK Logged in"), ssl_context=pki.server_cert("dns-imap", MAIL_HOST).ssl_context
    )
    result = await check_imap(
        request(imap_host=MAIL_HOST, imap_port=imap.port, imap_use_ssl=True),
        options(ca_file, dns_servers=(dns.address,)),
    )
    assert result.status == "ok", result.detail
    assert (MAIL_HOST, "A") in dns.questions


async def test_a_name_the_server_says_does_not_exist_is_no_such_host_on_both_protocols(
    dns_server: Callable[..., DnsServer], ca_file: str
) -> None:
    dns = dns_server()
    result = await validate_inbox(
        request(smtp_host=MISSING_HOST, imap_host=MISSING_HOST), options(ca_file, dns_servers=(dns.address,))
    )
    for section in (result.smtp, result.imap):
        assert (section.error_code, section.reason, section.failed_step) == (
            ErrorCode.HOST_NOT_FOUND,
            Reason.NO_SUCH_HOST,
            "dns",
        )
        assert not section.retryable
    assert {name for name, _ in dns.questions} == {MISSING_HOST}


async def test_a_name_without_addresses_is_no_such_host(
    dns_server: Callable[..., DnsServer], ca_file: str
) -> None:
    dns = dns_server({MAIL_HOST: []})
    result = await check_smtp(request(smtp_host=MAIL_HOST), options(ca_file, dns_servers=(dns.address,)))
    assert result.reason is Reason.NO_SUCH_HOST
    assert "no addresses" in (result.detail or "")


@pytest.mark.parametrize("mode", ["servfail", "silent"])
async def test_a_resolver_that_fails_or_stays_silent_is_dns_unavailable_and_retried(
    dns_server: Callable[..., DnsServer], ca_file: str, mode: Mode
) -> None:
    dns = dns_server({MAIL_HOST: [LOOPBACK]}, mode=mode)
    started = time.monotonic()
    result = await check_smtp(
        request(smtp_host=MAIL_HOST), options(ca_file, step_timeout=SILENT_STEP_S, dns_servers=(dns.address,))
    )
    assert (result.error_code, result.reason, result.failed_step) == (
        ErrorCode.HOST_NOT_FOUND,
        Reason.DNS_UNAVAILABLE,
        "dns",
    )
    assert result.retryable
    assert time.monotonic() - started < SILENT_STEP_S + TIMEOUT_SLACK_S
    assert dns.questions


def test_servers_are_parsed_with_their_ports() -> None:
    assert parse_dns_servers("192.0.2.53, 127.0.0.1:5353,[::1]:5300,2001:db8::53") == (
        ("192.0.2.53", DNS_PORT),
        ("127.0.0.1", 5353),
        ("::1", 5300),
        ("2001:db8::53", DNS_PORT),
    )
    assert parse_dns_servers("") == ()


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("dns.example", "a DNS server is an IP address"),
        ("127.0.0.1:0", "the port must be a number from 1 to 65535"),
        ("127.0.0.1:53x", "the port must be a number"),
        ("[::1:53", "is not ADDRESS[:PORT]"),
    ],
)
def test_a_bad_server_is_named_with_its_problem(entry: str, problem: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_dns_servers(f"127.0.0.1,{entry}")
    assert repr(entry) in str(caught.value) and problem in str(caught.value)


@pytest.mark.parametrize("through_server", [True, False])
async def test_a_name_with_a_label_over_63_characters_cannot_exist(
    dns_server: Callable[..., DnsServer], ca_file: str, through_server: bool
) -> None:
    # Refused before any question is sent, by dnspython or by the IDNA codec under getaddrinfo.
    dns = dns_server()
    servers = (dns.address,) if through_server else ()
    result = await check_smtp(
        request(smtp_host="a" * 64 + ".example.com"), options(ca_file, dns_servers=servers)
    )
    assert (result.reason, result.failed_step, result.retryable) == (Reason.NO_SUCH_HOST, "dns", False)
    assert not dns.questions


async def test_addresses_come_ipv6_first_and_a_failing_server_is_named_in_the_detail(
    dns_server: Callable[..., DnsServer], ca_file: str
) -> None:
    dns = dns_server({MAIL_HOST: ["127.0.0.1", "::1"]})
    assert await lookup(MAIL_HOST, (dns.address,)) == [
        (socket.AF_INET6, "::1"),
        (socket.AF_INET, "127.0.0.1"),
    ]
    failing = dns_server({MAIL_HOST: [LOOPBACK]}, mode="servfail")
    result = await check_smtp(request(smtp_host=MAIL_HOST), options(ca_file, dns_servers=(failing.address,)))
    assert result.detail == f"DNS lookup of {MAIL_HOST} failed: NoNameservers"
    with pytest.raises(CheckError) as caught:
        await lookup(MISSING_HOST, (dns.address,))
    assert str(caught.value) == caught.value.detail == f"{MISSING_HOST} does not resolve: no such name"


def test_parsed_servers_parse_again_and_other_values_are_refused_saying_what_is_expected() -> None:
    servers = parse_dns_servers("127.0.0.1:5353, [::1]")
    assert parse_dns_servers(servers) == servers  # settings validated twice keep their servers
    with pytest.raises(ValueError, match=r"^DNS servers are a comma-separated list of ADDRESS\[:PORT\]$"):
        parse_dns_servers(53)
    with pytest.raises(ValueError, match=r"^53 is not ADDRESS\[:PORT\]"):
        parse_dns_servers([53])
    # the first closing bracket ends the address: what follows is the port, and it is wrong
    with pytest.raises(ValueError, match="the port must be a number"):
        parse_dns_servers("[::1]:53]")
