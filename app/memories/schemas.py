"""API shapes for reading and changing memories."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.domain import MemoryKind
from app.limits import MAX_MEMORY_CHARS, MAX_METADATA_BYTES
from app.store.models import Episode, Memory, MemoryEvent
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
    kind: MemoryKind = Field(description='"message": what was said, one per message of an '
                             'episode; "fact": what consolidation distilled from messages.')
    user_id: str | None
    agent_id: str | None
    run_id: str | None
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None
    valid_at: datetime | None = Field(description="Since when the fact holds, when known.")
    invalid_at: datetime | None = Field(description="When it stopped holding (superseded).")
    superseded_by: uuid.UUID | None = Field(description="The memory that replaced this one.")

    @classmethod
    def of(cls, memory: Memory, **extra: Any) -> Self:
        return cls(id=memory.id, memory=memory.text, kind=memory.kind, user_id=memory.user_id,
                   agent_id=memory.agent_id, run_id=memory.run_id, metadata=memory.metadata_,
                   created_at=memory.created_at, updated_at=memory.updated_at,
                   expires_at=memory.expires_at, valid_at=memory.valid_at,
                   invalid_at=memory.invalid_at, superseded_by=memory.superseded_by, **extra)


class SourceMessage(BaseModel):
    index: int
    role: str
    content: str


class MemorySourceRead(BaseModel):
    episode_id: uuid.UUID
    observed_at: datetime
    message_indices: list[int]
    messages: list[SourceMessage] = Field(description="The cited messages, as they were sent.")

    @classmethod
    def of(cls, episode: Episode, indices: list[int]) -> MemorySourceRead:
        messages = [SourceMessage(index=index, role=str(episode.messages[index].get("role")),
                                  content=str(episode.messages[index].get("content")))
                    for index in indices if 0 <= index < len(episode.messages)]
        return cls(episode_id=episode.id, observed_at=episode.observed_at,
                   message_indices=indices, messages=messages)


class MemoryDetail(MemoryRead):
    supersedes: list[uuid.UUID] = Field(description="The memories this one replaced.")
    sources: list[MemorySourceRead] = Field(
        description="The episodes and messages it came from: a message's own place in its "
        "episode, or the messages a fact was distilled from.")


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


class ErasureReceipt(BaseModel):
    """What an erase removed or rewrote, per store. Erased data is gone, not hidden: no list,
    search, history or graph read returns it, and no backup of ours keeps it."""

    memories: int = Field(description="Memory rows, with their vectors.")
    history_events: int = Field(description="History events of those memories.")
    episodes: int = Field(description="Conversations as sent (scope and user erases).")
    messages_redacted: int = Field(description="Messages emptied in the conversations they "
                                               "were sent in (an erased message memory).")
    contexts_rewritten: int = Field(description="Other memories whose search context quoted "
                                                "the erased words.")
    jobs: int = Field(description="Consolidation jobs of erased conversations.")
    job_results_rewritten: int = Field(description="Jobs whose results named an erased "
                                                   "memory.")
    graph_extractions: int = Field(description="Entries of the graph step's log.")
    entity_merges: int = Field(description="Recorded merges of entity names.")
    idempotency_records: int = Field(description="Stored answers to idempotent requests.")
    graph_entities: int = Field(description="Entities removed from the graph store.")
    graph_relations: int = Field(description="Relations removed from the graph store.")
    search_index: int = Field(description="Entries this server's search index dropped before "
                                          "answering (every server's index drops them as it "
                                          "reads the change log, and rewrites its snapshot "
                                          "soon after).")


class MemoryDeleted(BaseModel):
    id: uuid.UUID
    deleted: Literal[True] = True
    erased: ErasureReceipt


class ScopeDeleted(BaseModel):
    deleted: int = Field(description="Memories erased.")
    erased: ErasureReceipt


class UserErased(BaseModel):
    user_id: str
    deleted: int = Field(description="Memories erased.")
    erased: ErasureReceipt


class HistoryEventRead(BaseModel):
    id: uuid.UUID
    memory_id: uuid.UUID
    event: Literal["ADD", "UPDATE", "SUPERSEDE"]
    old_memory: str | None
    new_memory: str | None
    old_metadata: dict[str, Any] | None
    new_metadata: dict[str, Any] | None
    actor_key_id: uuid.UUID | None = Field(description="The API key of a direct change.")
    request_id: str | None
    episode_id: uuid.UUID | None = Field(description="The episode that caused a "
                                         "consolidation change.")
    job_id: uuid.UUID | None
    message_indices: list[int] | None = Field(description="The episode's messages behind it.")
    model: str | None = Field(description="The LLM that decided.")
    prompt_version: str | None
    decision: Literal["ADD", "UPDATE", "SUPERSEDE", "NOOP"] | None = Field(
        description="What consolidation decided; SUPERSEDE on an ADD marks the replacement.")
    related_memory_id: uuid.UUID | None = Field(
        description="SUPERSEDE: the memory that replaced this one; an ADD by supersession: "
        "the memory it replaced.")
    created_at: datetime

    @classmethod
    def of(cls, event: MemoryEvent) -> HistoryEventRead:
        return cls(id=event.id, memory_id=event.memory_id, event=event.event,
                   old_memory=event.old_text, new_memory=event.new_text,
                   old_metadata=event.old_metadata, new_metadata=event.new_metadata,
                   actor_key_id=event.actor_key_id, request_id=event.request_id,
                   episode_id=event.episode_id, job_id=event.job_id,
                   message_indices=event.message_indices, model=event.model,
                   prompt_version=event.prompt_version,
                   decision=event.decision,
                   related_memory_id=event.related_memory_id, created_at=event.created_at)


class HistoryRead(BaseModel):
    results: list[HistoryEventRead]


class ScopeRead(BaseModel):
    id: str = Field(description="A user, agent or run id memories are stored under.")
    memories: int = Field(description="Memory rows under it, in every state.")


class ScopePage(BaseModel):
    results: list[ScopeRead]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end.")
