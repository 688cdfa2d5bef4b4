"""Stored answers to requests sent with an idempotency key (SQL only)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.store.models import IdempotencyRecord


async def claim(session: AsyncSession, project_id: uuid.UUID, key: str,
                request_hash: str) -> IdempotencyRecord | None:
    """Claims ``key`` for this transaction, or returns the record that already holds it.

    A concurrent request with the same key blocks on the unique key until this transaction
    ends, then sees the finished record: retries never run twice.
    """
    inserted = await session.execute(
        insert(IdempotencyRecord)
        .values(project_id=project_id, key=key, request_hash=request_hash)
        .on_conflict_do_nothing(index_elements=["project_id", "key"])
        .returning(IdempotencyRecord.key)
    )
    if inserted.first() is not None:
        return None
    return (await session.execute(sa.select(IdempotencyRecord).where(
        IdempotencyRecord.project_id == project_id, IdempotencyRecord.key == key
    ))).scalar_one()


async def complete(session: AsyncSession, project_id: uuid.UUID, key: str, status_code: int,
                   response: dict[str, Any]) -> None:
    await session.execute(
        sa.update(IdempotencyRecord)
        .where(IdempotencyRecord.project_id == project_id, IdempotencyRecord.key == key)
        .values(status_code=status_code, response=response)
    )


async def prune(session: AsyncSession, older_than: timedelta) -> int:
    """Forgets the answers older than ``older_than`` (a retry that late is a new request)."""
    result = await session.execute(sa.delete(IdempotencyRecord).where(
        IdempotencyRecord.created_at < sa.func.now() - older_than))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
