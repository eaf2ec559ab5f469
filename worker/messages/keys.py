"""Every Redis key name inboxcheck reads or writes, in one place (as arq does in arq.constants).

arq's own prefixes are fixed by arq (not per queue); they are repeated here so producers in
other languages, the tests' credential scan and the README all have a single source.
"""

from __future__ import annotations

from arq.constants import (
    health_check_key_suffix,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
)

# arq: the job envelope (JSON), the run lock, the try counter, the kept result.
JOB_KEY_PREFIX = job_key_prefix  # "arq:job:<job_id>"   string, JSON envelope
IN_PROGRESS_KEY_PREFIX = in_progress_key_prefix  # "arq:in-progress:<job_id>"
RESULT_KEY_PREFIX = result_key_prefix  # "arq:result:<job_id>" JSON, holds the event
# The queue itself is a sorted set named by settings.queue_name: member job_id, score = run-at ms.

# inboxcheck: marks that a job's terminal event is on the stream, holding that event.
DONE_KEY_PREFIX = "inboxcheck:done:"
ATTEMPTS_KEY_PREFIX = "inboxcheck:attempts:"


def job_key(job_id: str) -> str:
    return JOB_KEY_PREFIX + job_id


def result_key(job_id: str) -> str:
    return RESULT_KEY_PREFIX + job_id


def in_progress_key(job_id: str) -> str:
    return IN_PROGRESS_KEY_PREFIX + job_id


def done_key(job_id: str, enqueue_time_ms: int) -> str:
    # The enqueue time is part of the name: one enqueueing of a job id gets one event, and a
    # later enqueueing of the same id (after the freshness window) gets its own.
    return f"{DONE_KEY_PREFIX}{job_id}:{enqueue_time_ms}"


def attempts_key(event_id: str) -> str:
    # Counts the checks one enqueueing of a job has really started (pacing waits excluded).
    return f"{ATTEMPTS_KEY_PREFIX}{event_id}"


def health_check_key(queue_name: str) -> str:
    return queue_name + health_check_key_suffix


# A list per queue holding at most one token: a producer pushes it with each job, and an idle
# worker blocks on it (BLPOP) instead of sleeping between polls, so a new job starts at once.
WAKE_KEY_SUFFIX = ":wake"


def wake_key(queue_name: str) -> str:
    return queue_name + WAKE_KEY_SUFFIX


# Liveness of one worker process (arq's health key above is one per queue, kept by any worker):
# string, the queue it serves, rewritten with arq's health record, expiring when that stops.
WORKER_ALIVE_PREFIX = "inboxcheck:worker:"


def worker_alive_key(hostname: str, pid: int) -> str:
    return f"{WORKER_ALIVE_PREFIX}{hostname}:{pid}"


def worker_alive_pattern(hostname: str) -> str:
    """SCAN pattern for every worker process on `hostname` (glob characters escaped)."""
    escaped = "".join("\\" + c if c in "*?[]\\" else c for c in hostname)
    return f"{WORKER_ALIVE_PREFIX}{escaped}:*"


# Rechecks (worker.rechecks.registry, worker.rechecks.pacing): registered inboxes, their schedule and pacing.
INBOX_KEY_PREFIX = "inboxcheck:inbox:"  # hash per registered inbox: sealed payload + health
INBOXES_DUE_KEY = "inboxcheck:inboxes:due"  # sorted set: inbox_id, score = next check (ms)
# hash: health -> how many registered inboxes have it, changed in the same transaction as an
# inbox's health (register, a recheck's verdict, unregister), so the metrics read four numbers.
INBOXES_COUNTS_KEY = "inboxcheck:inboxes:counts"
PACING_SLOTS_PREFIX = "inboxcheck:pace:slots:"  # sorted set per host: lease, score = expiry ms
PACING_BACKOFF_PREFIX = "inboxcheck:pace:backoff:"  # string per host while it is paused
INBOX_LOCK_PREFIX = "inboxcheck:lock:inbox:"  # string: the one check running for an inbox
INBOX_BACKOFF_PREFIX = "inboxcheck:pace:inbox-backoff:"  # string per inbox while it is paused
RECHECK_JOB_PREFIX = "recheck:"  # job ids of scheduled rechecks (arq:job:recheck:...)


def inbox_key(inbox_id: str) -> str:
    return INBOX_KEY_PREFIX + inbox_id


def pacing_slots_key(host: str) -> str:
    return PACING_SLOTS_PREFIX + host


def pacing_backoff_key(host: str) -> str:
    return PACING_BACKOFF_PREFIX + host


def inbox_lock_key(inbox_id: str) -> str:
    return INBOX_LOCK_PREFIX + inbox_id


def inbox_backoff_key(inbox_id: str) -> str:
    return INBOX_BACKOFF_PREFIX + inbox_id


# OAuth2 (worker.runtime.token_cache): per inbox and app, a cache id (a hash of the inbox id and the
# request's destination digest, so no address appears in a key name); a kept token also per
# credentials (a keyed digest of the grant's secrets, never the secrets or a plain hash of them).
# string: the access token, sealed; expires with it. <cache id>:<credentials digest>
OAUTH2_TOKEN_PREFIX = "inboxcheck:oauth2:token:"
OAUTH2_LOCK_PREFIX = "inboxcheck:oauth2:lock:"  # string: the one refresh running for an inbox and app
# Per event: a refresh token the provider rotated during a one-off job, sealed, until its event.
OAUTH2_ROTATED_PREFIX = "inboxcheck:oauth2:rotated:"


def oauth2_token_key(cache_id: str, credentials: str) -> str:
    return f"{OAUTH2_TOKEN_PREFIX}{cache_id}:{credentials}"


def oauth2_lock_key(cache_id: str) -> str:
    return OAUTH2_LOCK_PREFIX + cache_id


def oauth2_rotated_key(event_id: str) -> str:
    return OAUTH2_ROTATED_PREFIX + event_id


# Webhooks (worker.webhooks): endpoints, the deliveries in progress, dead letters.
WEBHOOK_ENDPOINTS_KEY = "inboxcheck:webhooks:endpoints"  # set: endpoint ids
WEBHOOK_ENDPOINT_PREFIX = "inboxcheck:webhook:endpoint:"  # hash per endpoint: url, events, sealed secret
WEBHOOK_DUE_PREFIX = "inboxcheck:webhook:due:"  # sorted set per endpoint: delivery ref, score = due ms
# hash per event in delivery (ref: its stream entry id, or replay:<n>): the body, the entry to
# acknowledge, when it started, how many endpoints still owe it, and each one's attempts.
WEBHOOK_DELIVERY_PREFIX = "inboxcheck:webhook:delivery:"
WEBHOOK_DEAD_KEY = "inboxcheck:webhooks:dead"  # list: JSON dead letters, newest first


def webhook_endpoint_key(endpoint_id: str) -> str:
    return WEBHOOK_ENDPOINT_PREFIX + endpoint_id


def webhook_due_key(endpoint_id: str) -> str:
    return WEBHOOK_DUE_PREFIX + endpoint_id


def webhook_delivery_key(ref: str) -> str:
    return WEBHOOK_DELIVERY_PREFIX + ref
