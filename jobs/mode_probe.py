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
from jobs.errors import Reason, check_error
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
