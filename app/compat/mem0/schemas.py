"""Mem0's request and response shapes, as ``mem0ai`` 2.x sends and reads them.

Every request model refuses fields it does not know (422 naming them). Of the fields Mem0
knows, each is one of: honoured (translated onto the native request), a hint (accepted and
ignored, as Mem0 itself treats it as optional: an output format, an API version, a
reranking wish, ids the key already decides), or refused when given, with the reason, as
Anamnesis cannot honour it and ignoring it would answer something else than was asked.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.domain import MemoryKind
from app.ingest.schemas import Message
from app.limits import (
    MAX_ID_CHARS,
    MAX_INSTRUCTIONS_CHARS,
    MAX_MEMORY_CHARS,
    MAX_MESSAGES_PER_ADD,
    MAX_PAGE_SIZE,
    MAX_QUERY_CHARS,
    MAX_TOP_K,
)
from app.memories.schemas import check_metadata
from app.validation import OptionalStorableStr, OptionalTimestamp, StorableStr

ScopeId = Field(default=None, min_length=1, max_length=MAX_ID_CHARS)
Hint = Field(default=None, description="A Mem0 hint: accepted and ignored.")
ENTITY_KEYS = ("user_id", "agent_id", "run_id", "app_id")
QUEUED = "Memory processing has been queued for background execution"


class Mem0Request(BaseModel):
    """Unknown fields are refused; ``REFUSED`` fields are refused when given (anything but
    null or false, which ask for nothing), with why."""

    model_config = ConfigDict(extra="forbid")
    REFUSED: ClassVar[dict[str, str]] = {}

    @model_validator(mode="after")
    def _refuse(self) -> Self:
        for name, why in self.REFUSED.items():
            value = getattr(self, name)
            if value is not None and value is not False:
                raise ValueError(f"{name}: not supported by Anamnesis: {why}")
        return self


class AddRequest(Mem0Request):
    """``POST /v1/memories/`` and ``/v3/memories/add/``."""

    REFUSED: ClassVar[dict[str, str]] = {
        "custom_categories": "memories are not categorised",
        "includes": "give custom_instructions instead",
        "excludes": "give custom_instructions instead",
        "agent_custom_instructions": "give custom_instructions instead",
        "structured_data_schema": "memories are text with metadata",
        "immutable": "every memory can be updated",
    }

    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES_PER_ADD)
    user_id: OptionalStorableStr = ScopeId
    agent_id: OptionalStorableStr = ScopeId
    run_id: OptionalStorableStr = ScopeId
    app_id: OptionalStorableStr = Field(default=None, min_length=1, max_length=MAX_ID_CHARS,
                                        description="Kept as the metadata key app_id.")
    filters: dict[str, Any] | None = Field(
        default=None, description="Entity ids only (user_id, agent_id, run_id, app_id).")
    metadata: dict[str, Any] | None = None
    infer: bool = True
    async_mode: bool = Field(default=True, description="false: answer once consolidated.")
    timestamp: OptionalTimestamp = Field(default=None, description="When it was said.")
    expiration_date: date | None = Field(default=None,
                                         description="Gone from the start of that day (UTC).")
    custom_instructions: OptionalStorableStr = Field(default=None, min_length=1,
                                                     max_length=MAX_INSTRUCTIONS_CHARS)
    immutable: Any = None
    custom_categories: Any = None
    includes: Any = None
    excludes: Any = None
    agent_custom_instructions: Any = None
    structured_data_schema: Any = None
    output_format: Any = Hint
    version: Any = Hint
    enable_graph: Any = Hint
    org_id: Any = Hint
    project_id: Any = Hint

    _metadata = field_validator("metadata")(check_metadata)

    @field_validator("filters")
    @classmethod
    def _entities_only(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        for key, item in (value or {}).items():
            if key not in ENTITY_KEYS or not isinstance(item, str) or not item:
                raise ValueError(f"an add's filters name entity ids only ({', '.join(ENTITY_KEYS)}"
                                 f" as strings), not {key!r}")
        return value


class SearchRequest(Mem0Request):
    """``POST /v2/memories/search/`` and ``/v3/memories/search/``."""

    REFUSED: ClassVar[dict[str, str]] = {
        "categories": "memories are not categorised",
        "reference_date": "relative dates in the query are read against today",
        "metadata": "filter on metadata with filters={'metadata': {...}}",
        "show_expired": "an expired memory is gone",
    }

    query: StorableStr = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    filters: dict[str, Any] | None = None
    user_id: OptionalStorableStr = ScopeId
    agent_id: OptionalStorableStr = ScopeId
    run_id: OptionalStorableStr = ScopeId
    app_id: OptionalStorableStr = ScopeId
    top_k: int = Field(default=10, ge=1, le=MAX_TOP_K)
    threshold: float | None = Field(default=None, ge=-1.0, le=1.0)
    latest_only: bool | None = Field(default=None,
                                     description="false: superseded memories too.")
    show_expired: Any = None
    categories: Any = None
    reference_date: Any = None
    metadata: Any = None
    rerank: Any = Hint
    keyword_search: Any = Hint
    fields: Any = Hint
    filter_memories: Any = Hint
    enable_graph: Any = Hint
    output_format: Any = Hint
    version: Any = Hint
    org_id: Any = Hint
    project_id: Any = Hint


class ListRequest(Mem0Request):
    """The body of ``POST /v2/memories/`` and ``/v3/memories/`` (``page`` and ``page_size``
    are query parameters)."""

    REFUSED: ClassVar[dict[str, str]] = {"categories": "memories are not categorised",
                                         "show_expired": "an expired memory is gone"}

    filters: dict[str, Any] | None = None
    user_id: OptionalStorableStr = ScopeId
    agent_id: OptionalStorableStr = ScopeId
    run_id: OptionalStorableStr = ScopeId
    app_id: OptionalStorableStr = ScopeId
    start_date: OptionalTimestamp = Field(default=None, description="created_at on or after.")
    end_date: OptionalTimestamp = Field(default=None, description="created_at on or before.")
    latest_only: bool | None = None
    show_expired: Any = None
    categories: Any = None
    fields: Any = Hint
    enable_graph: Any = Hint
    output_format: Any = Hint
    version: Any = Hint
    org_id: Any = Hint
    project_id: Any = Hint


class UpdateRequest(Mem0Request):
    """``PUT /v1/memories/{id}/``: new text and/or metadata (the old ones go to history)."""

    REFUSED: ClassVar[dict[str, str]] = {"timestamp": "a memory keeps when it was stored"}

    text: OptionalStorableStr = Field(default=None, min_length=1, max_length=MAX_MEMORY_CHARS)
    metadata: dict[str, Any] | None = None
    timestamp: Any = None
    expiration_date: Any = None

    _metadata = field_validator("metadata")(check_metadata)

    @model_validator(mode="after")
    def _no_expiry_change(self) -> Self:
        # Sent only when a caller names it (None clears it in Mem0): either way a change.
        if "expiration_date" in self.model_fields_set:
            raise ValueError("expiration_date: not supported by Anamnesis: a memory's expiry "
                             "is set when it is added")
        return self


class BatchUpdateItem(Mem0Request):
    memory_id: uuid.UUID
    text: OptionalStorableStr = Field(default=None, min_length=1, max_length=MAX_MEMORY_CHARS)
    metadata: dict[str, Any] | None = None

    _metadata = field_validator("metadata")(check_metadata)


class BatchUpdate(Mem0Request):
    memories: list[BatchUpdateItem] = Field(min_length=1, max_length=MAX_PAGE_SIZE)


class BatchDeleteItem(Mem0Request):
    memory_id: uuid.UUID


class BatchDelete(Mem0Request):
    memories: list[BatchDeleteItem] = Field(min_length=1, max_length=MAX_PAGE_SIZE)


# -- responses ---------------------------------------------------------------------------------


class Mem0Memory(BaseModel):
    """A memory as Mem0 shows one; ``kind`` is Anamnesis's own (``message`` or ``fact``)."""

    id: uuid.UUID
    memory: str
    user_id: str | None
    agent_id: str | None
    run_id: str | None
    app_id: str | None
    metadata: dict[str, Any]
    categories: list[str] = Field(description="Always empty: memories are not categorised.")
    immutable: bool = False
    expiration_date: date | None
    created_at: datetime
    updated_at: datetime
    kind: MemoryKind


