from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query

from app.deps import CallerDep, DatabaseDep, EmbedderDep, GraphDep, IndexDep, SessionDep, WriterDep
from app.domain import Condition, MemoryKind, Scope, Timeline
from app.limits import MAX_ID_CHARS, MAX_PAGE_SIZE
from app.memories import erase, service
from app.memories.schemas import (
    HistoryEventRead,
    HistoryRead,
    MemoryDeleted,
    MemoryDetail,
    MemoryPage,
    MemoryRead,
    MemoryUpdate,
    ScopeDeleted,
    ScopePage,
    ScopeRead,
    UserErased,
)
from app.validation import OptionalStorableStr, OptionalTimestamp, StorableStr

router = APIRouter(prefix="/v1/memories", tags=["memories"])
users = APIRouter(prefix="/v1/users", tags=["memories"])
scopes = APIRouter(prefix="/v1/scopes", tags=["memories"])

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
    database: DatabaseDep, graph: GraphDep, index: IndexDep, caller: WriterDep,
    user_id: ScopeQuery = None, agent_id: ScopeQuery = None, run_id: ScopeQuery = None,
) -> ScopeDeleted:
    """Erase everything of a scope (at least one scope id; an unset one matches any): its
    memories in every state, their history, its conversations, jobs and graph."""
    receipt = await erase.erase_scope(database, graph, index, caller,
                                      Scope(user_id, agent_id, run_id))
    return ScopeDeleted(deleted=receipt.memories, erased=receipt)


@router.get("/{memory_id}", response_model=MemoryDetail)
async def get_memory(memory_id: uuid.UUID, session: SessionDep,
                     caller: CallerDep) -> MemoryDetail:
    """A memory (superseded ones too), what it replaced and where it came from."""
    return await service.get(session, caller, memory_id)


@router.patch("/{memory_id}", response_model=MemoryDetail)
async def update_memory(memory_id: uuid.UUID, body: MemoryUpdate, session: SessionDep,
                        embedder: EmbedderDep, caller: WriterDep) -> MemoryDetail:
    """Change text (re-embedded) and/or replace metadata; the old values go to history."""
    memory = await service.update(session, embedder, caller, memory_id, body)
    return await service.get(session, caller, memory.id)


@router.delete("/{memory_id}", response_model=MemoryDeleted)
async def delete_memory(memory_id: uuid.UUID, database: DatabaseDep, graph: GraphDep,
                        index: IndexDep, caller: WriterDep) -> MemoryDeleted:
    """Erase the memory and every copy of its words (its history; a message's text in its
    conversation; search context, job results and graph built from it)."""
    receipt = await erase.erase_memory(database, graph, index, caller, memory_id)
    return MemoryDeleted(id=memory_id, erased=receipt)


@users.delete("/{user_id}", response_model=UserErased)
async def erase_user(user_id: Annotated[StorableStr, Path(min_length=1,
                                                          max_length=MAX_ID_CHARS)],
                     database: DatabaseDep, graph: GraphDep, index: IndexDep,
                     caller: WriterDep) -> UserErased:
    """Erase everything of a user, with every agent and run: memories, history,
    conversations, jobs, graph, stored answers."""
    receipt = await erase.erase_scope(database, graph, index, caller, Scope(user_id=user_id))
    return UserErased(user_id=user_id, deleted=receipt.memories, erased=receipt)


@router.get("/{memory_id}/history", response_model=HistoryRead)
async def memory_history(memory_id: uuid.UUID, session: SessionDep,
                         caller: CallerDep) -> HistoryRead:
    events = await service.history(session, caller, memory_id)
    return HistoryRead(results=[HistoryEventRead.of(event) for event in events])


@scopes.get("", response_model=ScopePage)
async def list_scopes(
    session: SessionDep, caller: CallerDep,
    kind: Annotated[Literal["user", "agent", "run"],
                    Query(description="Which ids: users, agents or runs.")],
    prefix: Annotated[OptionalStorableStr, Query(min_length=1, max_length=MAX_ID_CHARS,
                                                 description="Only ids starting so.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 100,
    cursor: ScopeQuery = None,
) -> ScopePage:
    """The user, agent or run ids the project's memories are stored under, in id order."""
    rows, next_cursor = await service.scope_page(session, caller, kind, prefix, limit, cursor)
    return ScopePage(results=[ScopeRead(id=name, memories=count) for name, count in rows],
                     next_cursor=next_cursor)
