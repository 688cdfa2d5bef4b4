"""A project as NDJSON: a header line, then one line per record, in the order an import needs
them (whatever a line points at comes before it): episodes, memories (with their vectors),
their sources, their history, the graph step's log, entities (with their memory links),
merges of entity names, relations.

Postgres is read in one repeatable-read transaction, page by page, so the file is one
consistent moment of the project however long it takes to stream; the graph comes from the
graph store (Postgres tables or Neo4j) through its contract, after the rest.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain import EVERY, ProjectScope
from app.store.db import Database
from app.store.graph.base import EntityRecord, GraphStore, RelationRecord
from app.store.repositories import embedding_space as spaces
from app.store.repositories import transfer as repository
from app.transfer.records import ENCODING, FORMAT, VERSION, encode_vector

PAGE = 1000
T = TypeVar("T")
MEDIA_TYPE = "application/x-ndjson"
MAX_RELATIONS_PER_ENTITY = 1_000_000


def _plain(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def line(record: str, fields: dict[str, Any]) -> bytes:
    body = {"record": record, **{key: _plain(value) for key, value in fields.items()}}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), default=str).encode() + b"\n"


def _sent_vector(raw: bytes) -> str:
    """pgvector's binary form (``vector_send``) as the file's encoding."""
    return encode_vector(np.frombuffer(raw, dtype=">f4", offset=4))


async def records(database: Database, graph: GraphStore, project_id: uuid.UUID, *,
                  page: int = PAGE) -> AsyncIterator[tuple[str, bytes]]:
    """(record type, line) of the project's export, the header first."""
    async with database.sessions() as session:
        await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        project = await repository.project(session, project_id)
        space = await spaces.current(session)
        yield "header", line("header", {
            "format": FORMAT, "version": VERSION,
            "project": {"id": str(project_id), "name": project.name if project else None},
            "embedding": {"model": space.model, "dimension": space.dimension,
                          "encoding": ENCODING},
            "exported_at": datetime.now(UTC)})
        async for item in _postgres(session, project_id, page):
            yield item
        async for item in _entities(graph, project_id, page):
            yield item
        async for item in _merges(session, project_id, page):
            yield item
        await session.rollback()
    async for item in _relations(graph, project_id, page):
        yield item


async def stream(database: Database, graph: GraphStore,
                 project_id: uuid.UUID) -> AsyncIterator[bytes]:
    """The export's lines (``records`` without their types), for a streamed response."""
    async for _, data in records(database, graph, project_id):
        yield data


async def _paged(fetch: Callable[[Any], Awaitable[Sequence[T]]],
                 cursor: Callable[[T], Any]) -> AsyncIterator[T]:
    """Every row ``fetch(after)`` pages through, ``after`` the ``cursor`` of the last one."""
    after: Any = None
    while rows := await fetch(after):
        for row in rows:
            yield row
        after = cursor(rows[-1])


def _by_id(row: Any) -> Any:
    return row.id


