"""arq's job and result (de)serialisers: JSON, never pickle.

pickle would let anyone who can write to Redis run code on every worker. The worker's job
deserialiser also never fails: whatever bytes sit under a job key, it hands arq a well-formed
envelope. An unusable one is routed to the job function with `unreadable` set, so it ends in a
rejected event instead of an arq failure that no consumer ever sees.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from jobs.errors import InboxcheckError

# The function name producers put in the envelope ("f"): the only one the worker runs.
FUNCTION_NAME = "validate_inbox"
# arq's cron enqueues its tick as a job too (no arguments): the recheck scheduler (worker.rechecks.hooks).
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


def job_bytes(job_payload: dict[str, Any], enqueue_time_ms: int) -> bytes:
    """The bytes under arq:job:<id>: arq's job envelope, in JSON."""
    return serialize({"t": None, "f": FUNCTION_NAME, "a": [job_payload], "k": {}, "et": enqueue_time_ms})


class ResultError(InboxcheckError, ValueError):
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


# Bits of the raw bytes' hash that stand in for a missing enqueue time: a date before 2005,
# well inside what datetime (and so arq's ms_to_datetime) accepts.
_STAND_IN_ET_BITS = 40


def _stable_et(raw: bytes, data: Any) -> int:
    """The job's enqueue time as far as it can be read, else one derived from its bytes.

    The event id and the done key come from it (worker.runtime.job), so it must be the same every
    time this job is read: a rerun after a crash then finds its event instead of adding one.
    """
    if isinstance(data, dict) and type(data.get("et")) is int and data["et"] >= 0:
        return data["et"]
    digest = hashlib.sha256(raw).digest()
    return int.from_bytes(digest, "big") >> (len(digest) * 8 - _STAND_IN_ET_BITS)


def _unreadable(why: str, raw: bytes, data: Any = None, job_try: int | None = None) -> dict[str, Any]:
    return {
        "f": FUNCTION_NAME,
        "a": [None],
        "k": {"unreadable": why},
        "t": job_try,
        "et": _stable_et(raw, data),
    }


def deserialize_job(raw: bytes) -> dict[str, Any]:
    """For the worker: a valid envelope, or one that routes to the rejection path."""
    if len(raw) > MAX_JOB_BYTES:
        return _unreadable(f"the job is {len(raw)} bytes, more than the {MAX_JOB_BYTES} allowed", raw)
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return _unreadable("the job is not JSON", raw)
    if not isinstance(data, dict):
        return _unreadable("the job envelope is not a JSON object", raw)
    job_try = data.get("t")
    if job_try is not None and (type(job_try) is not int or job_try < 1):
        return _unreadable("the job envelope's t (try) is not a positive integer", raw, data)
    if (
        data.get("f") == RECHECK_CRON_FUNCTION
        and data.get("a") == []
        and data.get("k", {}) == {}
        and type(data.get("et")) is int
    ):
        return {"f": RECHECK_CRON_FUNCTION, "a": [], "k": {}, "t": job_try, "et": data["et"]}
    if data.get("f") != FUNCTION_NAME:
        return _unreadable(f"the job envelope's f (function) is not {FUNCTION_NAME!r}", raw, data, job_try)
    args, kwargs, enqueued = data.get("a"), data.get("k", {}), data.get("et")
    if not isinstance(args, list) or len(args) != 1 or kwargs != {}:
        return _unreadable("the job envelope's a must be [payload] and k must be {}", raw, data, job_try)
    if type(enqueued) is not int or enqueued < 0:
        return _unreadable("the job envelope's et (enqueue time, ms) is not an integer", raw, data, job_try)
    return {"f": FUNCTION_NAME, "a": args, "k": {}, "t": job_try, "et": enqueued}
