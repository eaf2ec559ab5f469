"""arq's job context as inboxcheck uses it: what arq puts in, and what the worker adds at start."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, TypedDict, cast

from arq.connections import ArqRedis

if TYPE_CHECKING:
    from worker.rechecks.hooks import RecheckState
    from worker.runtime.job import Runtime
    from worker.settings import Settings


class WorkerContext(TypedDict, total=False):
    # arq's own, per worker and per job
    redis: ArqRedis
    job_id: str
    job_try: int
    enqueue_time: datetime
    score: int
    # inboxcheck's: given to the worker (settings), built when it starts (runtime, rechecks)
    settings: Settings
    runtime: Runtime
    rechecks: RecheckState
    # InboxWorker's: job id -> its done mark, from the job's return (its event written or found)
    # to the worker's finish of it (InboxWorker.finish_job); absent under arq's own Worker.
    recorded: dict[str, str]


def as_context(ctx: dict[str, Any]) -> WorkerContext:
    """arq calls its hooks and jobs with a plain dict: the typed view of it, at the entry points."""
    return cast(WorkerContext, ctx)
