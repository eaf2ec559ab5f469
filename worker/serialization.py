"""arq's job and result (de)serialisers: JSON, never pickle.

pickle would let anyone who can write to Redis run code on every worker. The worker's job
deserialiser also never fails: whatever bytes sit under a job key, it hands arq a well-formed
envelope. An unusable one is routed to the job function with `unreadable` set, so it ends in a
rejected event instead of an arq failure that no consumer ever sees.
"""

from __future__ import annotations

import json
import time
from typing import Any

from worker.units import MS_PER_S

# The function name producers put in the envelope ("f"): the only one the worker runs.
FUNCTION_NAME = "validate_inbox"
# arq's cron enqueues its tick as a job too (no arguments): the recheck scheduler (worker.recheck).
RECHECK_CRON_FUNCTION = "enqueue_due_rechecks"
# A job is a request of a few hundred bytes; anything far bigger is hostile or a mistake, and
# parsing it would cost the worker memory and time.
MAX_JOB_BYTES = 64 * 1024


def _unserialisable(value: Any) -> str:
    # Results on failure carry exceptions; their type is enough and their text may hold input.
    return f"<{type(value).__name__}>"


def serialize(data: dict[str, Any]) -> bytes:
    """Jobs and results to JSON. Results drop the job's arguments: the event says it all, and
    the arguments hold the (sealed or, in development, plaintext) credentials."""
    if "s" in data and "r" in data:
        data = {**data, "a": [], "k": {}}
    return json.dumps(data, separators=(",", ":"), default=_unserialisable).encode()


class ResultError(ValueError):
    """A job result in Redis that is not one this project wrote."""


def deserialize_result(raw: bytes) -> dict[str, Any]:
    """For clients reading results: plain JSON."""
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        raise ResultError("a job result in Redis is not JSON") from None
    if not isinstance(value, dict):
        raise ResultError("a job result in Redis is not a JSON object")
    return value


def _unreadable(why: str, job_try: int | None = None) -> dict[str, Any]:
    return {"f": FUNCTION_NAME, "a": [None], "k": {"unreadable": why}, "t": job_try,
            "et": int(time.time() * MS_PER_S)}


def deserialize_job(raw: bytes) -> dict[str, Any]:
    """For the worker: a valid envelope, or one that routes to the rejection path."""
    if len(raw) > MAX_JOB_BYTES:
        return _unreadable(f"the job is {len(raw)} bytes, more than the {MAX_JOB_BYTES} allowed")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return _unreadable("the job is not JSON")
    if not isinstance(data, dict):
        return _unreadable("the job envelope is not a JSON object")
    job_try = data.get("t")
    if job_try is not None and (type(job_try) is not int or job_try < 1):
        return _unreadable("the job envelope's t (try) is not a positive integer")
    if (data.get("f") == RECHECK_CRON_FUNCTION and data.get("a") == [] and data.get("k", {}) == {}
            and type(data.get("et")) is int):
        return {"f": RECHECK_CRON_FUNCTION, "a": [], "k": {}, "t": job_try, "et": data["et"]}
    if data.get("f") != FUNCTION_NAME:
        return _unreadable(f"the job envelope's f (function) is not {FUNCTION_NAME!r}", job_try)
    args, kwargs, enqueued = data.get("a"), data.get("k", {}), data.get("et")
    if not isinstance(args, list) or len(args) != 1 or kwargs != {}:
        return _unreadable("the job envelope's a must be [payload] and k must be {}", job_try)
    if type(enqueued) is not int or enqueued < 0:
        return _unreadable("the job envelope's et (enqueue time, ms) is not an integer", job_try)
    return {"f": FUNCTION_NAME, "a": args, "k": {}, "t": job_try, "et": enqueued}