async def _postgres(session: AsyncSession, project_id: uuid.UUID,
                    page: int) -> AsyncIterator[tuple[str, bytes]]:
    async for e in _paged(lambda after: repository.episodes_after(
            session, project_id, after, page), _by_id):
        yield "episode", line("episode", {
            "id": e.id, "user_id": e.user_id, "agent_id": e.agent_id, "run_id": e.run_id,
            "messages": e.messages, "metadata": e.metadata_, "instructions": e.instructions,
            "observed_at": e.observed_at, "expires_at": e.expires_at,
            "created_at": e.created_at})
    async for m in _paged(lambda after: repository.memories_after(
            session, project_id, after, page), _by_id):
        yield "memory", line("memory", {
            "id": m.id, "kind": m.kind, "user_id": m.user_id, "agent_id": m.agent_id,
            "run_id": m.run_id, "text": m.text, "metadata": m.metadata_,
            "context": m.context, "conversation_id": m.conversation_id, "turn": m.turn,
            "created_at": m.created_at, "updated_at": m.updated_at,
            "expires_at": m.expires_at, "valid_at": m.valid_at, "invalid_at": m.invalid_at,
            "superseded_by": m.superseded_by, "lasting": m.lasting,
            "embedding_model": m.embedding_model,
            "embedding": _sent_vector(m.vector)})
    async for s in _paged(lambda after: repository.sources_after(
            session, project_id, after, page), lambda s: (s.memory_id, s.episode_id)):
        yield "source", line("source", {
            "memory_id": s.memory_id, "episode_id": s.episode_id,
            "message_indices": s.message_indices, "created_at": s.created_at})
    async for v in _paged(lambda after: repository.events_after(
            session, project_id, after, page), _by_id):
        yield "event", line("event", {
            "id": v.id, "memory_id": v.memory_id, "event": v.event,
            "old_memory": v.old_text, "new_memory": v.new_text,
            "old_metadata": v.old_metadata, "new_metadata": v.new_metadata,
            "actor_key_id": v.actor_key_id, "request_id": v.request_id,
            "episode_id": v.episode_id, "job_id": v.job_id,
            "message_indices": v.message_indices, "model": v.model,
            "prompt_version": v.prompt_version, "decision": v.decision,
            "related_memory_id": v.related_memory_id, "created_at": v.created_at})
    async for x in _paged(lambda after: repository.extractions_after(
            session, project_id, after, page), _by_id):
        yield "extraction", line("extraction", {
            "id": x.id, "episode_id": x.episode_id, "job_id": x.job_id,
            "user_id": x.user_id, "agent_id": x.agent_id, "run_id": x.run_id,
            "payload": x.payload, "observed_at": x.observed_at, "created_at": x.created_at,
            "applied_at": x.applied_at})


async def _entity_pages(graph: GraphStore, project_id: uuid.UUID,
                        page: int) -> AsyncIterator[list[EntityRecord]]:
    after = None
    while found := await graph.find_entities(ProjectScope(project_id), limit=page, after=after):
        yield found
        after = found[-1].id


async def _entities(graph: GraphStore, project_id: uuid.UUID,
                    page: int) -> AsyncIterator[tuple[str, bytes]]:
    async for found in _entity_pages(graph, project_id, page):
        links = await graph.memories_of(project_id, [e.id for e in found])
        for e in found:
            yield "entity", line("entity", {
                "id": e.id, "user_id": e.user_id, "agent_id": e.agent_id, "run_id": e.run_id,
                "name": e.name, "type": e.type, "summary": e.summary,
                "created_at": e.created_at, "updated_at": e.updated_at,
                "embedding_model": e.embedding_model or None,
                "embedding": encode_vector(e.embedding) if len(e.embedding) else None,
                "memories": [str(m) for m in links.get(e.id, [])]})


async def _merges(session: AsyncSession, project_id: uuid.UUID,
                  page: int) -> AsyncIterator[tuple[str, bytes]]:
    async for m in _paged(lambda after: repository.merges_after(
            session, project_id, after, page), _by_id):
        yield "merge", line("merge", {
            "id": m.id, "entity_id": m.entity_id, "alias": m.alias, "reason": m.reason,
            "score": m.score, "extraction_id": m.extraction_id, "created_at": m.created_at,
            "undone_at": m.undone_at})


async def _relations(graph: GraphStore, project_id: uuid.UUID,
                     page: int) -> AsyncIterator[tuple[str, bytes]]:
    """Every relation, valid or not, by its source entity."""
    async for found in _entity_pages(graph, project_id, page):
        for entity in found:
            relations = await graph.find_relations(ProjectScope(project_id), source=entity.id,
                                                   moment=EVERY, limit=MAX_RELATIONS_PER_ENTITY)
            for r in relations:
                yield "relation", _relation(r)


def _relation(r: RelationRecord) -> bytes:
    return line("relation", {
        "id": r.id, "user_id": r.user_id, "agent_id": r.agent_id, "run_id": r.run_id,
        "source_id": r.source_id, "target_id": r.target_id, "type": r.type,
        "source_name": r.source_name, "target_name": r.target_name, "valid_at": r.valid_at,
        "invalid_at": r.invalid_at, "memory_id": r.memory_id, "episode_id": r.episode_id,
        "created_at": r.created_at})
