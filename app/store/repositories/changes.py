"""The memory change log and what the in-process index reads from Postgres (SQL only).

``memory_changes`` is written by triggers (migration 0006); these functions only read it,
and prune what every index has long read.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from app.store.models import Memory, MemoryChange


@dataclass(frozen=True)
class IndexRow:
    """What the index keeps of a memory (``deleted`` rows are dropped from it)."""

    id: uuid.UUID
    project_id: uuid.UUID
    user_id: str | None
    agent_id: str | None
    run_id: str | None
    kind: str
    text: str
    context: str | None
    content_hash: str
    embedding: list[float]
    created_at: datetime
    valid_at: datetime | None
    invalid_at: datetime | None
    expires_at: datetime | None
    deleted: bool
    conversation_id: uuid.UUID | None = None
    turn: int | None = None
    name: str | None = None  # a message's speaker (its metadata's ``name``)


_COLUMNS = (Memory.id, Memory.project_id, Memory.user_id, Memory.agent_id, Memory.run_id,
            Memory.kind, Memory.text, Memory.context, Memory.content_hash, Memory.embedding,
            Memory.created_at, Memory.valid_at, Memory.invalid_at, Memory.expires_at,
            Memory.deleted_at.is_not(None), Memory.conversation_id, Memory.turn,
            Memory.metadata_["name"].astext)


def _rows(result: sa.Result[tuple[object, ...]]) -> list[IndexRow]:
    return [IndexRow(*row) for row in result.all()]  # type: ignore[arg-type,call-arg]


async def after(session: AsyncSession, seq: int, limit: int) -> list[tuple[int, uuid.UUID]]:
    query = (sa.select(MemoryChange.seq, MemoryChange.memory_id)
             .where(MemoryChange.seq > seq).order_by(MemoryChange.seq).limit(limit))
    return [(s, m) for s, m in (await session.execute(query)).all()]


async def among(session: AsyncSession, seqs: Sequence[int]) -> list[tuple[int, uuid.UUID]]:
    """Those of these sequence numbers that are now committed."""
    if not seqs:
        return []
    query = (sa.select(MemoryChange.seq, MemoryChange.memory_id)
             .where(MemoryChange.seq.in_(seqs)).order_by(MemoryChange.seq))
    return [(s, m) for s, m in (await session.execute(query)).all()]


async def last_seq(session: AsyncSession) -> int:
    return int(await session.scalar(sa.select(sa.func.coalesce(sa.func.max(MemoryChange.seq),
                                                               0))) or 0)


async def seqs_in(session: AsyncSession, low: int, high: int) -> list[int]:
    """Committed sequence numbers in (low, high]."""
    query = (sa.select(MemoryChange.seq)
             .where(MemoryChange.seq > low, MemoryChange.seq <= high).order_by(MemoryChange.seq))
    return list((await session.scalars(query)).all())


async def memories(session: AsyncSession, ids: Sequence[uuid.UUID]) -> list[IndexRow]:
    """The current state of these memories (missing ones were erased)."""
    if not ids:
        return []
    return _rows(await session.execute(sa.select(*_COLUMNS).where(Memory.id.in_(ids))))


async def every_memory(session: AsyncSession, after_id: uuid.UUID | None,
                       limit: int) -> list[IndexRow]:
    """Memories not deleted, in id order, for a full build."""
    query = sa.select(*_COLUMNS).where(Memory.deleted_at.is_(None))
    if after_id is not None:
        query = query.where(Memory.id > after_id)
    return _rows(await session.execute(query.order_by(Memory.id).limit(limit)))


async def prune(session: AsyncSession, older_than: timedelta) -> int:
    """Forgets changes older than ``older_than``; an index snapshot older than that is
    rebuilt from the memories instead of caught up."""
    result = await session.execute(sa.delete(MemoryChange).where(
        MemoryChange.changed_at < sa.func.now() - older_than))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def database_identity(session: AsyncSession) -> str:
    """Names this database for as long as it exists: the cluster's system identifier and
    the database's oid (a database dropped and made again gets another)."""
    row = (await session.execute(sa.text(
        "SELECT (SELECT system_identifier FROM pg_control_system()), "
        "(SELECT oid FROM pg_database WHERE datname = current_database())"))).one()
    return f"{row[0]}-{row[1]}"


async def first_seq(session: AsyncSession) -> int | None:
    value = await session.scalar(sa.select(sa.func.min(MemoryChange.seq)))
    return int(value) if value is not None else None
