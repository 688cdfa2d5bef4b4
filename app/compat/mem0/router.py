"""Mem0 Platform routes, as ``mem0ai``'s ``MemoryClient`` and ``AsyncMemoryClient`` call them,
under ``/mem0`` (pass ``host="http://<server>/mem0"``). Keys as on the native API: the edge
(``app.http``) takes ``Authorization: Token <key>`` like ``Bearer``."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from app.auth import Caller
from app.compat.mem0 import service, shapes
from app.compat.mem0.schemas import (
    Added,
    AddRequest,
    BatchDelete,
    BatchUpdate,
    EntityList,
    Event,
    HistoryItem,
    ListRequest,
    Mem0Memory,
    MemoryList,
    Notice,
    Ping,
    Queued,
    QueuedList,
    SearchRequest,
    SearchResults,
    UpdateRequest,
)
from app.deps import CallerDep, ResourcesDep, SessionDep, WriterDep
from app.jobs import service as jobs
from app.limits import MAX_ID_CHARS
from app.store.db import Database
from app.validation import OptionalStorableStr, StorableStr

# Described in their own OpenAPI document, /openapi/mem0.json (``app.openapi``): the native
# one, which the SDKs are typed from, stays the native API's alone.
router = APIRouter(prefix="/mem0", tags=["mem0"])
IdQuery = Annotated[OptionalStorableStr, Query(min_length=1, max_length=MAX_ID_CHARS)]
# A numbered page is an OFFSET: bounded, so no page number overflows a statement and no
# caller makes the database skip more than 2M rows (cursor-page the native API for more).
Page = Annotated[int, Query(ge=1, le=10_000)]
PageSize = Annotated[int, Query(ge=1, le=200)]
EntityName = Annotated[StorableStr, Path(min_length=1, max_length=MAX_ID_CHARS)]


def get_tools(resources: ResourcesDep) -> service.Tools:
    return service.Tools(resources, resources.queue, resources.queries,
                         resources.gate.throttle)


ToolsDep = Annotated[service.Tools, Depends(get_tools)]


class FinishedAdd(Response):
    """An add's outcome once its job finished (or as it stands after the server's longest
    wait), sent after the request's transaction committed and enqueued the job."""

    media_type = "application/json"

    def __init__(self, database: Database, caller: Caller, job_id: uuid.UUID,
                 timeout_s: float) -> None:
        super().__init__(status_code=200)
        self.database, self.caller = database, caller
        self.job_id, self.timeout_s = job_id, timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        job = await jobs.wait(self.database, self.caller, self.job_id, self.timeout_s)
        self.body = self.render(shapes.added(job).model_dump_json())
        self.init_headers()
        await super().__call__(scope, receive, send)


async def add_or_wait(body: AddRequest, session: SessionDep, tools: ToolsDep,
               caller: Caller) -> Added | Queued | FinishedAdd:
    """The add; a queued one, with ``async_mode: false``, answered once its job finished."""
    outcome = await service.add(session, tools, caller, body)
    if isinstance(outcome, Queued) and not body.async_mode:
        settings = tools.resources.settings
        return FinishedAdd(tools.resources.database, caller, outcome.event_id,
                           settings.consolidation.max_wait_s)
    return outcome


@router.get("/v1/ping/", response_model=Ping)
async def ping(caller: CallerDep) -> Ping:
    """The key works; its project's id."""
    return Ping(org_id=caller.project_id, project_id=caller.project_id)


@router.post("/v3/memories/add/", response_model=Added | Queued)
async def add_v3(body: AddRequest, session: SessionDep, tools: ToolsDep,
                 caller: WriterDep) -> Any:
    """Store messages: ``infer: false`` as they are; otherwise queued for consolidation
    (the job's id is the ``event_id``), or with ``async_mode: false`` answered once done."""
    return await add_or_wait(body, session, tools, caller)


@router.post("/v1/memories/", response_model=Added | QueuedList)
async def add_v1(body: AddRequest, session: SessionDep, tools: ToolsDep,
                 caller: WriterDep) -> Any:
    """The v1 add: as v3, a queued add listed in ``results``."""
    outcome = await add_or_wait(body, session, tools, caller)
    return QueuedList(results=[outcome]) if isinstance(outcome, Queued) else outcome


