"""What a project export reads, whose an id is, and the pgvector index a bulk import may set
aside (SQL only). Writing the rows of an import is ``bulk_insert``.

Every read names the project; pages are keyed on the id, so an export of a million rows
never holds more than one page."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import UUID as PgUUID
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.store.models import (
    EntityMerge,
    Episode,
    GraphExtraction,
    Memory,
    MemoryEvent,
    MemorySource,
    Project,
)
from app.store.repositories.filter_sql import any_of

_UUIDS = PgUUID(as_uuid=True)

# The tables whose rows an import keeps by id, by the name the importer gives them.
Owned = type[Memory] | type[Episode] | type[MemoryEvent] | type[GraphExtraction] | \
    type[EntityMerge]
OWNED: dict[str, Owned] = {"memories": Memory, "episodes": Episode,
                           "memory_events": MemoryEvent, "graph_extractions": GraphExtraction,
                           "entity_merges": EntityMerge}

VECTOR_INDEX = "ix_memories_embedding_hnsw"
VECTOR_INDEX_M = 16
# What migration 0001 creates (``models.Memory``); an index set aside is made again so.
VECTOR_INDEX_SQL = (f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {VECTOR_INDEX} ON memories "
                    f"USING hnsw (embedding vector_cosine_ops) WITH (m = {VECTOR_INDEX_M}, "
                    "ef_construction = 64)")


async def project(session: AsyncSession, project_id: uuid.UUID) -> Project | None:
    return await session.get(Project, project_id)


async def counts(session: AsyncSession, project_id: uuid.UUID) -> dict[str, int]:
    """Rows of the project per exported table (the progress bar's total)."""
    tables: dict[str, Owned | type[MemorySource]] = {
        "episodes": Episode, "memories": Memory, "sources": MemorySource,
        "events": MemoryEvent, "extractions": GraphExtraction, "merges": EntityMerge}
    query = sa.select(*(
        sa.select(sa.func.count()).select_from(model).where(model.project_id == project_id)
        .scalar_subquery().label(name) for name, model in tables.items()))
    row = (await session.execute(query)).one()
    return {name: int(value) for name, value in row._mapping.items()}


async def episodes_after(session: AsyncSession, project_id: uuid.UUID,
                         after: uuid.UUID | None, limit: int) -> Sequence[Episode]:
    return (await session.scalars(_page(Episode, project_id, after, limit))).all()


MEMORY_COLUMNS = (Memory.id, Memory.kind, Memory.user_id, Memory.agent_id, Memory.run_id,
                  Memory.text, Memory.metadata_, Memory.context, Memory.conversation_id,
                  Memory.turn, Memory.created_at, Memory.updated_at, Memory.expires_at,
                  Memory.valid_at, Memory.invalid_at, Memory.superseded_by, Memory.lasting,
                  Memory.embedding_model)


async def memories_after(session: AsyncSession, project_id: uuid.UUID,
                         after: uuid.UUID | None, limit: int) -> Sequence[sa.Row[Any]]:
    """Memories with their vector as pgvector's binary form (``vector_send``: a 2-byte
    dimension, 2 unused bytes, big-endian float4s): read as bytes, not parsed from text."""
    vector = sa.func.vector_send(Memory.embedding, type_=sa.LargeBinary).label("vector")
    query = (sa.select(*MEMORY_COLUMNS, vector)
             .where(Memory.project_id == project_id, Memory.deleted_at.is_(None))
             .order_by(Memory.id).limit(limit))
    if after is not None:
        query = query.where(Memory.id > after)
    return (await session.execute(query)).all()


async def sources_after(session: AsyncSession, project_id: uuid.UUID,
                        after: tuple[uuid.UUID, uuid.UUID] | None,
                        limit: int) -> Sequence[MemorySource]:
    query = (sa.select(MemorySource).where(MemorySource.project_id == project_id)
             .order_by(MemorySource.memory_id, MemorySource.episode_id).limit(limit))
    if after is not None:
        query = query.where(sa.tuple_(MemorySource.memory_id, MemorySource.episode_id)
                            > sa.tuple_(sa.literal(after[0]), sa.literal(after[1])))
    return (await session.scalars(query)).all()


async def events_after(session: AsyncSession, project_id: uuid.UUID,
                       after: uuid.UUID | None, limit: int) -> Sequence[MemoryEvent]:
    return (await session.scalars(_page(MemoryEvent, project_id, after, limit))).all()


async def extractions_after(session: AsyncSession, project_id: uuid.UUID,
                            after: uuid.UUID | None, limit: int) -> Sequence[GraphExtraction]:
    return (await session.scalars(_page(GraphExtraction, project_id, after, limit))).all()


async def merges_after(session: AsyncSession, project_id: uuid.UUID,
                       after: uuid.UUID | None, limit: int) -> Sequence[EntityMerge]:
    return (await session.scalars(_page(EntityMerge, project_id, after, limit))).all()


def _page(model: Owned, project_id: uuid.UUID, after: uuid.UUID | None,
          limit: int) -> sa.Select[Any]:
    query = sa.select(model).where(model.project_id == project_id)
    if after is not None:
        query = query.where(model.id > after)
    return query.order_by(model.id).limit(limit)


async def owners(session: AsyncSession, table: str, project_id: uuid.UUID,
                 ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, bool]:
    """Of ``ids``, those stored in ``table`` (one of ``OWNED``), each with whether it is
    the project's (True) or another's (False)."""
    if not ids:
        return {}
    model = OWNED[table]
    query = sa.select(model.id, model.project_id == project_id).where(
        any_of(model.id, list(ids), _UUIDS))
    return {row_id: bool(mine) for row_id, mine in await session.execute(query)}


async def memory_count(session: AsyncSession, *, exact: bool = False) -> int:
    """Memories of every project (what the pgvector index holds), from the planner's
    estimate: a count of a large table would take longer than the decision is worth.
    ``exact``: counted (right after a bulk load the estimate lags far behind)."""
    query = sa.text("SELECT count(*) FROM memories" if exact else
                    "SELECT greatest(reltuples, 0)::bigint FROM pg_class "
                    "WHERE oid = 'memories'::regclass")
    return int((await session.execute(query)).scalar_one())


async def vector_index_state(session: AsyncSession) -> str:
    """``valid``, ``invalid`` (a concurrent build that failed) or ``missing``."""
    query = sa.text("SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                    "WHERE c.relname = :name")
    valid = (await session.execute(query, {"name": VECTOR_INDEX})).scalar_one_or_none()
    return "missing" if valid is None else "valid" if valid else "invalid"


async def drop_vector_index(engine: AsyncEngine) -> None:
    """Sets the pgvector index aside for a bulk load (each row inserted into an HNSW graph
    costs more than building the graph over all rows at the end). Concurrently, so reads
    and writes of memories go on; searches on the Postgres path scan until it is back."""
    async with engine.connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        await autocommit.execute(sa.text(f"DROP INDEX CONCURRENTLY IF EXISTS {VECTOR_INDEX}"))


async def build_vector_index(engine: AsyncEngine, memory: str) -> None:
    """The pgvector index made again over every row, concurrently (writes go on); a build
    that failed before (an invalid index) is dropped first. ``memory``: the build's
    ``maintenance_work_mem`` (the graph built in memory is far faster than on disk)."""
    async with engine.connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        valid = (await autocommit.execute(sa.text(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE c.relname = :name"), {"name": VECTOR_INDEX})).scalar_one_or_none()
        if valid is True:
            return
        if valid is False:
            await autocommit.execute(sa.text(f"DROP INDEX CONCURRENTLY {VECTOR_INDEX}"))
        await autocommit.execute(sa.text("SELECT set_config('maintenance_work_mem', :m, false)"),
                                 {"m": memory})
        try:
            await autocommit.execute(sa.text(VECTOR_INDEX_SQL))
        finally:
            await autocommit.execute(sa.text("RESET maintenance_work_mem"))
