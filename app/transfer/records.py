"""The lines of an export file, one JSON object each, told apart by ``record``: the shapes an
import validates every line against before it writes anything, with the same input types as
the API (``app.validation``: no NUL characters or lone surrogates, storable JSON, timestamps
in range) and the API's limits.

Vectors travel as base64 of little-endian float32 (``f32le-base64``: exact, and a quarter the
size of JSON numbers); a hand-written file may give a list of numbers instead, or none at all
(the import then embeds the text).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import uuid
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    TypeAdapter,
    field_validator,
    model_validator,
)

from app.domain import KINDS, MemoryKind, normalise
from app.limits import (
    MAX_ID_CHARS,
    MAX_INSTRUCTIONS_CHARS,
    MAX_MEMORY_CHARS,
    MAX_MESSAGE_CHARS,
    MAX_METADATA_BYTES,
)
from app.store.graph.base import ENTITY_TYPES, entity_type, relation_type
from app.validation import (
    OptionalStorableStr,
    OptionalTimestamp,
    StorableStr,
    Timestamp,
    json_problem,
)

FORMAT = "anamnesis.export"
VERSION = 1
ENCODING: Literal["f32le-base64"] = "f32le-base64"
MAX_LINE_BYTES = 16 * 1024 * 1024
MAX_DIMENSION = 16_000  # pgvector's limit
MAX_EPISODE_MESSAGES = 10_000
MAX_INDICES = 10_000
MAX_PAYLOAD_BYTES = 1024 * 1024
MAX_CONTEXT_CHARS = 8_000

Name = Annotated[StorableStr, Field(min_length=1, max_length=MAX_ID_CHARS)]
Indices = Annotated[list[Annotated[int, Field(ge=0, le=2**31 - 1)]],
                    Field(max_length=MAX_INDICES)]
Vector = str | list[float] | None


def storable_json(value: Any, limit: int) -> Any:
    """``value`` if Postgres can store it as JSON within ``limit`` bytes."""
    if value is None:
        return None
    problem = json_problem(value)
    if problem:
        raise ValueError(problem)
    if len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()) > limit:
        raise ValueError(f"larger than {limit} bytes as JSON")
    return value


def _metadata(value: Any) -> Any:
    return storable_json(value, MAX_METADATA_BYTES)


def decode_vector(value: Vector) -> np.ndarray[Any, np.dtype[np.float32]] | None:
    """The vector a line carries (base64 of little-endian float32, or numbers), or None."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("embedding: not base64") from None
        if not raw or len(raw) % 4:
            raise ValueError("embedding: not a whole number of float32 values")
        vector = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    else:
        vector = np.asarray(value, dtype=np.float32)
    if not 0 < vector.size <= MAX_DIMENSION:
        raise ValueError(f"embedding: 1 to {MAX_DIMENSION} values")
    if not np.isfinite(vector).all():
        raise ValueError("embedding: numbers must be finite")
    return vector


def encode_vector(vector: Any) -> str:
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()


class Line(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Scoped(Line):
    user_id: OptionalStorableStr = Field(default=None, min_length=1, max_length=MAX_ID_CHARS)
    agent_id: OptionalStorableStr = Field(default=None, min_length=1, max_length=MAX_ID_CHARS)
    run_id: OptionalStorableStr = Field(default=None, min_length=1, max_length=MAX_ID_CHARS)

    def needs_scope(self) -> None:
        if self.user_id is None and self.agent_id is None and self.run_id is None:
            raise ValueError("at least one of user_id, agent_id, run_id is required")


class ProjectInfo(Line):
    id: uuid.UUID | None = None
    name: OptionalStorableStr = Field(default=None, max_length=MAX_ID_CHARS)


class EmbeddingInfo(Line):
    model: Name
    dimension: int = Field(ge=1, le=MAX_DIMENSION)
    encoding: Literal["f32le-base64"] = ENCODING


class Header(Line):
    record: Literal["header"]
    format: Literal["anamnesis.export"]
    version: Literal[1]
    project: ProjectInfo = Field(default_factory=ProjectInfo)
    embedding: EmbeddingInfo
    exported_at: OptionalTimestamp = None


class EpisodeLine(Scoped):
    record: Literal["episode"]
    id: uuid.UUID
    messages: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_EPISODE_MESSAGES)
    metadata: dict[str, Any] = Field(default_factory=dict)
    instructions: OptionalStorableStr = Field(default=None, max_length=MAX_INSTRUCTIONS_CHARS)
    observed_at: Timestamp
    expires_at: OptionalTimestamp = None
    created_at: OptionalTimestamp = None

    _metadata = field_validator("metadata")(_metadata)

    @field_validator("messages")
    @classmethod
    def _messages(cls, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for index, message in enumerate(messages):
            content, role = message.get("content"), message.get("role")
            if not isinstance(role, str) or not isinstance(content, str):
                raise ValueError(f"message {index}: role and content must be strings")
            if len(content) > MAX_MESSAGE_CHARS:
                raise ValueError(f"message {index}: content longer than {MAX_MESSAGE_CHARS}")
            problem = json_problem(message)
            if problem:
                raise ValueError(f"message {index}: {problem}")
        return messages

    @model_validator(mode="after")
    def _scope(self) -> EpisodeLine:
        self.needs_scope()
        return self


class Embedded(Scoped):
    """A line that may carry a vector: of ``embedding_model`` (else the header's model)."""

    embedding: Vector = None
    embedding_model: OptionalStorableStr = Field(default=None, max_length=MAX_ID_CHARS)
    _vector: np.ndarray[Any, np.dtype[np.float32]] | None = PrivateAttr(default=None)

    @property
    def vector(self) -> np.ndarray[Any, np.dtype[np.float32]] | None:
        return self._vector

    def _decode(self) -> None:
        self._vector = decode_vector(self.embedding)
        self.embedding = None  # decoded once; the array is what is kept


class MemoryLine(Embedded):
    record: Literal["memory"]
    id: uuid.UUID
    kind: MemoryKind = "fact"
    text: StorableStr = Field(min_length=1, max_length=MAX_MEMORY_CHARS)
    metadata: dict[str, Any] = Field(default_factory=dict)
    context: OptionalStorableStr = Field(default=None, max_length=MAX_CONTEXT_CHARS)
    conversation_id: uuid.UUID | None = None
    turn: int | None = Field(default=None, ge=0, le=2**31 - 1)
    created_at: OptionalTimestamp = None
    updated_at: OptionalTimestamp = None
    expires_at: OptionalTimestamp = None
    valid_at: OptionalTimestamp = None
    invalid_at: OptionalTimestamp = None
    superseded_by: uuid.UUID | None = None
    lasting: bool | None = None  # a fact's: a state (true), an event (false), unknown (null)

    _metadata = field_validator("metadata")(_metadata)

    @model_validator(mode="after")
    def _checks(self) -> MemoryLine:
        self.needs_scope()
        if not normalise(self.text):
            raise ValueError("text must not be blank")
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}")
        if self.superseded_by == self.id:
            raise ValueError("a memory cannot supersede itself")
        self._decode()
        return self


