"""Opening a check's connection over real sockets on loopback: a name whose first address is
refused still connects through a permitted one, a refused port is told apart from a refused
destination, the operator's log names what was refused, and a scoped IPv6 literal keeps its link."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator

import pytest
from structlog.testing import capture_logs

from jobs import net
from jobs.destinations import DestinationPolicy
from jobs.errors import CheckError, Reason

WHERE = "mail.example.com:587"
# Loopback is allowed for 127.0.0.1 only: 127.0.0.2 stands for a name's private address.
ONLY_127_0_0_1 = DestinationPolicy(allowed_networks=(ipaddress.ip_network("127.0.0.1/32"),))


def _info(address: str, port: int) -> net.AddrInfo:
    return (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port))


@pytest.fixture
async def listening_port() -> AsyncIterator[int]:
    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_a_refused_address_is_skipped_for_a_permitted_one(listening_port: int) -> None:
    addresses = [_info("127.0.0.2", listening_port), _info("127.0.0.1", listening_port)]
    with capture_logs() as logs:
        sock = await net.connect(addresses, WHERE, ONLY_127_0_0_1)
    with sock:
        assert sock.getpeername() == ("127.0.0.1", listening_port)
    assert logs == []


async def test_a_closed_port_behind_a_refused_address_is_a_refused_connection(closed_port: int) -> None:
    addresses = [_info("127.0.0.2", closed_port), _info("127.0.0.1", closed_port)]
    with pytest.raises(CheckError) as raised:
        await net.connect(addresses, WHERE, ONLY_127_0_0_1)
    assert (raised.value.reason, raised.value.detail) == (
        Reason.CONNECTION_REFUSED,
        f"{WHERE} refused the connection",
    )


async def test_only_refused_addresses_are_a_refused_destination_logged_for_the_operator(
    closed_port: int,
) -> None:
    addresses = [_info("127.0.0.2", closed_port), _info("127.0.0.3", closed_port)]
    with capture_logs() as logs, pytest.raises(CheckError) as raised:
        await net.connect(addresses, WHERE, ONLY_127_0_0_1)
    assert raised.value.reason is Reason.DESTINATION_REFUSED
    assert logs == [
        {
            "event": "destination_refused",
            "where": WHERE,
            "addresses": ["127.0.0.2", "127.0.0.3"],
            "log_level": "info",
        }
    ]


async def test_a_scoped_ipv6_literal_keeps_its_link() -> None:
    assert await net.resolve("fe80::1%lo", 25) == [
        (
            socket.AF_INET6,
            socket.SOCK_STREAM,
            socket.IPPROTO_TCP,
            "",
            ("fe80::1", 25, 0, socket.if_nametoindex("lo")),
        )
    ]


@pytest.mark.parametrize("literal", ["127.0.0.1", "::1", "2001:db8::25"])
async def test_an_ip_literal_resolves_to_what_getaddrinfo_answers(literal: str) -> None:
    expected = await asyncio.get_running_loop().getaddrinfo(literal, 25, type=socket.SOCK_STREAM)
    assert list(await net.resolve(literal, 25)) == expected


@pytest.mark.parametrize(
    ("error", "reason", "detail"),
    [
        (socket.EAI_AGAIN, Reason.DNS_UNAVAILABLE, "DNS lookup of mail.example.com failed: resolver said no"),
        (socket.EAI_NONAME, Reason.NO_SUCH_HOST, "mail.example.com does not resolve: resolver said no"),
    ],
)
async def test_the_system_resolvers_failure_is_told_apart(
    monkeypatch: pytest.MonkeyPatch, error: int, reason: Reason, detail: str
) -> None:
    # The machine's resolver is never asked (its answer depends on the machine): its two kinds of
    # failure are raised as getaddrinfo raises them.
    async def failing(*args: object, **kwargs: object) -> None:
        raise socket.gaierror(error, "resolver said no")

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", failing)
    with pytest.raises(CheckError) as raised:
        await net.resolve("mail.example.com", 25)
    assert (raised.value.reason, raised.value.detail) == (reason, detail)
