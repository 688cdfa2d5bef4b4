from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from app.deps import CallerDep, DatabaseDep, EmbedderDep, GraphDep, SessionDep, WriterDep
from app.domain import Scope
from app.graph import service
from app.graph.schemas import (
    EntityDeleted,
    EntityDetail,
    EntityPage,
    EntityRead,
    Neighbor,
    NeighborsRead,
    RelationRead,
    RelationsRead,
    Unmerged,
    UnmergeRequest,
)
from app.limits import MAX_ID_CHARS, MAX_PAGE_SIZE
from app.validation import OptionalStorableStr, OptionalTimestamp

router = APIRouter(prefix="/v1", tags=["graph"])

ScopeQuery = Annotated[OptionalStorableStr, Query(min_length=1, max_length=MAX_ID_CHARS)]
AsOf = Annotated[OptionalTimestamp, Query(description="What held then.")]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)]


@router.get("/entities", response_model=EntityPage)
async def list_entities(
    graph: GraphDep, caller: CallerDep,
    user_id: ScopeQuery = None, agent_id: ScopeQuery = None, run_id: ScopeQuery = None,
    name: Annotated[OptionalStorableStr, Query(min_length=1, max_length=255)] = None,
    limit: Limit = 100, cursor: uuid.UUID | None = None,
) -> EntityPage:
    """Entities of the scope, oldest first; ``name`` matches part of a name."""
    found, next_cursor = await service.entities(graph, caller, Scope(user_id, agent_id, run_id),
                                                name, limit, cursor)
    return EntityPage(results=[EntityRead.of(e) for e in found], next_cursor=next_cursor)


@router.get("/entities/{entity_id}", response_model=EntityDetail)
async def get_entity(entity_id: uuid.UUID, session: SessionDep, graph: GraphDep,
                     caller: CallerDep) -> EntityDetail:
    """An entity with its current relations, the memories that mention it and its aliases."""
    return await service.detail(session, graph, caller, entity_id)


@router.get("/entities/{entity_id}/neighbors", response_model=NeighborsRead)
async def entity_neighbors(entity_id: uuid.UUID, graph: GraphDep, caller: CallerDep,
                           depth: Annotated[int, Query(ge=1, le=3)] = 1,
                           as_of: AsOf = None) -> NeighborsRead:
    """Entities at most ``depth`` relations away, nearest first."""
    found = await service.neighbors(graph, caller, entity_id, depth, as_of)
    return NeighborsRead(results=[Neighbor(entity=EntityRead.of(e), distance=d)
                                  for e, d in found])


@router.delete("/entities/{entity_id}", response_model=EntityDeleted)
async def delete_entity(entity_id: uuid.UUID, database: DatabaseDep, graph: GraphDep,
                        caller: WriterDep) -> EntityDeleted:
    """Removes the entity and its relations; the memories stay."""
    await service.delete(database, graph, caller, entity_id)
    return EntityDeleted(id=entity_id)


@router.post("/entities/{entity_id}/unmerge", response_model=Unmerged)
async def unmerge_entity(entity_id: uuid.UUID, body: UnmergeRequest, database: DatabaseDep,
                         graph: GraphDep, embedder: EmbedderDep,
                         caller: WriterDep) -> Unmerged:
    """Undoes the merge of ``alias`` into the entity (one of its ``aliases``): the alias
    becomes an entity of its own, with what named it, and is not merged back later."""
    return await service.unmerge(database, graph, embedder, caller, entity_id, body.alias)


@router.get("/relations", response_model=RelationsRead)
async def list_relations(
    graph: GraphDep, caller: CallerDep,
    user_id: ScopeQuery = None, agent_id: ScopeQuery = None, run_id: ScopeQuery = None,
    source: uuid.UUID | None = None, target: uuid.UUID | None = None,
    type: Annotated[OptionalStorableStr, Query(min_length=1, max_length=64)] = None,
    as_of: AsOf = None, include_invalid: bool = False, limit: Limit = 100,
) -> RelationsRead:
    """Current relations by default; ``as_of`` for the past, ``include_invalid`` for all."""
    found = await service.relations(graph, caller, Scope(user_id, agent_id, run_id),
                                    source=source, target=target, type=type,
                                    seen=service.moment(as_of, include_invalid), limit=limit)
    return RelationsRead(results=[RelationRead.of(r) for r in found])