class Mem0Hit(Mem0Memory):
    score: float


class SearchResults(BaseModel):
    results: list[Mem0Hit]


class MemoryResults(BaseModel):
    results: list[Mem0Memory]


class MemoryList(BaseModel):
    count: int
    next: str | None
    previous: str | None
    results: list[Mem0Memory]


class Queued(BaseModel):
    """An inferred add, queued: ``event_id`` is the consolidation job's id."""

    message: str = QUEUED
    status: Literal["PENDING"] = "PENDING"
    event_id: uuid.UUID


class QueuedList(BaseModel):
    results: list[Queued]


class AddedMemory(BaseModel):
    id: uuid.UUID
    memory: str
    event: Literal["ADD", "UPDATE"]
    previous_memory: str | None = None


class Added(BaseModel):
    """What an add wrote: the messages (``infer: false``) or, once its job finished, the
    facts consolidation added or changed (``status`` and ``event_id`` are the job's)."""

    results: list[AddedMemory]
    status: Literal["PENDING", "RUNNING", "SUCCEEDED", "FAILED"]
    event_id: uuid.UUID | None


class HistoryItem(BaseModel):
    id: uuid.UUID
    memory_id: uuid.UUID
    event: Literal["ADD", "UPDATE", "SUPERSEDE"]
    old_memory: str | None
    new_memory: str | None
    metadata: dict[str, Any] | None
    input: list[dict[str, Any]] = Field(default_factory=list)
    categories: list[str] = Field(default_factory=list)
    is_deleted: bool = False
    created_at: datetime
    updated_at: datetime


class Entity(BaseModel):
    id: str
    name: str
    type: Literal["user", "agent", "run"]
    total_memories: int
    created_at: datetime
    updated_at: datetime
    metadata: dict[str, Any] = Field(default_factory=dict)


class EntityList(BaseModel):
    results: list[Entity]


class Notice(BaseModel):
    """A Mem0 confirmation: what was done, in words."""

    message: str


class Ping(BaseModel):
    """The key's project. Mem0's clients need an organisation too: Anamnesis has none, so
    each project is its own (``org_id`` is the project's id)."""

    status: Literal["ok"] = "ok"
    org_id: uuid.UUID
    project_id: uuid.UUID
    user_email: None = None


class Event(BaseModel):
    """``GET /v1/event/{event_id}/``: an add's consolidation job."""

    id: uuid.UUID
    event_type: Literal["ADD"] = "ADD"
    status: Literal["PENDING", "RUNNING", "SUCCEEDED", "FAILED"]
    results: list[AddedMemory]
    created_at: datetime
    updated_at: datetime
