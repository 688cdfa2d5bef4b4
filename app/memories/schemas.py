"""API shapes for reading and changing memories."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.limits import MAX_MEMORY_CHARS, MAX_METADATA_BYTES
from app.store.models import Memory, MemoryEvent
from app.validation import OptionalStorableStr, json_problem


def check_metadata(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """Storable (see ``json_problem``) and at most MAX_METADATA_BYTES as UTF-8 JSON."""
    if value is None:
        return None
    problem = json_problem(value)
    if problem:
        raise ValueError(problem)
    size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())
    if size > MAX_METADATA_BYTES:
        raise ValueError(f"metadata larger than {MAX_METADATA_BYTES} bytes as JSON")
    return value


class MemoryRead(BaseModel):
    id: uuid.UUID
    memory: str
    user_id: str | None
    agent_id: str | None
    run_id: str | None
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None

    @classmethod
    def of(cls, memory: Memory, **extra: Any) -> Self:
        return cls(id=memory.id, memory=memory.text, user_id=memory.user_id,
                   agent_id=memory.agent_id, run_id=memory.run_id, metadata=memory.metadata_,
                   created_at=memory.created_at, updated_at=memory.updated_at,
                   expires_at=memory.expires_at, **extra)


class MemoryPage(BaseModel):
    results: list[MemoryRead]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end."
    )


class MemoryUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: OptionalStorableStr = Field(default=None, min_length=1, max_length=MAX_MEMORY_CHARS)
    metadata: dict[str, Any] | None = Field(
        default=None, description="Replaces the memory's metadata when given."
    )

    _metadata = field_validator("metadata")(check_metadata)


class MemoryDeleted(BaseModel):
    id: uuid.UUID
    deleted: Literal[True] = True


class ScopeDeleted(BaseModel):
    deleted: int


class HistoryEventRead(BaseModel):
    id: uuid.UUID
    memory_id: uuid.UUID
    event: Literal["ADD", "UPDATE", "DELETE"]
    old_memory: str | None
    new_memory: str | None
    old_metadata: dict[str, Any] | None
    new_metadata: dict[str, Any] | None
    actor_key_id: uuid.UUID | None
    request_id: str | None
    created_at: datetime

    @classmethod
    def of(cls, event: MemoryEvent) -> HistoryEventRead:
        return cls(id=event.id, memory_id=event.memory_id, event=event.event,
                   old_memory=event.old_text, new_memory=event.new_text,
                   old_metadata=event.old_metadata, new_metadata=event.new_metadata,
                   actor_key_id=event.actor_key_id, request_id=event.request_id,
                   created_at=event.created_at)


class HistoryRead(BaseModel):
    results: list[HistoryEventRead]
