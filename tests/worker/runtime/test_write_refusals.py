"""Which Redis errors are a refusal to write (pure logic; the real refusals are in
test_redis_faults.py, against a redis-server at maxmemory and a read-only replica)."""

from __future__ import annotations

import pytest
from redis.exceptions import ConnectionError, OutOfMemoryError, ReadOnlyError, RedisError, ResponseError

from worker.runtime.write_refusals import refusal


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (OutOfMemoryError("command not allowed when used memory > 'maxmemory'."), "OOM"),
        (ReadOnlyError("You can't write against a read only replica."), "READONLY"),
        (
            ResponseError("MISCONF Redis is configured to save RDB snapshots, but it's currently unable"),
            "MISCONF",
        ),
        (ResponseError("NOREPLICAS Not enough good replicas to write."), "NOREPLICAS"),
        (ResponseError("Error running script (call to f_1): @user_script:7: OOM command not allowed"), "OOM"),
        (ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"), None),
        (ConnectionError("Connection closed by server."), None),
    ],
    ids=["oom", "read-only", "misconf", "noreplicas", "oom-in-a-script", "wrong-type", "connection"],
)
def test_a_refusal_is_told_from_other_redis_errors(error: RedisError, code: str | None) -> None:
    assert refusal(error) == code
