"""Mem0's operations as calls of the native services: each builds the native request (the
native models judge it), calls the service that does the work, and shapes the answer
(``shapes``). Nothing here reads or writes the store itself."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import Caller
from app.compat.mem0 import shapes
from app.compat.mem0.filters import APP_ID_KEY, conjoin, entity_filters, translate
from app.compat.mem0.schemas import (
    ENTITY_KEYS,
    Added,
    AddedMemory,
    AddRequest,
    EntityList,
    HistoryItem,
    ListRequest,
    Mem0Memory,
    MemoryResults,
    Queued,
    SearchRequest,
    SearchResults,
)
from app.domain import CURRENT, EVERY, Scope
from app.errors import ValidationFailed
from app.ingest import service as ingest
from app.ingest.schemas import MemoryCreate
from app.jobs.queue import JobQueue
from app.memories import erase
from app.memories import service as memories
from app.memories.schemas import MemoryRead, MemoryUpdate
from app.resources import Resources
from app.retrieve import service as retrieve
from app.retrieve.filters import parse_filters
from app.retrieve.query_embeddings import QueryEmbeddings
from app.retrieve.schemas import SearchRequest as NativeSearch
from app.throttle import Throttle

SCOPE_TYPES = {"user": "user_id", "agent": "agent_id", "run": "run_id"}


@dataclass(frozen=True)
class Tools:
    """What the API opened that Mem0's operations use."""

    resources: Resources
    queue: JobQueue
    queries: QueryEmbeddings
    throttle: Throttle


def ids_of(request: Any) -> dict[str, str | None]:
    """A request's top-level entity ids (``user_id=…``, ``app_id=…``)."""
    return {key: getattr(request, key) for key in ENTITY_KEYS}


# -- adding -----------------------------------------------------------------------------------


async def add(session: AsyncSession, tools: Tools, caller: Caller,
              body: AddRequest) -> Added | Queued:
    """The messages stored (``infer: false``: as memories, ``Added``) or queued for
    consolidation (``Queued``, the job's id as ``event_id``). The entity ids are top-level
    or in the add's ``filters``; ``app_id`` goes into the metadata."""
    top = {key: value for key, value in ids_of(body).items() if value is not None}
    named = {**(body.filters or {}), **top}
    if not any(named.get(key) for key in ("user_id", "agent_id", "run_id")):
        raise ValidationFailed("give user_id, agent_id or run_id: an app_id alone names no "
                               "Anamnesis scope (it is kept as the metadata key app_id)")
    metadata = body.metadata
    if named.get("app_id"):
        metadata = {**(metadata or {}), APP_ID_KEY: named["app_id"]}
    expires_at = (datetime.combine(body.expiration_date, time.min, UTC)
                  if body.expiration_date else None)
    request = shapes.native(MemoryCreate, {
        "messages": body.messages, "user_id": named.get("user_id"),
        "agent_id": named.get("agent_id"), "run_id": named.get("run_id"),
        "metadata": metadata, "infer": body.infer, "observed_at": body.timestamp,
        "expires_at": expires_at, "instructions": body.custom_instructions})
    outcome = await ingest.add(session, tools.resources.embedder, tools.queue, tools.throttle,
                               caller, request, None)
    if isinstance(outcome, ingest.Stored):
        return Added(results=[AddedMemory(id=m.id, memory=m.memory, event="ADD")
                              for m in outcome.response.results],
                     status="SUCCEEDED", event_id=None)
    # No idempotency key was given, so the add cannot be a replay.
    assert isinstance(outcome, ingest.Accepted)
    return Queued(event_id=outcome.job.job_id)


# -- reading ----------------------------------------------------------------------------------


async def get(session: AsyncSession, caller: Caller, memory_id: uuid.UUID) -> Mem0Memory:
    return shapes.memory(await memories.get(session, caller, memory_id))


async def list_page(session: AsyncSession, caller: Caller, filters: Mapping[str, Any] | None,
                    page: int, size: int, *, include_superseded: bool = False
                    ) -> tuple[list[Mem0Memory], int]:
    """Page ``page`` of ``size`` memories matching Mem0 ``filters``, newest first, and how
    many match in all."""
    rows, total = await memories.list_numbered(
        session, caller, Scope(), parse_filters(translate(filters)), page, size,
        EVERY if include_superseded else CURRENT)
    return [shapes.memory(MemoryRead.of(row)) for row in rows], total


async def list_scope(session: AsyncSession, caller: Caller, ids: Mapping[str, str | None],
                     limit: int) -> MemoryResults:
    """The OSS server's listing: a scope's newest ``limit`` memories (one id at least)."""
    if not any(ids.values()):
        raise ValidationFailed("give at least one of user_id, agent_id, run_id")
    results, _ = await list_page(session, caller, entity_filters(ids), 1, limit)
    return MemoryResults(results=results)


