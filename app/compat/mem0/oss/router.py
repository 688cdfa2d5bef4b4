"""The Mem0 OSS REST server's routes under ``/mem0/oss`` (keys as on the native API, the
OSS server's ``X-API-Key`` header included). ``/reset`` erases the whole project and takes
a key with the admin scope."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query

from app.compat.mem0 import service, shapes
from app.compat.mem0.oss.schemas import OssAdd, OssSearch, OssUpdate
from app.compat.mem0.router import ToolsDep, add_or_wait
from app.compat.mem0.schemas import (
    Added,
    AddRequest,
    HistoryItem,
    Mem0Memory,
    MemoryResults,
    Notice,
    SearchRequest,
    SearchResults,
)
from app.deps import AdminDep, CallerDep, SessionDep, WriterDep
from app.limits import MAX_ID_CHARS
from app.validation import OptionalStorableStr

router = APIRouter(prefix="/mem0/oss", tags=["mem0 oss"])  # in /openapi/mem0.json (app.openapi)
IdQuery = Annotated[OptionalStorableStr, Query(min_length=1, max_length=MAX_ID_CHARS)]
LISTED = 100  # what Mem0 OSS's get_all returns at most


@router.post("/memories", response_model=Added)
async def add(body: OssAdd, session: SessionDep, tools: ToolsDep, caller: WriterDep) -> Any:
    """Store messages; an inferred add is answered once its job finished."""
    platform = shapes.native(AddRequest, {**body.model_dump(
        exclude={"memory_type", "prompt"}), "async_mode": False})
    return await add_or_wait(platform, session, tools, caller)


@router.get("/memories", response_model=MemoryResults)
async def list_memories(session: SessionDep, caller: CallerDep, user_id: IdQuery = None,
                        agent_id: IdQuery = None, run_id: IdQuery = None
                        ) -> MemoryResults:
    """The scope's newest memories (at most 100, as Mem0 OSS)."""
    return await service.list_scope(session, caller, {"user_id": user_id,
                                                      "agent_id": agent_id,
                                                      "run_id": run_id}, LISTED)


@router.get("/memories/{memory_id}", response_model=Mem0Memory)
async def get_memory(memory_id: uuid.UUID, session: SessionDep,
                     caller: CallerDep) -> Mem0Memory:
    return await service.get(session, caller, memory_id)


@router.put("/memories/{memory_id}", response_model=Notice)
async def update_memory(memory_id: uuid.UUID, body: OssUpdate, session: SessionDep,
                        tools: ToolsDep, caller: WriterDep) -> Notice:
    """New text and/or metadata; the old ones stay in its history."""
    await service.update(session, tools, caller, memory_id, body.text or body.data,
                         body.metadata)
    return Notice(message="Memory updated successfully!")


@router.delete("/memories/{memory_id}", response_model=Notice)
async def delete_memory(memory_id: uuid.UUID, tools: ToolsDep, caller: WriterDep) -> Notice:
    await service.delete(tools, caller, memory_id)
    return Notice(message="Memory deleted successfully")


@router.get("/memories/{memory_id}/history", response_model=list[HistoryItem])
async def history(memory_id: uuid.UUID, session: SessionDep,
                  caller: CallerDep) -> list[HistoryItem]:
    return await service.history(session, caller, memory_id)


@router.post("/search", response_model=SearchResults)
async def search(body: OssSearch, session: SessionDep, tools: ToolsDep,
                 caller: CallerDep) -> SearchResults:
    """The native hybrid search; unknown filter keys are metadata keys, as in Mem0 OSS."""
    platform = shapes.native(SearchRequest, {
        "query": body.query, "user_id": body.user_id, "agent_id": body.agent_id,
        "run_id": body.run_id, "filters": body.filters,
        "top_k": body.top_k or body.limit or 10, "threshold": body.threshold})
    return await service.search(session, tools, caller, platform, loose=True)


@router.delete("/memories", response_model=Notice)
async def delete_all(tools: ToolsDep, caller: WriterDep, user_id: IdQuery = None,
                     agent_id: IdQuery = None, run_id: IdQuery = None) -> Notice:
    """Erase everything of a scope (at least one id)."""
    await service.delete_scope(tools, caller, {"user_id": user_id, "agent_id": agent_id,
                                               "run_id": run_id})
    return Notice(message="All relevant memories deleted")


@router.post("/reset", response_model=Notice)
async def reset(session: SessionDep, tools: ToolsDep, caller: AdminDep) -> Notice:
    """Erase every memory, conversation, job and graph of the key's project (admin keys)."""
    await service.reset(session, tools, caller)
    return Notice(message="All memories reset")
