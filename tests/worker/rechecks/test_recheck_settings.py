"""The recheck tick as the README's settings table has it: a divisor of the minute, refused
otherwise with a message naming the variable."""

from __future__ import annotations

import os

from tests.worker.support import run_cli
from worker.settings import Settings


def test_a_tick_that_does_not_divide_the_minute_is_refused_naming_the_variable() -> None:
    env = {**os.environ, "INBOXCHECK_RECHECK_TICK": "7"}
    refused = run_cli("list", env=env)
    assert refused.returncode == 2
    assert "INBOXCHECK_RECHECK_TICK" in refused.stderr and "must divide 60" in refused.stderr
    assert "Traceback" not in refused.stderr
    for divisor in (1, 15, 60):  # these are taken: construction raises nothing
        Settings(recheck_tick=divisor)
