"""The history of memories (SQL only): one event per change, naming its cause."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from app.store.ids import uuid7
from app.store.models import MemoryEvent


@dataclass(frozen=True)
class EventRecord:
    memory_id: uuid.UUID
    event: str
    old_text: str | None
    new_text: str | None
    old_metadata: dict[str, Any] | None
    new_metadata: dict[str, Any] | None
    cause: Cause | None = None
    message_indices: Sequence[int] | None = None
    decision: str | None = None
    related_memory_id: uuid.UUID | None = None


@dataclass(frozen=True)
class Cause:
    """Why consolidation changed a memory: the episode and job, and who decided how."""

    episode_id: uuid.UUID
    job_id: uuid.UUID
    model: str | None
    prompt_version: str | None


async def add_events(session: AsyncSession, project_id: uuid.UUID,
                     events: Sequence[EventRecord], *, actor_key_id: uuid.UUID | None,
                     request_id: str | None) -> None:
    if not events:
        return
    # One row of parameters per event (executemany): a VALUES list of them all would pass
    # Postgres' 32,767 parameters from about 1,900 events (deleting a large scope).
    await session.execute(sa.insert(MemoryEvent), [
        {
            "id": uuid7(), "project_id": project_id, "memory_id": event.memory_id,
            "event": event.event, "old_text": event.old_text, "new_text": event.new_text,
            "old_metadata": event.old_metadata, "new_metadata": event.new_metadata,
            "actor_key_id": actor_key_id, "request_id": request_id,
            "episode_id": event.cause.episode_id if event.cause else None,
            "job_id": event.cause.job_id if event.cause else None,
            "model": event.cause.model if event.cause else None,
            "prompt_version": event.cause.prompt_version if event.cause else None,
            "message_indices": list(event.message_indices)
            if event.message_indices is not None else None,
            "decision": event.decision, "related_memory_id": event.related_memory_id,
        }
        for event in events
    ])


async def mark_superseding(session: AsyncSession, project_id: uuid.UUID,
                           memory_id: uuid.UUID, job_id: uuid.UUID,
                           replaced: uuid.UUID) -> None:
    """The ``ADD`` event a job wrote for ``memory_id`` records the memory it turned out to
    replace (decided after the write: the model's answer, or the graph step), as if the
    job had decided the supersession before writing."""
    await session.execute(
        sa.update(MemoryEvent)
        .where(MemoryEvent.project_id == project_id, MemoryEvent.memory_id == memory_id,
               MemoryEvent.job_id == job_id, MemoryEvent.event == "ADD")
        .values(decision="SUPERSEDE", related_memory_id=replaced))


async def history(session: AsyncSession, project_id: uuid.UUID,
                  memory_id: uuid.UUID) -> Sequence[MemoryEvent]:
    query = (sa.select(MemoryEvent)
             .where(MemoryEvent.project_id == project_id, MemoryEvent.memory_id == memory_id)
             .order_by(MemoryEvent.id))
    return (await session.scalars(query)).all()
