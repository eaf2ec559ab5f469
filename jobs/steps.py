"""Per-step time limits and timings for one protocol check."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from jobs.errors import CheckError, Reason, check_error
from jobs.result import StepTiming

# What a silence at each step most likely means; any other step is a server gone quiet.
TIMEOUT_REASONS: dict[str, Reason] = {
    "dns": Reason.DNS_UNAVAILABLE,
    "connect": Reason.CONNECT_TIMEOUT,
    "greeting": Reason.NO_GREETING,
    "tls": Reason.TLS_HANDSHAKE_TIMEOUT,
    "starttls": Reason.TLS_HANDSHAKE_TIMEOUT,
}

Translator = Callable[[BaseException, str], CheckError | None]


class StepLog:
    """Runs each step under its own time limit, records how long it took, and turns whatever a
    library raised into a CheckError that names the step."""

    def __init__(self, step_timeout: float, translate: Translator) -> None:
        self.step_timeout = step_timeout
        self.translate = translate
        self.timings: list[StepTiming] = []
        self.current: str | None = None

    @asynccontextmanager
    async def step(self, name: str, timeout: float | None = None) -> AsyncIterator[None]:
        self.current = name
        started = time.perf_counter()
        ok = False
        limit = self.step_timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(limit):
                yield
            ok = True
        except CheckError as exc:
            exc.step = exc.step or name
            raise
        except Exception as exc:
            error = self.translate(exc, name)
            if error is None and isinstance(exc, TimeoutError):
                error = check_error(
                    TIMEOUT_REASONS.get(name, Reason.RESPONSE_TIMEOUT),
                    f"no answer within {limit:g}s during {name}",
                )
            if error is None:
                raise
            error.step = name
            # Not chained: a library's error text may quote what was sent, credentials included.
            raise error from None
        finally:
            elapsed_ms = round((time.perf_counter() - started) * 1000, 2)
            self.timings.append(StepTiming(step=name, ms=elapsed_ms, ok=ok))
