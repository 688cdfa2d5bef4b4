"""Consolidation jobs and the per-scope lock (SQL only).

A job moves PENDING → RUNNING → SUCCEEDED | FAILED. ``claim`` is the only way into
RUNNING and succeeds for one caller at a time: a PENDING job, or a RUNNING one whose
heartbeat went quiet (its worker died). That is what makes a job safe to deliver twice.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.domain import Scope
from app.store.ids import uuid7
from app.store.models import Job

PENDING, RUNNING, SUCCEEDED, FAILED = "PENDING", "RUNNING", "SUCCEEDED", "FAILED"
FINISHED = (SUCCEEDED, FAILED)


async def add(session: AsyncSession, project_id: uuid.UUID, episode_id: uuid.UUID) -> Job:
    job = Job(id=uuid7(), project_id=project_id, episode_id=episode_id, status=PENDING,
              attempts=0, llm_calls=0, prompt_tokens=0, completion_tokens=0,
              truncated_replies=0)
    session.add(job)
    await session.flush()
    await session.refresh(job)
    return job


async def get(session: AsyncSession, project_id: uuid.UUID, job_id: uuid.UUID) -> Job | None:
    query = sa.select(Job).where(Job.id == job_id, Job.project_id == project_id)
    return (await session.execute(query)).scalar_one_or_none()


async def page(session: AsyncSession, project_id: uuid.UUID, status: str | None, limit: int,
               before: uuid.UUID | None) -> Sequence[Job]:
    """The project's jobs, newest first (ids are time-ordered: ``before``, the last id seen,
    is the cursor), only those of ``status`` when given."""
    query = sa.select(Job).where(Job.project_id == project_id)
    if status is not None:
        query = query.where(Job.status == status)
    if before is not None:
        query = query.where(Job.id < before)
    return (await session.scalars(query.order_by(Job.id.desc()).limit(limit))).all()


async def claim(session: AsyncSession, job_id: uuid.UUID, lease: timedelta) -> Job | None:
    """RUNNING, attempt counted, heartbeat now; None when the job is finished or another
    worker holds a live lease on it."""
    now = sa.func.now()
    statement = (
        sa.update(Job)
        .where(Job.id == job_id,
               sa.or_(Job.status == PENDING,
                      sa.and_(Job.status == RUNNING, Job.heartbeat_at < now - lease)))
        .values(status=RUNNING, attempts=Job.attempts + 1, heartbeat_at=now,
                started_at=sa.func.coalesce(Job.started_at, now), error=None, error_code=None)
        .returning(Job)
        .execution_options(synchronize_session=False)
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def heartbeat(session: AsyncSession, job_id: uuid.UUID) -> None:
    await session.execute(sa.update(Job).where(Job.id == job_id, Job.status == RUNNING)
                          .values(heartbeat_at=sa.func.now()))


async def add_usage(session: AsyncSession, job_id: uuid.UUID, *, model: str | None,
                    calls: int, prompt_tokens: int, completion_tokens: int,
                    truncated: int = 0) -> None:
    """Counts LLM spending on the job, failed attempts included."""
    values: dict[Any, Any] = {
        Job.llm_calls: Job.llm_calls + calls,
        Job.truncated_replies: Job.truncated_replies + truncated,
        Job.prompt_tokens: Job.prompt_tokens + prompt_tokens,
        Job.completion_tokens: Job.completion_tokens + completion_tokens,
    }
    if model is not None:
        values[Job.model] = model
    await session.execute(sa.update(Job).where(Job.id == job_id).values(values))


async def succeed(session: AsyncSession, job_id: uuid.UUID,
                  results: list[dict[str, Any]]) -> None:
    await session.execute(sa.update(Job).where(Job.id == job_id).values(
        status=SUCCEEDED, results=results, error=None, error_code=None,
        completed_at=sa.func.now()))


async def record_results(session: AsyncSession, job_id: uuid.UUID,
                         results: list[dict[str, Any]]) -> None:
    """What the job wrote, shown while it still runs (its facts are searchable; the graph
    step follows)."""
    await session.execute(sa.update(Job).where(Job.id == job_id).values(results=results))


async def fail(session: AsyncSession, job_id: uuid.UUID, code: str, error: str) -> None:
    await session.execute(sa.update(Job).where(Job.id == job_id).values(
        status=FAILED, error_code=code, error=error, completed_at=sa.func.now()))


async def release(session: AsyncSession, job_id: uuid.UUID, code: str, error: str, *,
                  retry_in: timedelta) -> None:
    """Back to PENDING after a transient failure; the error stays visible until the retry.
    The sweeper leaves it alone until ``retry_in`` has passed."""
    await session.execute(sa.update(Job).where(Job.id == job_id, Job.status == RUNNING).values(
        status=PENDING, error_code=code, error=error, heartbeat_at=None,
        enqueued_at=sa.func.now() + retry_in))


async def still_ours(session: AsyncSession, job: Job) -> bool:
    """Whether the claim that produced ``job`` still holds (locks the row until commit): no
    other run has claimed the job since, and it is not finished."""
    query = (sa.select(Job.status, Job.attempts).where(Job.id == job.id).with_for_update())
    row = (await session.execute(query)).one_or_none()
    return row is not None and row.status == RUNNING and row.attempts == job.attempts


async def reset_failed(session: AsyncSession, project_id: uuid.UUID,
                       job_id: uuid.UUID) -> Job | None:
    """A FAILED job back to PENDING (the retry endpoint); None unless it was FAILED."""
    statement = (
        sa.update(Job)
        .where(Job.id == job_id, Job.project_id == project_id, Job.status == FAILED)
        .values(status=PENDING, attempts=0, error=None, error_code=None, results=None,
                started_at=None, heartbeat_at=None, completed_at=None,
                enqueued_at=sa.func.now())
        .returning(Job)
        .execution_options(synchronize_session=False)
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def stale(session: AsyncSession, *, pending_for: timedelta, lease: timedelta,
                limit: int) -> Sequence[uuid.UUID]:
    """Jobs to hand to the queue again: PENDING since longer than ``pending_for`` (their
    message was lost, or never sent), or RUNNING with a heartbeat older than ``lease`` (their
    worker died). Marks them re-enqueued now, so concurrent sweepers do not both take them."""
    now = sa.func.now()
    candidates = (
        sa.select(Job.id)
        .where(sa.or_(sa.and_(Job.status == PENDING, Job.enqueued_at < now - pending_for),
                      sa.and_(Job.status == RUNNING, Job.heartbeat_at < now - lease)))
        .order_by(Job.enqueued_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    statement = (sa.update(Job).where(Job.id.in_(candidates)).values(enqueued_at=now)
                 .returning(Job.id).execution_options(synchronize_session=False))
    return (await session.scalars(statement)).all()


def scope_lock_key(project_id: uuid.UUID, scope: Scope) -> str:
    # Hashed to 64 bits by Postgres: a collision (or an id containing the separator) only
    # serialises two scopes that could have run side by side, it never mixes their data.
    return "\x1f".join((str(project_id), scope.user_id or "", scope.agent_id or "",
                        scope.run_id or ""))


@asynccontextmanager
async def scope_lock(engine: AsyncEngine, project_id: uuid.UUID,
                     scope: Scope) -> AsyncIterator[None]:
    """Holds the scope's consolidation lock until the block ends: a transaction-level
    advisory lock on a connection of its own, so it is released when the block ends, when
    the transaction rolls back, or when the process dies and Postgres drops its session."""
    key = sa.func.hashtextextended(scope_lock_key(project_id, scope), 0)
    async with engine.connect() as connection, connection.begin():
        await connection.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))
        yield


@dataclass(frozen=True)
class JobTotals:
    """Every project's jobs together, for ``/metrics``: how many per status, and what their
    LLM calls cost."""

    by_status: dict[str, int]
    llm_calls: int
    prompt_tokens: int
    completion_tokens: int
    truncated_replies: int
    llm_failures: int  # failed jobs whose error came from the LLM


async def totals(session: AsyncSession) -> JobTotals:
    query = sa.select(
        Job.status, sa.func.count(), sa.func.coalesce(sa.func.sum(Job.llm_calls), 0),
        sa.func.coalesce(sa.func.sum(Job.prompt_tokens), 0),
        sa.func.coalesce(sa.func.sum(Job.completion_tokens), 0),
        sa.func.coalesce(sa.func.sum(Job.truncated_replies), 0),
        sa.func.count().filter(Job.error_code.like("llm\\_%")),
    ).group_by(Job.status)
    rows = (await session.execute(query)).all()
    by_status = {status: 0 for status in (PENDING, RUNNING, SUCCEEDED, FAILED)}
    by_status |= {status: int(count) for status, count, *_ in rows}
    sums = [sum(int(row[i]) for row in rows) for i in range(2, 7)]
    return JobTotals(by_status, *sums)


async def tokens_since(session: AsyncSession, project_id: uuid.UUID,
                       within: timedelta) -> tuple[int, datetime | None]:
    """LLM tokens the project's jobs created in the last ``within`` spent, and when the
    oldest of those jobs was created."""
    row = (await session.execute(sa.select(
        sa.func.coalesce(sa.func.sum(Job.prompt_tokens + Job.completion_tokens), 0),
        sa.func.min(Job.created_at),
    ).where(Job.project_id == project_id,
            Job.created_at > sa.func.now() - within))).one()
    return int(row[0]), row[1]
