"""Telling a silent server from a TLS-mode mistake.

A client that waits for a plaintext greeting on an implicit-TLS port (STARTTLS mode against 465
or 993) hears nothing, exactly as behind a dropping firewall. If the greeting is late, a second
connection tries a TLS handshake; when that succeeds the port speaks implicit TLS and the answer
is a precise TLS_MODE_MISMATCH instead of a vague TIMEOUT, and it comes early.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from jobs import net
from jobs.destinations import DestinationPolicy
from jobs.errors import CheckError, Reason, check_error
from jobs.steps import Step
from jobs.tls import probe_context

T = TypeVar("T")

# Real servers greet within milliseconds; this much silence is worth a look.
PROBE_AFTER_S = 1.0


async def speaks_implicit_tls(
    addresses: Sequence[net.AddrInfo], host: str, where: str, policy: DestinationPolicy
) -> bool:
    try:
        # A second connection, judged by the same policy as the first.
        sock = await net.connect(addresses, where, policy)
    except Exception:  # noqa: BLE001 - a probe that cannot connect learned nothing
        return False
    try:
        _, writer = await asyncio.open_connection(sock=sock, ssl=probe_context(), server_hostname=host)
    except BaseException as exc:
        sock.close()  # cancellation included: a probe must not leave a socket behind
        if isinstance(exc, Exception):
            return False
        raise
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    return True


# How long a fresh, silent connection is watched for the server hanging up on it.
HANG_UP_WATCH_S = 1.0


async def closes_unasked(
    addresses: Sequence[net.AddrInfo], where: str, policy: DestinationPolicy, watch_s: float = HANG_UP_WATCH_S
) -> bool:
    """Whether the server closes a fresh connection on which nothing is sent, without a byte.

    On an implicit-TLS port the client speaks first, so a TLS server waits; one that hangs up
    unasked is not serving TLS at all (a proxy or load balancer whose service is down).
    """
    try:
        sock = await net.connect(addresses, where, policy)
    except Exception:  # noqa: BLE001 - a probe that cannot connect learned nothing
        return False
    try:
        async with asyncio.timeout(watch_s):
            return await asyncio.get_running_loop().sock_recv(sock, 1) == b""
    except ConnectionError:
        return True
    except (TimeoutError, OSError):
        return False
    finally:
        sock.close()


async def settle_tls_drop(
    error: CheckError, addresses: Sequence[net.AddrInfo], where: str, policy: DestinationPolicy
) -> CheckError:
    """`error`, unless it is a peer hanging up on the implicit-TLS handshake (CONNECTION_CLOSED,
    protocol_run.transport_error) by a server that waits on a silent connection: that one
    serves TLS and dropped this handshake (a client certificate demanded, nothing shared)."""
    if error.reason is not Reason.CONNECTION_CLOSED or error.step is not Step.TLS:
        return error
    if await closes_unasked(addresses, where, policy):
        return error
    return check_error(
        Reason.TLS_HANDSHAKE_FAILED, f"{where} dropped the connection during the TLS handshake", step=Step.TLS
    )


async def greeting_or_mismatch(
    greeting: Coroutine[Any, Any, T],
    addresses: Sequence[net.AddrInfo],
    host: str,
    where: str,
    policy: DestinationPolicy,
) -> T:
    """Await `greeting`; if it is late and the port turns out to speak implicit TLS, fail fast."""
    task = asyncio.create_task(greeting)
    probe: asyncio.Task[bool] | None = None
    try:
        done, _ = await asyncio.wait({task}, timeout=PROBE_AFTER_S)
        if task in done:
            return task.result()
        probe = asyncio.create_task(speaks_implicit_tls(addresses, host, where, policy))
        waiting: set[asyncio.Task[Any]] = {task, probe}
        while not task.done():
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if probe in done:
                if probe.result():
                    raise check_error(
                        Reason.TLS_MODE_MISMATCH,
                        f"{where} expects implicit TLS from the first byte; use SSL mode, not "
                        "STARTTLS or plain",
                    )
                waiting.discard(probe)
        return task.result()
    finally:
        # Cancel without awaiting: awaiting here could swallow our own cancellation by a deadline.
        for pending in (task, probe):
            if pending is not None:
                pending.cancel()
