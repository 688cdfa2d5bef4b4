"""Reading and deleting the caller's graph; every call names the caller's project."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import Caller
from app.consolidate import replay
from app.domain import ProjectScope, Scope, Timeline
from app.embeddings import Embedder
from app.errors import NotFound, ValidationFailed
from app.graph.schemas import AliasRead, EntityDetail, EntityRead, RelationRead, Unmerged
from app.memories.schemas import MemoryRead
from app.store.db import Database
from app.store.graph.base import EntityRecord, GraphStore, RelationRecord, name_key
from app.store.repositories import graph as graph_records
from app.store.repositories import jobs, memories


def moment(as_of: datetime | None, include_invalid: bool) -> Timeline:
    if as_of is not None and include_invalid:
        raise ValidationFailed("as_of and include_invalid exclude each other")
    if as_of is not None and as_of.tzinfo is None:
        as_of = as_of.replace(tzinfo=UTC)
    return Timeline(as_of=as_of, include_superseded=include_invalid)


async def entity(graph: GraphStore, caller: Caller, entity_id: uuid.UUID) -> EntityRecord:
    found = await graph.get_entity(caller.project_id, entity_id)
    if found is None:
        raise NotFound(f"entity {entity_id} not found")
    return found


async def detail(session: AsyncSession, graph: GraphStore, caller: Caller,
                 entity_id: uuid.UUID) -> EntityDetail:
    found = await entity(graph, caller, entity_id)
    scope = ProjectScope(caller.project_id)
    relations = {r.id: r for r in [*await graph.find_relations(scope, source=found.id),
                                   *await graph.find_relations(scope, target=found.id)]}
    memory_ids = (await graph.memories_of(caller.project_id, [found.id])).get(found.id, [])
    rows = [memory for memory_id in memory_ids
            if (memory := await memories.get(session, caller.project_id, memory_id))]
    aliases = await graph_records.merges_of(session, caller.project_id, found.id)
    return EntityDetail(
        **EntityRead.of(found).model_dump(),
        relations=[RelationRead.of(r) for r in sorted(relations.values(),
                                                        key=lambda r: (r.valid_at, r.id))],
        memories=[MemoryRead.of(row) for row in rows],
        aliases=[AliasRead(alias=m.alias, reason=m.reason, score=m.score,
                           created_at=m.created_at) for m in aliases if m.undone_at is None])


async def entities(graph: GraphStore, caller: Caller, scope: Scope, name: str | None,
                   limit: int, cursor: uuid.UUID | None) -> tuple[list[EntityRecord],
                                                               uuid.UUID | None]:
    found = await graph.find_entities(
        ProjectScope(caller.project_id, scope.user_id, scope.agent_id, scope.run_id),
        name=name, limit=limit + 1, after=cursor)
    if len(found) > limit:
        return found[:limit], found[limit - 1].id
    return found, None


async def relations(graph: GraphStore, caller: Caller, scope: Scope, *,
                    source: uuid.UUID | None, target: uuid.UUID | None, type: str | None,
                    seen: Timeline, limit: int) -> list[RelationRecord]:
    return await graph.find_relations(
        ProjectScope(caller.project_id, scope.user_id, scope.agent_id, scope.run_id),
        source=source, target=target, type=type, moment=seen, limit=limit)


async def neighbors(graph: GraphStore, caller: Caller, entity_id: uuid.UUID, depth: int,
                    as_of: datetime | None) -> list[tuple[EntityRecord, int]]:
    start = await entity(graph, caller, entity_id)
    return await graph.neighbors(caller.project_id, start.id, depth, moment(as_of, False))


async def delete(database: Database, graph: GraphStore, caller: Caller,
                 entity_id: uuid.UUID) -> None:
    """The entity and its relations; the memories that mention it stay. Logged first, in a
    transaction of its own, so the log that rebuilds the graph never misses a deletion the
    graph store made; then deleted under the scope's consolidation lock."""
    found = await entity(graph, caller, entity_id)
    scope = Scope(found.user_id, found.agent_id, found.run_id)
    async with database.session_scope() as session:
        await graph_records.add_entity_deletion(session, caller.project_id, entity_id, scope)
    async with jobs.scope_lock(database.engine, caller.project_id, scope):
        await graph.delete_entity(caller.project_id, entity_id)


async def unmerge(database: Database, graph: GraphStore, embedder: Embedder, caller: Caller,
                  entity_id: uuid.UUID, alias: str) -> Unmerged:
    """Takes a merged name apart from the entity: the merge is marked undone (and is never
    made again), then the scope's graph is replayed from its extractions, so the alias's
    mentions, relations and memories become an entity of their own."""
    found = await entity(graph, caller, entity_id)
    key = name_key(alias)
    async with database.session_scope() as session:
        undone = await graph_records.undo_merges(session, caller.project_id, found.id, key)
    if not undone:
        raise NotFound(f"entity {entity_id} has no merged alias {alias!r}")
    scope = Scope(found.user_id, found.agent_id, found.run_id)
    await replay.rebuild_scope(database, graph, embedder, caller.project_id, scope)
    after = await graph.get_entity(caller.project_id, found.id)
    split = await graph.entity_named(
        ProjectScope(caller.project_id, scope.user_id, scope.agent_id, scope.run_id), key)
    return Unmerged(entity=EntityRead.of(after) if after else None,
                    split=EntityRead.of(split) if split else None, undone=len(undone))
