"""The job lifecycle, in one place: claim, heartbeat, settle, backoff, and the sweep.

``run_job`` is what a queue calls with a job id, any number of times: it claims the job (or
leaves it to whoever holds it, or to no one once finished), keeps its heartbeat while the
pipeline (``app.consolidate.pipeline``) works, and settles it as SUCCEEDED or FAILED, or hands
it back as PENDING with a delay after a transient failure (``TransientJobError``; the queue
re-delivers it).

``sweep`` is the periodic upkeep whichever process runs the queue does: jobs that went quiet
are handed back to the queue, graph extractions left unapplied are applied, and the search
index's change log is pruned.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from datetime import timedelta

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from app.backoff import backoff_delay
from app.consolidate import replay
from app.consolidate.pipeline import Ledger, LostLease, consolidate_episode
from app.errors import LLMError, LLMUnavailable
from app.index.maintenance import prune_change_log
from app.logs import job_context
from app.resources import Resources
from app.store.db import Database
from app.store.models import Job
from app.store.repositories import idempotency, jobs

logger = logging.getLogger(__name__)

Enqueue = Callable[[Sequence[uuid.UUID]], Awaitable[None]]


class TransientJobError(Exception):
    """The job failed for a reason that may pass (LLM 5xx or timeout, a dropped database
    connection); it is PENDING again and should be re-delivered after ``delay_s``."""

    def __init__(self, message: str, delay_s: float) -> None:
        super().__init__(message)
        self.delay_s = delay_s


async def run_job(resources: Resources, job_id: uuid.UUID) -> str | None:
    """Runs the job if it can be claimed; returns its final status, or None when it was not
    this call's to run (finished already, or running elsewhere). Lines logged meanwhile carry
    the job's id (``app.logs``)."""
    with job_context(str(job_id)):
        return await _run_job(resources, job_id)


async def _run_job(resources: Resources, job_id: uuid.UUID) -> str | None:
    config = resources.settings.consolidation
    database = resources.database
    async with database.session_scope() as session:
        job = await jobs.claim(session, job_id, timedelta(seconds=config.lease_s))
    if job is None:
        return None
    ledger = Ledger()
    async with _heartbeat(database, job_id, config.lease_s / 4):
        try:
            await consolidate_episode(resources, job, ledger)
        except LostLease:
            logger.warning("job %s was taken over by another run; dropping this one", job_id)
            return None
        except Exception as exc:
            if isinstance(exc, LLMError):
                ledger.record_failure(exc)
            return await _settle_failure(resources, job, ledger, exc)
    return jobs.SUCCEEDED


async def sweep(resources: Resources, enqueue: Enqueue) -> list[uuid.UUID]:
    """Hands jobs that went quiet back to the queue: PENDING too long (their message was
    lost) or RUNNING with a stale heartbeat (their worker died). Returns their ids. Then
    applies graph extractions whose projection failed, and prunes the change log and the
    stored answers of idempotent requests past their retry window."""
    database, config = resources.database, resources.settings.consolidation
    async with database.session_scope() as session:
        stale = list(await jobs.stale(
            session, pending_for=timedelta(seconds=config.pending_grace_s),
            lease=timedelta(seconds=config.lease_s), limit=500))
    if stale:
        logger.warning("re-enqueueing %d job(s) that went quiet", len(stale))
        await enqueue(stale)
    await replay.reapply_unapplied(database, resources.graph, resources.embedder,
                                   grace=timedelta(seconds=config.lease_s))
    await prune_change_log(database, resources.settings.search)
    async with database.session_scope() as session:
        await idempotency.prune(session, timedelta(hours=resources.settings.api.idempotency_hours))
    return stale


def is_transient(error: BaseException) -> bool:
    if isinstance(error, LLMUnavailable):
        return True
    if isinstance(error, DBAPIError):
        return error.connection_invalidated or isinstance(error, OperationalError | InterfaceError)
    return isinstance(error, PoolTimeout | ConnectionError | TimeoutError | OSError)


def retry_delay(attempt: int, base_s: float, cap_s: float, asked_s: float | None) -> float:
    """The backoff before re-running a job; never sooner than the endpoint asked."""
    return max(backoff_delay(attempt, base_s, cap_s), asked_s or 0.0)


async def _settle_failure(resources: Resources, job: Job, ledger: Ledger,
                          error: Exception) -> str:
    config = resources.settings.consolidation
    code = getattr(error, "code", None) or "internal_error"
    # An unexpected error's text can hold anything (paths, SQL, addresses): the log has it,
    # the tenant gets its kind.
    detail = (f"internal error ({type(error).__name__}); the server log has the details"
              if code == "internal_error" else str(error))
    transient = is_transient(error)
    final = job.attempts > config.max_retries
    if transient and not final:
        delay = retry_delay(job.attempts, config.retry_backoff_s, config.retry_backoff_max_s,
                            getattr(error, "retry_after_s", None))
        logger.warning("job %s attempt %d failed (%s); retrying in %.1f s", job.id,
                       job.attempts, detail, delay)
        async with resources.database.session_scope() as session:
            await ledger.charge(session, job)
            await jobs.release(session, job.id, code, detail[:2000],
                               retry_in=timedelta(seconds=delay))
        raise TransientJobError(detail, delay) from error
    if transient:
        detail = f"gave up after {job.attempts} attempts: {detail}"
    if code == "internal_error":
        logger.error("job %s failed", job.id, exc_info=error)
    else:
        logger.warning("job %s failed: %s", job.id, detail)
    async with resources.database.session_scope() as session:
        await ledger.charge(session, job)
        await jobs.fail(session, job.id, code, detail[:2000])
    return jobs.FAILED


@asynccontextmanager
async def _heartbeat(database: Database, job_id: uuid.UUID,
                     interval_s: float) -> AsyncIterator[None]:
    async def beat() -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                async with database.session_scope() as session:
                    await jobs.heartbeat(session, job_id)
            except Exception as exc:  # a missed beat is survivable; the lease has slack
                logger.warning("job %s heartbeat failed: %s", job_id, exc)

    task = asyncio.create_task(beat(), name=f"heartbeat-{job_id}")
    try:
        yield
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