@router.post("/v3/memories/", response_model=MemoryList)
@router.post("/v2/memories/", response_model=MemoryList)
async def list_memories(body: ListRequest, request: Request, session: SessionDep,
                        caller: CallerDep, page: Page = 1, page_size: PageSize = 100
                        ) -> MemoryList:
    """Memories matching ``filters``, newest first, numbered pages."""
    results, count = await service.list_memories(session, caller, body, page, page_size)
    after = page * page_size < count
    return MemoryList(
        count=count, results=results,
        next=str(request.url.include_query_params(page=page + 1)) if after else None,
        previous=str(request.url.include_query_params(page=page - 1)) if page > 1 else None)


@router.post("/v3/memories/search/", response_model=SearchResults)
@router.post("/v2/memories/search/", response_model=SearchResults)
async def search(body: SearchRequest, session: SessionDep, tools: ToolsDep,
                 caller: CallerDep) -> SearchResults:
    """The native hybrid search under Mem0's filters."""
    return await service.search(session, tools, caller, body)


@router.get("/v1/memories/{memory_id}/", response_model=Mem0Memory)
async def get_memory(memory_id: uuid.UUID, session: SessionDep,
                     caller: CallerDep) -> Mem0Memory:
    return await service.get(session, caller, memory_id)


@router.put("/v1/memories/{memory_id}/", response_model=Mem0Memory)
async def update_memory(memory_id: uuid.UUID, body: UpdateRequest, session: SessionDep,
                        tools: ToolsDep, caller: WriterDep) -> Mem0Memory:
    """New text and/or metadata; the old ones stay in its history."""
    return await service.update(session, tools, caller, memory_id, body.text, body.metadata)


@router.delete("/v1/memories/{memory_id}/", response_model=Notice)
async def delete_memory(memory_id: uuid.UUID, tools: ToolsDep, caller: WriterDep,
                        delete_linked: bool = False) -> Notice:
    """Erase the memory and every copy of its words (what it superseded stays)."""
    await service.delete(tools, caller, memory_id, delete_linked=delete_linked)
    return Notice(message="Memory deleted successfully!")


@router.delete("/v1/memories/", response_model=Notice)
async def delete_all(tools: ToolsDep, caller: WriterDep, user_id: IdQuery = None,
                     agent_id: IdQuery = None, run_id: IdQuery = None,
                     app_id: IdQuery = None) -> Notice:
    """Erase everything of a scope (at least one id)."""
    await service.delete_scope(tools, caller, {"user_id": user_id, "agent_id": agent_id,
                                               "run_id": run_id, "app_id": app_id})
    return Notice(message="Memories deleted successfully!")


@router.get("/v1/memories/{memory_id}/history/", response_model=list[HistoryItem])
async def history(memory_id: uuid.UUID, session: SessionDep,
                  caller: CallerDep) -> list[HistoryItem]:
    """Every change, oldest first: ADD, UPDATE (the text before and after), SUPERSEDE."""
    return await service.history(session, caller, memory_id)


@router.get("/v1/entities/", response_model=EntityList)
async def entities(session: SessionDep, caller: CallerDep) -> EntityList:
    """The users, agents and runs with memories."""
    return await service.entities(session, caller)


@router.delete("/v2/entities/{entity_type}/{name}/", response_model=Notice)
async def delete_entity(entity_type: str, name: EntityName, tools: ToolsDep,
                        caller: WriterDep) -> Notice:
    """Erase everything of a user, agent or run."""
    await service.delete_entity(tools, caller, entity_type, name)
    return Notice(message="Entity deleted successfully.")


@router.put("/v1/batch/", response_model=Notice)
async def batch_update(body: BatchUpdate, session: SessionDep, tools: ToolsDep,
                       caller: WriterDep) -> Notice:
    """Several updates in one transaction: all are made, or (an unknown id) none."""
    for item in body.memories:
        await service.update(session, tools, caller, item.memory_id, item.text, item.metadata)
    return Notice(message=f"Successfully updated {len(body.memories)} memories")


@router.delete("/v1/batch/", response_model=Notice)
async def batch_delete(body: BatchDelete, session: SessionDep, tools: ToolsDep,
                       caller: WriterDep) -> Notice:
    """Erase several memories (an unknown id: none is erased)."""
    await service.delete_many(session, tools, caller,
                              [item.memory_id for item in body.memories])
    return Notice(message=f"Successfully deleted {len(body.memories)} memories")


@router.get("/v1/event/{event_id}/", response_model=Event)
async def get_event(event_id: uuid.UUID, session: SessionDep, caller: CallerDep) -> Event:
    """An inferred add's progress: its consolidation job."""
    return shapes.event(await jobs.get(session, caller, event_id))
