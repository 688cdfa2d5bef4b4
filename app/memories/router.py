from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from app.deps import CallerDep, EmbedderDep, GraphDep, SessionDep
from app.domain import Condition, MemoryKind, Scope, Timeline
from app.limits import MAX_ID_CHARS, MAX_PAGE_SIZE
from app.memories import service
from app.memories.schemas import (
    HistoryEventRead,
    HistoryRead,
    MemoryDeleted,
    MemoryDetail,
    MemoryPage,
    MemoryRead,
    MemoryUpdate,
    ScopeDeleted,
)
from app.validation import OptionalStorableStr, OptionalTimestamp

router = APIRouter(prefix="/v1/memories", tags=["memories"])

ScopeQuery = Annotated[OptionalStorableStr, Query(min_length=1, max_length=MAX_ID_CHARS)]


@router.get("", response_model=MemoryPage)
async def list_memories(
    session: SessionDep, caller: CallerDep,
    user_id: ScopeQuery = None, agent_id: ScopeQuery = None, run_id: ScopeQuery = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 100,
    cursor: Annotated[OptionalStorableStr, Query(max_length=64)] = None,
    as_of: Annotated[OptionalTimestamp, Query(description="What was true then.")] = None,
    include_superseded: Annotated[bool, Query(description="Superseded ones too.")] = False,
    kind: Annotated[MemoryKind | None, Query(description="Only messages, or only facts.")] = None,
) -> MemoryPage:
    """Current memories, newest first, one page at a time."""
    rows, next_cursor = await service.list_page(
        session, caller, Scope(user_id, agent_id, run_id),
        None if kind is None else Condition("kind", "eq", kind), limit, cursor,
        Timeline.of(as_of, include_superseded))
    return MemoryPage(results=[MemoryRead.of(row) for row in rows], next_cursor=next_cursor)


@router.delete("", response_model=ScopeDeleted)
async def delete_scope(
    session: SessionDep, graph: GraphDep, caller: CallerDep,
    user_id: ScopeQuery = None, agent_id: ScopeQuery = None, run_id: ScopeQuery = None,
) -> ScopeDeleted:
    """Delete every live memory of a scope (at least one scope id is required)."""
    count = await service.delete_scope(session, graph, caller, Scope(user_id, agent_id, run_id))
    return ScopeDeleted(deleted=count)


@router.get("/{memory_id}", response_model=MemoryDetail)
async def get_memory(memory_id: uuid.UUID, session: SessionDep,
                     caller: CallerDep) -> MemoryDetail:
    """A memory (superseded ones too), what it replaced and where it came from."""
    return await service.get(session, caller, memory_id)


@router.patch("/{memory_id}", response_model=MemoryDetail)
async def update_memory(memory_id: uuid.UUID, body: MemoryUpdate, session: SessionDep,
                        embedder: EmbedderDep, caller: CallerDep) -> MemoryDetail:
    """Change text (re-embedded) and/or replace metadata; the old values go to history."""
    memory = await service.update(session, embedder, caller, memory_id, body)
    return await service.get(session, caller, memory.id)


@router.delete("/{memory_id}", response_model=MemoryDeleted)
async def delete_memory(memory_id: uuid.UUID, session: SessionDep, graph: GraphDep,
                        caller: CallerDep) -> MemoryDeleted:
    await service.delete(session, graph, caller, memory_id)
    return MemoryDeleted(id=memory_id)


@router.get("/{memory_id}/history", response_model=HistoryRead)
async def memory_history(memory_id: uuid.UUID, session: SessionDep,
                         caller: CallerDep) -> HistoryRead:
    events = await service.history(session, caller, memory_id)
    return HistoryRead(results=[HistoryEventRead.of(event) for event in events])
