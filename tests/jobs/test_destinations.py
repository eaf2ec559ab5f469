"""Where a check may connect: the policy's verdicts, and real checks against loopback servers
refused before a single packet (the servers count accepted connections)."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable

import pytest

from jobs import net
from jobs.destinations import ALLOW_ALL, DestinationPolicy, is_public, parse_networks
from jobs.errors import ErrorCode, Reason
from jobs.imap_check import check_imap
from jobs.mode_probe import speaks_implicit_tls
from jobs.redact import excerpt
from jobs.resolutions import resolution
from jobs.smtp_check import check_smtp
from tests.jobs.checks import ALLOW_LOOPBACK, LOOPBACK, options, request
from tests.servers.certs import PKI
from tests.servers.fakes import FakeServer, SmtpScript, drops_the_tls_hello, silent

FakeFactory = Callable[..., FakeServer]
WORKER_DEFAULT = DestinationPolicy()


# -- the policy ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.9.9.9",
        "::1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "169.254.1.1",
        "100.64.0.1",  # carrier-grade NAT, not is_private in 3.11
        "100.100.100.200",  # Alibaba metadata, inside CGNAT
        "168.63.129.16",  # Azure WireServer: a public address, listed
        "192.0.0.192",
        "0.0.0.0",
        "255.255.255.255",
        "224.0.0.1",
        "240.0.0.1",
        "198.18.0.1",
        "fd00:ec2::254",  # AWS metadata over IPv6
        "fc00::1",
        "fe80::1",
        "fe80::1%lo",
        "fec0::1",  # site-local
        "ff02::1",
        "::",
        "::ffff:127.0.0.1",  # IPv4-mapped: the connection goes to 127.0.0.1
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "2002:7f00:1::1",  # 6to4 carrying 127.0.0.1
        "2002:a00:1::1",  # 6to4 carrying 10.0.0.1
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo: refused whatever it carries
        "not an address",
    ],
)
def test_the_worker_default_refuses_non_public_addresses(address: str) -> None:
    assert not WORKER_DEFAULT.permits(address)


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "142.250.102.108", "2a00:1450:400c:c07::6c", "::ffff:8.8.8.8", "64:ff9b::808:808"],
)
def test_public_addresses_are_permitted(address: str) -> None:
    assert WORKER_DEFAULT.permits(address)
    assert is_public(ipaddress.ip_address(address))


def test_allowed_networks_open_exactly_themselves_and_never_metadata() -> None:
    policy = DestinationPolicy(
        allowed_networks=parse_networks("10.0.0.0/8, 127.0.0.0/8, 169.254.0.0/16, 100.64.0.0/10")
    )
    assert policy.permits("10.20.30.40")
    assert policy.permits("::ffff:127.0.0.1")  # mapped: judged as the address it reaches
    assert policy.permits("169.254.1.1")
    assert not policy.permits("192.168.1.1")
    assert not policy.permits("::1")
    # Allowing a range for a Tailscale or link-local mail host does not open the metadata service.
    assert not policy.permits("169.254.169.254")
    assert not policy.permits("100.100.100.200")
    assert not policy.permits("::ffff:169.254.169.254")


def test_allow_all_permits_anything() -> None:
    assert all(ALLOW_ALL.permits(a) for a in ("127.0.0.1", "169.254.169.254", "::1", "10.0.0.1"))


def test_network_lists() -> None:
    assert parse_networks(" 10.0.0.0/8 ,fd00::/8,, 192.0.2.7") == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("fd00::/8"),
        ipaddress.ip_network("192.0.2.7/32"),
    )
    assert parse_networks("") == ()
    for bad in ("10.0.0.0/33", "localhost", "10.0.0.1/8"):
        with pytest.raises(ValueError, match="CIDR"):
            parse_networks(bad)


# -- real connections on loopback -------------------------------------------------------------


def _smtp_answering(fake_server: FakeFactory) -> FakeServer:
    return fake_server(SmtpScript(ehlo_extensions=["AUTH PLAIN"], auth_reply="535 5.7.8 no"))


async def test_loopback_is_refused_by_default_and_nothing_reaches_it(
    fake_server: FakeFactory, ca_file: str
) -> None:
    server = _smtp_answering(fake_server)
    req = request(
        smtp_port=server.port, smtp_security="none", allow_insecure_auth=True, imap_port=server.port
    )
    refused = await check_smtp(req, options(ca_file, destinations=WORKER_DEFAULT))
    assert (refused.error_code, refused.reason, refused.failed_step, refused.retryable) == (
        ErrorCode.CONNECTION_FAILED,
        Reason.DESTINATION_REFUSED,
        "connect",
        False,
    )
    imap_refused = await check_imap(req, options(ca_file, destinations=WORKER_DEFAULT))
    assert imap_refused.reason is Reason.DESTINATION_REFUSED
    assert server.connections == 0
    assert "INBOXCHECK_ALLOW_NETWORKS" in resolution(Reason.DESTINATION_REFUSED)

    # The same server, its network allowed: a real conversation (here a refused login).
    allowed = await check_smtp(req, options(ca_file, destinations=ALLOW_LOOPBACK))
    assert (allowed.reason, allowed.failed_step) == (Reason.INVALID_CREDENTIALS, "auth")
    assert server.connections == 1


async def test_a_name_resolving_to_loopback_is_refused_and_the_address_not_told(
    fake_server: FakeFactory, ca_file: str
) -> None:
    server = _smtp_answering(fake_server)
    for check in (check_smtp, check_imap):
        req = request(
            smtp_host="localhost", smtp_port=server.port, imap_host="localhost", imap_port=server.port
        )
        result = await check(req, options(ca_file, destinations=WORKER_DEFAULT))
        assert result.reason is Reason.DESTINATION_REFUSED
        detail = result.detail or ""
        # The host as given is named; what it resolved to (the platform's network) is not.
        assert "localhost" in detail and LOOPBACK not in detail and "127." not in detail
    assert server.connections == 0


async def test_an_ipv4_mapped_literal_is_judged_as_the_ipv4_address_it_reaches(
    fake_server: FakeFactory, ca_file: str
) -> None:
    server = _smtp_answering(fake_server)
    req = request(
        smtp_host="::ffff:127.0.0.1", smtp_port=server.port, smtp_security="none", allow_insecure_auth=True
    )
    refused = await check_smtp(req, options(ca_file, destinations=WORKER_DEFAULT))
    assert refused.reason is Reason.DESTINATION_REFUSED
    assert server.connections == 0
    allowed = await check_smtp(req, options(ca_file, destinations=ALLOW_LOOPBACK))
    assert allowed.reason is Reason.INVALID_CREDENTIALS
    assert server.connections == 1  # it really did reach 127.0.0.1


async def test_the_tls_mode_probe_asks_the_policy_too(fake_server: FakeFactory, pki: PKI) -> None:
    server = fake_server(silent, ssl_context=pki.valid.ssl_context)
    addresses = await net.resolve(LOOPBACK, server.port)
    where = f"SMTP server {LOOPBACK}:{server.port}"
    assert not await speaks_implicit_tls(addresses, LOOPBACK, where, WORKER_DEFAULT)
    assert server.connections == 0
    assert await speaks_implicit_tls(addresses, LOOPBACK, where, ALLOW_LOOPBACK)
    assert server.connections == 1


class FirstConnectionOnly(DestinationPolicy):
    """Loopback for the check's own connection, nothing after it: what a name that rebinds to a
    private address between the two connections would meet."""

    __slots__ = ("_used",)

    def __init__(self) -> None:
        super().__init__(allowed_networks=ALLOW_LOOPBACK.allowed_networks)
        object.__setattr__(self, "_used", False)

    def permits(self, address: str) -> bool:
        if self._used:
            return False
        object.__setattr__(self, "_used", True)
        return super().permits(address)


async def test_the_probes_second_connection_is_refused_within_a_check(
    fake_server: FakeFactory, pki: PKI, ca_file: str
) -> None:
    # STARTTLS against an implicit-TLS port: normally the probe's second connection names the
    # mismatch. Refused, the probe learns nothing and the greeting simply times out.
    server = fake_server(silent, ssl_context=pki.valid.ssl_context)
    req = request(smtp_port=server.port, smtp_security="starttls")
    result = await check_smtp(req, options(ca_file, destinations=FirstConnectionOnly()))
    assert (result.reason, result.failed_step) == (Reason.NO_GREETING, "greeting")
    assert server.connections == 1


async def test_a_dropped_handshake_stays_a_handshake_failure_when_the_probe_is_refused(
    fake_server: FakeFactory, ca_file: str
) -> None:
    # Implicit TLS, the handshake dropped: a probe on a silent connection would tell a TLS server
    # from one that hangs up on anyone. Refused, it learns nothing, and the drop is the verdict.
    server = fake_server(drops_the_tls_hello)
    req = request(smtp_port=server.port, smtp_security="ssl")
    result = await check_smtp(req, options(ca_file, destinations=FirstConnectionOnly()))
    assert (result.error_code, result.reason) == (ErrorCode.SSL_ERROR, Reason.TLS_HANDSHAKE_FAILED)
    assert server.connections == 1


# -- answers that are not the protocol ---------------------------------------------------------

EXCERPT_LIMIT = 64
SSH_BANNER = b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13.5 " + b"\x1b[2J\x07" + b"x" * 5000 + b"\r\n"
MYSQL_HANDSHAKE = b"J\x00\x00\x00\n8.0.36\x00\x08\x00\x00\x00\x1a+<M^op\x01\x00\xff\xf7\x08\x02\x00mysql_native_password\x00"


def _banner(data: bytes) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], object]:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        await writer.drain()
        while await reader.read(1024):
            pass

    return handler


def _assert_short_and_printable(text: str | None, starts: str) -> None:
    assert text is not None and text.startswith(starts)
    assert len(text) <= EXCERPT_LIMIT
    assert all(" " <= ch <= "~" for ch in text), text


@pytest.mark.parametrize(
    ("banner", "starts"),
    [(SSH_BANNER, "SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13.5 ?[2J?xxx"), (MYSQL_HANDSHAKE, "J???")],
    ids=["ssh", "mysql"],
)
async def test_an_smtp_port_answered_by_another_service_gives_only_an_excerpt(
    fake_server: FakeFactory, ca_file: str, banner: bytes, starts: str
) -> None:
    server = fake_server(_banner(banner))
    result = await check_smtp(request(smtp_port=server.port, smtp_security="starttls"), options(ca_file))
    assert (result.error_code, result.reason, result.failed_step, result.retryable) == (
        ErrorCode.CONNECTION_FAILED,
        Reason.PROTOCOL_ERROR,
        "greeting",
        False,
    )
    assert result.reply_code is None  # aiosmtplib's -1 is not a code the server sent
    _assert_short_and_printable(result.reply_text, starts)
    assert "xxxxx" not in (result.detail or "") and "\x1b" not in (result.detail or "")


async def test_an_imap_port_answered_by_another_service_gives_only_an_excerpt(
    fake_server: FakeFactory, ca_file: str
) -> None:
    server = fake_server(_banner(SSH_BANNER))
    result = await check_imap(request(imap_port=server.port, imap_use_ssl=False), options(ca_file))
    assert (result.error_code, result.reason, result.failed_step, result.retryable) == (
        ErrorCode.CONNECTION_FAILED,
        Reason.PROTOCOL_ERROR,
        "greeting",
        False,
    )
    assert result.reply_status is None
    _assert_short_and_printable(result.reply_text, "SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13.5 ?[2J?xxx")


def test_an_excerpt_is_short_and_printable() -> None:
    assert excerpt("  a\x00b\u00e9\x1b[0m\r\n") == "a?b??[0m"
    long = excerpt("y" * 10_000)
    assert len(long) == EXCERPT_LIMIT and long.endswith("...")
    assert excerpt("z" * EXCERPT_LIMIT) == "z" * EXCERPT_LIMIT
