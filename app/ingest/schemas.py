"""API shapes for adding memories."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.limits import (
    MAX_ID_CHARS,
    MAX_IDEMPOTENCY_KEY_CHARS,
    MAX_INSTRUCTIONS_CHARS,
    MAX_MESSAGE_CHARS,
    MAX_MESSAGES_PER_ADD,
)
from app.memories.schemas import check_metadata
from app.validation import OptionalStorableStr, OptionalTimestamp, StorableStr

ScopeId = Field(default=None, min_length=1, max_length=MAX_ID_CHARS)


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant", "system"]
    content: StorableStr = Field(max_length=MAX_MESSAGE_CHARS)
    name: OptionalStorableStr = Field(default=None, max_length=MAX_ID_CHARS)
    metadata: dict[str, Any] | None = Field(
        default=None, description="Merged over the request's metadata for this message's "
        "memory (a turn id, a speaker).")

    _metadata = field_validator("metadata")(check_metadata)


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
    expires_at: OptionalTimestamp = Field(default=None,
                                        description="After this time the memories are gone.")
    observed_at: OptionalTimestamp = Field(
        default=None,
        description="When the conversation took place. infer=true: relative dates in it are "
        "read against this; the message memories hold from then (valid_at). Default: now. "
        "Without a time zone: UTC.")
    instructions: OptionalStorableStr = Field(
        default=None, min_length=1, max_length=MAX_INSTRUCTIONS_CHARS,
        description="Extra extraction instructions for this call, after the project's.")
    wait: bool = Field(
        default=False,
        description="infer=true: answer once the job finished (bounded; see the README) "
        "instead of at once with 202.")

    _metadata = field_validator("metadata")(check_metadata)

    @model_validator(mode="after")
    def _needs_scope(self) -> MemoryCreate:
        if self.user_id is None and self.agent_id is None and self.run_id is None:
            raise ValueError("at least one of user_id, agent_id, run_id is required")
        if not self.infer:
            if self.instructions is not None:
                raise ValueError("instructions applies to infer=true only")
            if self.wait:
                raise ValueError("wait applies to infer=true only")
        for message in self.messages:
            if message.metadata:
                check_metadata({**(self.metadata or {}), **message.metadata})
        return self


class AddedMemory(BaseModel):
    id: uuid.UUID
    memory: str
    event: Literal["ADD"] = Field(description="Each message is stored as a memory of its own "
                                  "(kind message), also when its words were said before.")


class AddResponse(BaseModel):
    results: list[AddedMemory]