class SourceLine(Line):
    record: Literal["source"]
    memory_id: uuid.UUID
    episode_id: uuid.UUID
    message_indices: Indices
    created_at: OptionalTimestamp = None


class EventLine(Line):
    record: Literal["event"]
    id: uuid.UUID
    memory_id: uuid.UUID
    event: Literal["ADD", "UPDATE", "SUPERSEDE"]
    old_memory: OptionalStorableStr = Field(default=None, max_length=MAX_MEMORY_CHARS)
    new_memory: OptionalStorableStr = Field(default=None, max_length=MAX_MEMORY_CHARS)
    old_metadata: dict[str, Any] | None = None
    new_metadata: dict[str, Any] | None = None
    actor_key_id: uuid.UUID | None = None
    request_id: OptionalStorableStr = Field(default=None, max_length=128)
    episode_id: uuid.UUID | None = None
    job_id: uuid.UUID | None = None
    message_indices: Indices | None = None
    model: OptionalStorableStr = Field(default=None, max_length=MAX_ID_CHARS)
    prompt_version: OptionalStorableStr = Field(default=None, max_length=64)
    decision: Literal["ADD", "UPDATE", "SUPERSEDE", "NOOP"] | None = None
    related_memory_id: uuid.UUID | None = None
    created_at: OptionalTimestamp = None

    _metadata = field_validator("old_metadata", "new_metadata")(_metadata)


class ExtractionLine(Scoped):
    record: Literal["extraction"]
    id: uuid.UUID
    episode_id: uuid.UUID | None = None
    job_id: uuid.UUID | None = None
    payload: dict[str, Any]
    observed_at: Timestamp
    created_at: OptionalTimestamp = None
    applied_at: OptionalTimestamp = None

    @field_validator("payload")
    @classmethod
    def _payload(cls, value: dict[str, Any]) -> dict[str, Any]:
        checked: dict[str, Any] = storable_json(value, MAX_PAYLOAD_BYTES)
        return checked


class EntityLine(Embedded):
    record: Literal["entity"]
    id: uuid.UUID
    name: Name
    type: str = Field(description="One of the graph store's entity types.")
    summary: StorableStr = Field(default="", max_length=MAX_MESSAGE_CHARS)
    created_at: Timestamp
    updated_at: OptionalTimestamp = None
    memories: list[uuid.UUID] = Field(default_factory=list, max_length=1_000_000)

    @model_validator(mode="after")
    def _checks(self) -> EntityLine:
        if entity_type(self.type) != self.type:
            raise ValueError(f"type must be one of {', '.join(ENTITY_TYPES)}")
        self._decode()
        return self


class RelationLine(Scoped):
    record: Literal["relation"]
    id: uuid.UUID
    source_id: uuid.UUID
    target_id: uuid.UUID
    type: str
    source_name: Name
    target_name: Name
    valid_at: Timestamp
    invalid_at: OptionalTimestamp = None
    memory_id: uuid.UUID | None = None
    episode_id: uuid.UUID | None = None
    created_at: Timestamp

    @model_validator(mode="after")
    def _ends(self) -> RelationLine:
        if relation_type(self.type) != self.type:
            raise ValueError("type must be snake_case: a-z, 0-9 and _, at most 63 characters")
        if self.source_id == self.target_id:
            raise ValueError("a relation joins two entities")
        return self


class MergeLine(Line):
    record: Literal["merge"]
    id: uuid.UUID
    entity_id: uuid.UUID
    alias: Name
    reason: StorableStr = Field(min_length=1, max_length=32)
    score: float
    extraction_id: uuid.UUID | None = None
    created_at: OptionalTimestamp = None
    undone_at: OptionalTimestamp = None

    @field_validator("score")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be finite")
        return value


Record = (Header | EpisodeLine | MemoryLine | SourceLine | EventLine | ExtractionLine
          | EntityLine | RelationLine | MergeLine)
RECORDS = ("episode", "memory", "source", "event", "extraction", "entity", "merge",
           "relation")
LINE = TypeAdapter[Record](Annotated[Record, Field(discriminator="record")])


def parse(raw: bytes) -> Record:
    """One line, validated: ``pydantic.ValidationError`` if it is not a line of the format
    (text with NUL characters or lone surrogates included, whether escaped or not)."""
    return LINE.validate_json(raw)
