"""API shapes for adding memories."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.limits import (
    MAX_ID_CHARS,
    MAX_IDEMPOTENCY_KEY_CHARS,
    MAX_MESSAGE_CHARS,
    MAX_MESSAGES_PER_ADD,
)
from app.memories.schemas import check_metadata
from app.validation import OptionalStorableStr, StorableStr

ScopeId = Field(default=None, min_length=1, max_length=MAX_ID_CHARS)


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant", "system"]
    content: StorableStr = Field(max_length=MAX_MESSAGE_CHARS)
    name: OptionalStorableStr = Field(default=None, max_length=MAX_ID_CHARS)


class MemoryCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES_PER_ADD)
    user_id: OptionalStorableStr = ScopeId
    agent_id: OptionalStorableStr = ScopeId
    run_id: OptionalStorableStr = ScopeId
    metadata: dict[str, Any] | None = None
    infer: bool = Field(default=True, description="Distil with the LLM (true) or store verbatim.")
    idempotency_key: OptionalStorableStr = Field(default=None, min_length=1,
                                        max_length=MAX_IDEMPOTENCY_KEY_CHARS)
    expires_at: datetime | None = Field(default=None,
                                        description="After this time the memories are gone.")

    _metadata = field_validator("metadata")(check_metadata)

    @model_validator(mode="after")
    def _needs_scope(self) -> MemoryCreate:
        if self.user_id is None and self.agent_id is None and self.run_id is None:
            raise ValueError("at least one of user_id, agent_id, run_id is required")
        return self


class AddedMemory(BaseModel):
    id: uuid.UUID
    memory: str
    event: Literal["ADD", "NOOP"]


class AddResponse(BaseModel):
    results: list[AddedMemory]