async def list_memories(session: AsyncSession, caller: Caller, body: ListRequest, page: int,
                        size: int) -> tuple[list[Mem0Memory], int]:
    """The Platform's listing: ``filters``, top-level ids and the date bounds together."""
    filters = conjoin(body.filters, entity_filters(ids_of(body)),
                      dated(body.start_date, body.end_date))
    return await list_page(session, caller, filters, page, size,
                           include_superseded=body.latest_only is False)


async def history(session: AsyncSession, caller: Caller,
                  memory_id: uuid.UUID) -> list[HistoryItem]:
    return shapes.history(await memories.history(session, caller, memory_id))


def dated(start: datetime | None, end: datetime | None) -> dict[str, Any] | None:
    """``start_date``/``end_date`` as a Mem0 filter on ``created_at``."""
    bounds = {op: moment.isoformat() for op, moment in (("gte", start), ("lte", end)) if moment}
    return {"created_at": bounds} if bounds else None


async def search(session: AsyncSession, tools: Tools, caller: Caller, body: SearchRequest,
                 *, loose: bool = False) -> SearchResults:
    """The native search (hybrid ranking, exact filters) under Mem0's filters."""
    filters = translate(conjoin(body.filters, entity_filters(ids_of(body))), loose=loose)
    request = shapes.native(NativeSearch, {
        "query": body.query, "filters": filters, "top_k": body.top_k,
        "threshold": body.threshold, "include_superseded": body.latest_only is False})
    settings = tools.resources.settings
    found = await retrieve.search(session, tools.queries, tools.resources.candidates,
                                  tools.resources.graph, settings.search, caller, request)
    return SearchResults(results=[shapes.hit(hit) for hit in found.results])


# -- changing ---------------------------------------------------------------------------------


async def update(session: AsyncSession, tools: Tools, caller: Caller, memory_id: uuid.UUID,
                 text: str | None, metadata: dict[str, Any] | None) -> Mem0Memory:
    """The native update (old text and metadata kept in history). New metadata replaces the
    old, as in Mem0; the memory's ``app_id`` stays."""
    if metadata is not None:
        current = await memories.get(session, caller, memory_id)
        app_id = current.metadata.get(APP_ID_KEY)
        metadata = {**metadata, APP_ID_KEY: app_id} if app_id is not None else metadata
    change = shapes.native(MemoryUpdate, {"text": text, "metadata": metadata})
    await memories.update(session, tools.resources.embedder, caller, memory_id, change)
    return await get(session, caller, memory_id)


async def delete(tools: Tools, caller: Caller, memory_id: uuid.UUID, *,
                 delete_linked: bool = False) -> None:
    """The native erase: the memory and every copy of its words are gone."""
    if delete_linked:
        raise ValidationFailed("delete_linked: not supported by Anamnesis: delete the "
                               "memories it superseded by their ids")
    resources = tools.resources
    await erase.erase_memory(resources.database, resources.graph, resources.index, caller,
                             memory_id)


async def delete_many(session: AsyncSession, tools: Tools, caller: Caller,
                      ids: list[uuid.UUID]) -> None:
    """Every one of ``ids`` erased, once each is known to exist (an unknown one: 404, and
    nothing is erased)."""
    for memory_id in ids:
        await memories.get(session, caller, memory_id)
    for memory_id in dict.fromkeys(ids):
        await delete(tools, caller, memory_id)


async def delete_scope(tools: Tools, caller: Caller, ids: Mapping[str, str | None]) -> None:
    """Everything of the scope the ids name (the native scope erase)."""
    if ids.get("app_id"):
        raise ValidationFailed("app_id: an app is no Anamnesis scope (its id is metadata); "
                               "delete by user_id, agent_id or run_id")
    resources = tools.resources
    await erase.erase_scope(resources.database, resources.graph, resources.index, caller,
                            Scope(ids.get("user_id"), ids.get("agent_id"), ids.get("run_id")))


async def delete_entity(tools: Tools, caller: Caller, entity_type: str, name: str) -> None:
    field = SCOPE_TYPES.get(entity_type)
    if field is None:
        raise ValidationFailed(f"entity type {entity_type!r}: Anamnesis scopes are user, "
                               "agent and run (an app id is metadata)")
    await delete_scope(tools, caller, {field: name})


async def entities(session: AsyncSession, caller: Caller) -> EntityList:
    return EntityList(results=[shapes.entity(found)
                               for found in await memories.scope_ids(session, caller)])


async def reset(session: AsyncSession, tools: Tools, caller: Caller) -> None:
    """Every scope of the project erased: all its memories, conversations, jobs, graph (a
    scope erased with an earlier one is found empty)."""
    for found in await memories.scope_ids(session, caller):
        await delete_scope(tools, caller, {found.field: found.value})
