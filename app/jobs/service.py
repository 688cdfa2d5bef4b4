"""Job status, retry and waiting; enqueueing happens after the caller's commit."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import Caller
from app.errors import Conflict, NotFound
from app.jobs.queue import JobQueue
from app.store.db import Database, after_commit
from app.store.models import Job
from app.store.repositories import jobs as repository

FINISHED = repository.FINISHED


def enqueue_after_commit(session: AsyncSession, queue: JobQueue, job_id: uuid.UUID) -> None:
    async def send() -> None:
        await queue.enqueue([job_id])

    after_commit(session, send)


async def get(session: AsyncSession, caller: Caller, job_id: uuid.UUID) -> Job:
    job = await repository.get(session, caller.project_id, job_id)
    if job is None:
        raise NotFound(f"job {job_id} not found")
    return job


async def recent(session: AsyncSession, caller: Caller, status: str | None, limit: int,
                 cursor: uuid.UUID | None) -> tuple[Sequence[Job], uuid.UUID | None]:
    """A page of the project's jobs, newest first, and the cursor of the next (None at the
    end)."""
    rows = await repository.page(session, caller.project_id, status, limit + 1, cursor)
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1].id
    return rows, None


async def retry(session: AsyncSession, queue: JobQueue, caller: Caller,
                job_id: uuid.UUID) -> Job:
    """A FAILED job runs again from its stored episode."""
    job = await repository.reset_failed(session, caller.project_id, job_id)
    if job is None:
        current = await get(session, caller, job_id)
        raise Conflict(f"job {job_id} is {current.status}; only FAILED jobs can be retried")
    enqueue_after_commit(session, queue, job.id)
    return job


async def wait(database: Database, caller: Caller, job_id: uuid.UUID,
               timeout_s: float) -> Job:
    """The job once it is SUCCEEDED or FAILED, or as it stands when ``timeout_s`` ran out.
    Each look is its own short transaction, so a waiting request holds no connection."""
    deadline = time.monotonic() + timeout_s
    pause = 0.02
    while True:
        async with database.session_scope() as session:
            job = await get(session, caller, job_id)
        remaining = deadline - time.monotonic()
        if job.status in FINISHED or remaining <= 0:
            return job
        await asyncio.sleep(min(pause, remaining))
        pause = min(pause * 1.5, 0.5)
