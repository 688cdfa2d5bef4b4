"""The rows of a bulk import, written the fast way (SQL only): each batch is copied into a
temporary table (``COPY``, asyncpg's binary ``copy_records_to_table``), then moved into its
table by one ``INSERT … SELECT … ON CONFLICT DO NOTHING``.

So a row whose id is already stored is left as it is (an import run again, or resumed after
an interruption, adds nothing twice), and a row that points at a memory or an episode the
project does not hold is left out rather than failing its batch. Every row is written into
the given project; each function returns the keys of the rows it inserted. The caller's
transaction holds the batch: it commits or rolls back whole.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import UUID as PgUUID
from sqlalchemy.ext.asyncio import AsyncSession

_UUIDS = ARRAY(PgUUID(as_uuid=True))


@dataclass(frozen=True)
class Stage:
    """A temporary table a batch is copied into: its name and (column, type) pairs, in the
    order of the tuples the caller gives."""

    table: str
    columns: tuple[tuple[str, str], ...]

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.columns]


_SCOPE = (("user_id", "text"), ("agent_id", "text"), ("run_id", "text"))
MEMORIES = Stage("transfer_memories", (
    ("id", "uuid"), ("kind", "text"), *_SCOPE, ("text", "text"), ("content_hash", "text"),
    ("metadata", "jsonb"), ("embedding", "vector"), ("context", "text"),
    ("conversation_id", "uuid"), ("turn", "integer"), ("created_at", "timestamptz"),
    ("updated_at", "timestamptz"), ("expires_at", "timestamptz"), ("valid_at", "timestamptz"),
    ("invalid_at", "timestamptz"), ("lasting", "boolean")))
EPISODES = Stage("transfer_episodes", (
    ("id", "uuid"), *_SCOPE, ("messages", "jsonb"), ("metadata", "jsonb"),
    ("instructions", "text"), ("observed_at", "timestamptz"), ("expires_at", "timestamptz"),
    ("created_at", "timestamptz")))
SOURCES = Stage("transfer_sources", (
    ("memory_id", "uuid"), ("episode_id", "uuid"), ("message_indices", "integer[]"),
    ("created_at", "timestamptz")))
EVENTS = Stage("transfer_events", (
    ("id", "uuid"), ("memory_id", "uuid"), ("event", "text"), ("old_text", "text"),
    ("new_text", "text"), ("old_metadata", "jsonb"), ("new_metadata", "jsonb"),
    ("actor_key_id", "uuid"), ("request_id", "text"), ("episode_id", "uuid"), ("job_id", "uuid"),
    ("message_indices", "integer[]"), ("model", "text"), ("prompt_version", "text"),
    ("decision", "text"), ("related_memory_id", "uuid"), ("created_at", "timestamptz")))
EXTRACTIONS = Stage("transfer_extractions", (
    ("id", "uuid"), ("episode_id", "uuid"), ("job_id", "uuid"), *_SCOPE, ("payload", "jsonb"),
    ("observed_at", "timestamptz"), ("created_at", "timestamptz"), ("applied_at", "timestamptz")))
MERGES = Stage("transfer_merges", (
    ("id", "uuid"), ("entity_id", "uuid"), ("alias", "text"), ("reason", "text"),
    ("score", "double precision"), ("extraction_id", "uuid"), ("created_at", "timestamptz"),
    ("undone_at", "timestamptz")))

_INSERTS = {
    MEMORIES.table: """
        INSERT INTO memories (id, project_id, user_id, agent_id, run_id, kind, text,
            content_hash, metadata, embedding, context, conversation_id, turn, created_at,
            updated_at, expires_at, valid_at, invalid_at, lasting)
        SELECT s.id, :p, s.user_id, s.agent_id, s.run_id, s.kind, s.text, s.content_hash,
            s.metadata, s.embedding, s.context, s.conversation_id, s.turn,
            coalesce(s.created_at, now()), coalesce(s.updated_at, s.created_at, now()),
            s.expires_at, s.valid_at, s.invalid_at, s.lasting
        FROM transfer_memories s
        ON CONFLICT DO NOTHING RETURNING id""",
    EPISODES.table: """
        INSERT INTO episodes (id, project_id, user_id, agent_id, run_id, messages, metadata,
            instructions, observed_at, expires_at, created_at)
        SELECT s.id, :p, s.user_id, s.agent_id, s.run_id, s.messages, s.metadata,
            s.instructions, s.observed_at, s.expires_at, coalesce(s.created_at, now())
        FROM transfer_episodes s
        ON CONFLICT DO NOTHING RETURNING id""",
    SOURCES.table: """
        INSERT INTO memory_sources (memory_id, episode_id, project_id, message_indices,
            created_at)
        SELECT s.memory_id, s.episode_id, :p, s.message_indices, coalesce(s.created_at, now())
        FROM transfer_sources s
        WHERE EXISTS (SELECT 1 FROM memories m WHERE m.id = s.memory_id AND m.project_id = :p)
          AND EXISTS (SELECT 1 FROM episodes e WHERE e.id = s.episode_id AND e.project_id = :p)
        ON CONFLICT DO NOTHING RETURNING memory_id, episode_id""",
    EVENTS.table: """
        INSERT INTO memory_events (id, project_id, memory_id, event, old_text, new_text,
            old_metadata, new_metadata, actor_key_id, request_id, episode_id, job_id,
            message_indices, model, prompt_version, decision, related_memory_id, created_at)
        SELECT s.id, :p, s.memory_id, s.event, s.old_text, s.new_text, s.old_metadata,
            s.new_metadata, s.actor_key_id, s.request_id, s.episode_id, s.job_id,
            s.message_indices, s.model, s.prompt_version, s.decision, s.related_memory_id,
            coalesce(s.created_at, now())
        FROM transfer_events s
        WHERE EXISTS (SELECT 1 FROM memories m WHERE m.id = s.memory_id AND m.project_id = :p)
        ON CONFLICT DO NOTHING RETURNING id""",
    EXTRACTIONS.table: """
        INSERT INTO graph_extractions (id, project_id, episode_id, job_id, user_id, agent_id,
            run_id, payload, observed_at, created_at, applied_at)
        SELECT s.id, :p,
            CASE WHEN EXISTS (SELECT 1 FROM episodes e
                              WHERE e.id = s.episode_id AND e.project_id = :p)
                 THEN s.episode_id END,
            s.job_id, s.user_id, s.agent_id, s.run_id, s.payload, s.observed_at,
            coalesce(s.created_at, now()), s.applied_at
        FROM transfer_extractions s
        ON CONFLICT DO NOTHING RETURNING id""",
    MERGES.table: """
        INSERT INTO entity_merges (id, project_id, entity_id, alias, reason, score,
            extraction_id, created_at, undone_at)
        SELECT s.id, :p, s.entity_id, s.alias, s.reason, s.score, s.extraction_id,
            coalesce(s.created_at, now()), s.undone_at
        FROM transfer_merges s
        ON CONFLICT DO NOTHING RETURNING id""",
}


async def insert(session: AsyncSession, stage: Stage, project_id: uuid.UUID,
                 rows: Sequence[tuple[Any, ...]]) -> set[Any]:
    """Copies ``rows`` (tuples in ``stage``'s column order; a vector as a float32 array) into
    the stage table, then into their table in the project. Returns the keys inserted: ids,
    or (memory id, episode id) for sources."""
    if not rows:
        return set()
    columns = ", ".join(f"{name} {kind}" for name, kind in stage.columns)
    # Through the session first: that begins the transaction the copy then runs in.
    await session.execute(sa.text(f"CREATE TEMP TABLE {stage.table} ({columns}) ON COMMIT DROP"))
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver: Any = raw.driver_connection  # asyncpg's connection, in the session's transaction
    if any(kind == "vector" for _, kind in stage.columns):
        # Vectors go in pgvector's binary form, straight from float32 arrays: asyncpg
        # would otherwise encode every number of a real[] one by one (most of a batch's
        # time). Only for the copy: the connection's other statements keep the text form
        # SQLAlchemy's pgvector type speaks.
        await driver.set_type_codec("vector", schema=await _vector_schema(session),
                                    encoder=_vector_bytes, decoder=bytes, format="binary")
        try:
            await driver.copy_records_to_table(stage.table, records=rows, columns=stage.names)
        finally:
            await driver.reset_type_codec("vector", schema=await _vector_schema(session))
    else:
        await driver.copy_records_to_table(stage.table, records=rows, columns=stage.names)
    result = await session.execute(sa.text(_INSERTS[stage.table]), {"p": project_id})
    keys = {tuple(row) if len(row) > 1 else row[0] for row in result.all()}
    await session.execute(sa.text(f"DROP TABLE {stage.table}"))
    return keys


def _vector_bytes(vector: npt.NDArray[np.float32]) -> bytes:
    """pgvector's binary input: the dimension and a reserved word (uint16 each), then
    big-endian float32s."""
    return struct.pack(">HH", vector.size, 0) + vector.astype(">f4").tobytes()


async def _vector_schema(session: AsyncSession) -> str:
    query = sa.text("SELECT n.nspname FROM pg_type t JOIN pg_namespace n "
                    "ON n.oid = t.typnamespace WHERE t.typname = 'vector'")
    return str((await session.execute(query)).scalar_one())


async def link_supersessions(session: AsyncSession, project_id: uuid.UUID,
                             pointers: Mapping[uuid.UUID, uuid.UUID]) -> set[uuid.UUID]:
    """Sets ``superseded_by`` (memory id → the memory that replaced it) where the project
    holds the replacement by now and the memory names none yet. A memory is inserted
    without it (its replacement often comes later in the file, and the foreign key wants it
    there). Returns the memories whose replacement is there: settled either way."""
    if not pointers:
        return set()
    present = set((await session.execute(
        sa.text("SELECT id FROM memories WHERE project_id = :p AND id = ANY(:ids)")
        .bindparams(sa.bindparam("ids", type_=_UUIDS)),
        {"p": project_id, "ids": list(set(pointers.values()))})).scalars())
    ready = {memory: target for memory, target in pointers.items() if target in present}
    if ready:
        await session.execute(sa.text(
            "UPDATE memories m SET superseded_by = u.target "
            "FROM unnest(:ids, :targets) AS u(id, target) "
            "WHERE m.id = u.id AND m.project_id = :p AND m.superseded_by IS NULL")
            .bindparams(sa.bindparam("ids", type_=_UUIDS), sa.bindparam("targets", type_=_UUIDS)),
            {"p": project_id, "ids": list(ready), "targets": list(ready.values())})
    return set(ready)


async def memories_held(session: AsyncSession, project_id: uuid.UUID,
                        ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
    """Those of ``ids`` the project holds (a graph link to any other is left out)."""
    if not ids:
        return set()
    return set((await session.execute(
        sa.text("SELECT id FROM memories WHERE project_id = :p AND id = ANY(:ids)")
        .bindparams(sa.bindparam("ids", type_=_UUIDS)),
        {"p": project_id, "ids": list(ids)})).scalars())
