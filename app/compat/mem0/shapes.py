"""Native answers in Mem0's shapes: memories, hits, job results, history, entities."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from app.compat.mem0.filters import APP_ID_KEY
from app.compat.mem0.schemas import (
    Added,
    AddedMemory,
    Entity,
    Event,
    HistoryItem,
    Mem0Hit,
    Mem0Memory,
)
from app.errors import ValidationFailed
from app.jobs.schemas import JobRead
from app.memories.schemas import MemoryRead
from app.retrieve.schemas import SearchHit
from app.store.models import Job, MemoryEvent
from app.store.repositories.scopes import ScopeId

ENTITY_TYPES = {"user_id": "user", "agent_id": "agent", "run_id": "run"}
Model = TypeVar("Model", bound=BaseModel)


def native(model: type[Model], data: dict[str, Any]) -> Model:
    """``data`` as the native request ``model``; what it refuses is a 422 naming the field,
    as it would be on the native route."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(part) for part in error['loc']) or 'body'}: "
                    f"{str(error['msg']).removeprefix('Value error, ')}"
                    for error in exc.errors()[:20]]
        raise ValidationFailed("; ".join(problems)) from None


def memory(read: MemoryRead) -> Mem0Memory:
    """The memory as Mem0 shows it: ``app_id`` back out of the metadata it is kept in."""
    metadata = dict(read.metadata)
    app_id = metadata.pop(APP_ID_KEY, None)
    return Mem0Memory(
        id=read.id, memory=read.memory, user_id=read.user_id, agent_id=read.agent_id,
        run_id=read.run_id, app_id=app_id if isinstance(app_id, str) else None,
        metadata=metadata, categories=[],
        expiration_date=read.expires_at.date() if read.expires_at else None,
        created_at=read.created_at, updated_at=read.updated_at, kind=read.kind)


def hit(found: SearchHit) -> Mem0Hit:
    return Mem0Hit(**memory(found).model_dump(), score=found.score)


def job_results(job: Job) -> list[AddedMemory]:
    """What consolidation changed, as Mem0 reports an add: a superseded fact is an UPDATE
    (its successor's id and text, the retired text as ``previous_memory``); a NOOP is not
    reported."""
    results = []
    for result in JobRead.of(job).results:
        if result.event == "ADD":
            results.append(AddedMemory(id=result.id, memory=result.memory, event="ADD"))
        elif result.event in ("UPDATE", "SUPERSEDE"):
            results.append(AddedMemory(id=result.id, memory=result.memory, event="UPDATE",
                                       previous_memory=result.previous_memory))
    return results


def added(job: Job) -> Added:
    return Added(results=job_results(job), status=job.status, event_id=job.id)


def event(job: Job) -> Event:
    return Event(id=job.id, status=job.status, results=job_results(job),
                 created_at=job.created_at, updated_at=job.completed_at or job.created_at)


def history(events: Sequence[MemoryEvent]) -> list[HistoryItem]:
    return [HistoryItem(id=item.id, memory_id=item.memory_id, event=item.event,
                        old_memory=item.old_text, new_memory=item.new_text,
                        metadata=item.new_metadata, created_at=item.created_at,
                        updated_at=item.created_at) for item in events]


def entity(found: ScopeId) -> Entity:
    return Entity(id=found.value, name=found.value, type=ENTITY_TYPES[found.field],
                  total_memories=found.memories, created_at=found.first_at,
                  updated_at=found.last_at)
