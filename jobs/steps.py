"""The steps of a protocol check, their time limits, and how long each took."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from jobs.errors import CheckError, Reason, check_error
from jobs.time_units import MS_PER_S


class Step(StrEnum):
    """A step of the SMTP or IMAP check (or the OAuth2 token fetch both share). The values are
    what results and events carry."""

    # OAuth2: fetching the access token, once per check, before either protocol
    TOKEN = "token"
    DNS = "dns"
    CONNECT = "connect"
    GREETING = "greeting"
    TLS = "tls"
    STARTTLS = "starttls"
    # SMTP
    EHLO = "ehlo"
    EHLO_TLS = "ehlo_tls"
    AUTH = "auth"
    QUIT = "quit"
    # IMAP
    LOGIN = "login"
    EXAMINE = "examine"
    LOGOUT = "logout"


# Next to Step rather than in jobs.result: jobs.result imports this module, so it cannot import back.
class StepTiming(BaseModel):
    model_config = ConfigDict(frozen=True)

    step: Step
    ms: float
    ok: bool


# What a silence at each step most likely means; any other step is a server gone quiet.
TIMEOUT_REASONS: dict[Step, Reason] = {
    Step.DNS: Reason.DNS_UNAVAILABLE,
    Step.CONNECT: Reason.CONNECT_TIMEOUT,
    Step.GREETING: Reason.NO_GREETING,
    Step.TLS: Reason.TLS_HANDSHAKE_TIMEOUT,
    Step.STARTTLS: Reason.TLS_HANDSHAKE_TIMEOUT,
}

Translator = Callable[[BaseException, Step], CheckError | None]


class StepLog:
    """Runs each step under its own time limit, records how long it took, and turns whatever a
    library raised into a CheckError that names the step."""

    def __init__(self, step_timeout: float, translate: Translator) -> None:
        self.step_timeout = step_timeout
        self.translate = translate
        self.timings: list[StepTiming] = []
        self.current: Step | None = None

    @asynccontextmanager
    # The limit is this step's own, applied below with asyncio.timeout and named in its error.
    async def step(self, name: Step, timeout: float | None = None) -> AsyncIterator[None]:  # noqa: ASYNC109
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
            elapsed_ms = round((time.perf_counter() - started) * MS_PER_S, 2)
            self.timings.append(StepTiming(step=name, ms=elapsed_ms, ok=ok))
