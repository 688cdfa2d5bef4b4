"""The embedding space (migration 0010): which model the stored vectors are of, and the
switch to another one: the next model's vectors staged beside the current ones, then put in
their place in one transaction."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.store.models import EmbeddingSpace, Memory, MemoryVectorNext

# The change-log trigger of updates (migration 0006): off while the vectors are swapped, as
# every index is built again for the new model anyway.
CHANGE_TRIGGER = "memories_log_update"
HNSW_INDEX = "ix_memories_embedding_hnsw"


@dataclass(frozen=True)
class Space:
    model: str
    dimension: int
    generation: int
    next_model: str | None


@dataclass(frozen=True)
class Source:
    """What a memory's vector is made from, as it was at ``updated_at``."""

    id: uuid.UUID
    text: str
    metadata: dict[str, Any]
    updated_at: datetime


async def current(session: AsyncSession) -> Space:
    row = (await session.execute(sa.select(EmbeddingSpace))).scalar_one()
    return Space(row.model, row.dimension, row.generation, row.next_model)


async def announce(session: AsyncSession, next_model: str | None) -> None:
    """Tells running processes which model a switch goes to (they load it ahead)."""
    await session.execute(sa.update(EmbeddingSpace).values(next_model=next_model))


async def unstaged(session: AsyncSession, model: str, limit: int) -> list[Source]:
    """Memories without a vector of ``model`` made from what they are now."""
    staged = MemoryVectorNext
    query = (
        sa.select(Memory.id, Memory.text, Memory.metadata_, Memory.updated_at)
        .outerjoin(staged, staged.memory_id == Memory.id)
        .where(sa.or_(staged.memory_id.is_(None), staged.model != model,
                      staged.source_updated_at != Memory.updated_at))
        .order_by(Memory.id).limit(limit)
    )
    return [Source(*row) for row in (await session.execute(query)).all()]


async def stage(session: AsyncSession, model: str,
                made: list[tuple[Source, list[float]]]) -> None:
    if not made:
        return
    statement = insert(MemoryVectorNext).values([
        {"memory_id": source.id, "model": model, "source_updated_at": source.updated_at,
         "embedding": vector} for source, vector in made])
    await session.execute(statement.on_conflict_do_update(
        index_elements=[MemoryVectorNext.memory_id],
        set_={"model": statement.excluded.model, "embedding": statement.excluded.embedding,
              "source_updated_at": statement.excluded.source_updated_at}))


async def lock_memories(session: AsyncSession) -> None:
    """No one reads or writes memories until the transaction ends."""
    await session.execute(sa.text("LOCK TABLE memories IN ACCESS EXCLUSIVE MODE"))


async def swap(session: AsyncSession, model: str, dimension: int, *,
               hnsw_m: int = 16, hnsw_ef_construction: int = 64) -> int:
    """Puts every staged vector in its memory's place (all are staged: the caller holds the
    lock and staged the last ones under it), at the new size, with the HNSW index made
    again; the space becomes ``model``'s and its generation moves on. Returns the number of
    memories switched. The session's connection must name ``model`` (the vector trigger)."""
    await session.execute(sa.update(EmbeddingSpace).values(
        model=model, dimension=dimension, next_model=None,
        generation=EmbeddingSpace.generation + 1))
    await session.execute(sa.text(f"ALTER TABLE memories DISABLE TRIGGER {CHANGE_TRIGGER}"))
    await session.execute(sa.text(f"DROP INDEX IF EXISTS {HNSW_INDEX}"))
    await session.execute(sa.text("ALTER TABLE memories ALTER COLUMN embedding TYPE vector"))
    switched = await session.execute(sa.text(
        "UPDATE memories m SET embedding = n.embedding FROM memory_vectors_next n "
        "WHERE n.memory_id = m.id AND n.model = :model"), {"model": model})
    await session.execute(sa.text(
        f"ALTER TABLE memories ALTER COLUMN embedding TYPE vector({int(dimension)})"))
    await session.execute(sa.text(
        f"CREATE INDEX {HNSW_INDEX} ON memories USING hnsw (embedding vector_cosine_ops) "
        f"WITH (m = {int(hnsw_m)}, ef_construction = {int(hnsw_ef_construction)})"))
    await session.execute(sa.text(f"ALTER TABLE memories ENABLE TRIGGER {CHANGE_TRIGGER}"))
    await session.execute(sa.delete(MemoryVectorNext))
    return int(switched.rowcount)  # type: ignore[attr-defined]


async def remaining(session: AsyncSession, model: str) -> int:
    """Memories whose vector is not of ``model``."""
    query = sa.select(sa.func.count()).where(Memory.embedding_model != model)
    return int((await session.execute(query)).scalar_one())
