"""The Mem0 OSS REST server's request bodies. Its ``filters`` are read as Mem0 OSS reads
them: a key that is not an entity id or a time is a metadata key."""

from __future__ import annotations

from typing import Any, ClassVar, Self

from pydantic import Field, field_validator, model_validator

from app.compat.mem0.schemas import Mem0Request, ScopeId
from app.ingest.schemas import Message
from app.limits import MAX_MEMORY_CHARS, MAX_MESSAGES_PER_ADD, MAX_QUERY_CHARS, MAX_TOP_K
from app.memories.schemas import check_metadata
from app.validation import OptionalStorableStr, StorableStr


class OssAdd(Mem0Request):
    """``POST /memories``: answered once consolidated, as the OSS server answers."""

    REFUSED: ClassVar[dict[str, str]] = {
        "memory_type": "memories are facts and messages",
        "prompt": "the extraction prompt is the server's",
    }

    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES_PER_ADD)
    user_id: OptionalStorableStr = ScopeId
    agent_id: OptionalStorableStr = ScopeId
    run_id: OptionalStorableStr = ScopeId
    metadata: dict[str, Any] | None = None
    infer: bool = True
    memory_type: Any = None
    prompt: Any = None


class OssSearch(Mem0Request):
    """``POST /search``; ``limit`` (Mem0 1.x) and ``top_k`` (2.x) are the same number."""

    query: StorableStr = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    user_id: OptionalStorableStr = ScopeId
    agent_id: OptionalStorableStr = ScopeId
    run_id: OptionalStorableStr = ScopeId
    filters: dict[str, Any] | None = None
    top_k: int | None = Field(default=None, ge=1, le=MAX_TOP_K)
    limit: int | None = Field(default=None, ge=1, le=MAX_TOP_K)
    threshold: float | None = Field(default=None, ge=-1.0, le=1.0)
    rerank: Any = Field(default=None, description="A Mem0 hint: accepted and ignored.")


class OssUpdate(Mem0Request):
    """``PUT /memories/{id}``: the new text as ``text`` (or Mem0 OSS's ``data``), and/or
    metadata."""

    text: OptionalStorableStr = Field(default=None, min_length=1, max_length=MAX_MEMORY_CHARS)
    data: OptionalStorableStr = Field(default=None, min_length=1, max_length=MAX_MEMORY_CHARS)
    metadata: dict[str, Any] | None = None

    _metadata = field_validator("metadata")(check_metadata)

    @model_validator(mode="after")
    def _one_text(self) -> Self:
        if self.text is not None and self.data is not None:
            raise ValueError("give the new text as text or as data, not both")
        return self
