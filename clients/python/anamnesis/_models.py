"""Request and response models.

Response models accept (and keep, as extra attributes) fields this SDK version does not know,
so a newer server does not break an older client.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

T = TypeVar("T")

FINISHED = frozenset({"SUCCEEDED", "FAILED"})


class _Response(BaseModel):
    model_config = ConfigDict(extra="allow")


class Message(BaseModel):
    """One conversation turn sent to ``add``."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant", "system"]
    content: str
    name: str | None = None


class AddedMemory(_Response):
    """One message ``add`` stored as a memory (``event`` ``"ADD"``): a message is an event, so
    the same words sent again are stored again."""

    id: str
    memory: str
    event: str


class AddResult(_Response):
    """Answer to ``add(..., infer=False)``: one entry per distinct non-empty message."""

    results: list[AddedMemory] = Field(default_factory=list)


class JobResult(_Response):
    """One memory a consolidation job wrote or confirmed.

    ``event`` is ``"ADD"``, ``"UPDATE"`` (``previous_memory`` holds the text before),
    ``"SUPERSEDE"`` (``id`` is the new memory; ``previous_id``/``previous_memory`` the one that
    stopped being true) or ``"NOOP"`` (already known).
    """

    id: str
    memory: str
    event: str
    previous_memory: str | None = None
    previous_id: str | None = None


class JobError(_Response):
    """Why a job failed (``code`` is stable, e.g. ``"llm_bad_output"``), or, while it is
    PENDING again, why its last attempt did."""

    code: str
    detail: str


class JobUsage(_Response):
    """What the job's LLM calls cost, failed calls included."""

    model: str | None = None
    llm_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Job(_Response):
    """A consolidation job (``add(..., infer=True)``): one stored episode distilled into memories.

    The immediate answer to ``add`` carries only ``id`` and ``status`` (``"PENDING"``); the
    other fields keep their defaults until the job is read with ``get_job`` / ``wait_for_job``
    (or ``add(..., wait=True)`` returns it). ``status`` goes PENDING → RUNNING → SUCCEEDED or
    FAILED; a transient failure puts it back to PENDING for another attempt.
    """

    id: str
    status: str
    episode_id: str | None = None
    results: list[JobResult] = Field(default_factory=list)
    error: JobError | None = None
    attempts: int = 0
    usage: JobUsage = Field(default_factory=JobUsage)
    created_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None

    @model_validator(mode="before")
    @classmethod
    def _accepted_shape(cls, data: Any) -> Any:
        # The 202 answer names the id ``job_id``; the job resource names it ``id``.
        if isinstance(data, dict) and "id" not in data and "job_id" in data:
            return {("id" if key == "job_id" else key): value for key, value in data.items()}
        return data

    @property
    def done(self) -> bool:
        """True once the job is SUCCEEDED or FAILED (it will not change again unless retried)."""
        return self.status in FINISHED


class Memory(_Response):
    """A stored memory, scoped by whichever of ``user_id``/``agent_id``/``run_id`` were set.

    ``kind`` is ``"message"`` (what was said, one per message sent) or ``"fact"`` (what
    consolidation distilled from messages). ``valid_at`` is since when it holds (when known);
    a superseded memory has ``invalid_at`` set and ``superseded_by`` naming the memory that
    replaced it.
    """

    id: str
    memory: str
    kind: str = "fact"
    user_id: str | None = None
    agent_id: str | None = None
    run_id: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None = None
    valid_at: datetime | None = None
    invalid_at: datetime | None = None
    superseded_by: str | None = None


class SourceMessage(_Response):
    """One message of an episode, as it was sent; ``index`` is its position in the episode."""

    index: int
    role: str
    content: str


class MemorySource(_Response):
    """An episode a memory was distilled from, and the messages of it that state the fact."""

    episode_id: str
    observed_at: datetime
    message_indices: list[int] = Field(default_factory=list)
    messages: list[SourceMessage] = Field(default_factory=list)


class MemoryDetail(Memory):
    """A memory as ``get`` returns it: with ``supersedes`` (ids of the memories it replaced)
    and ``sources`` (empty for memories stored verbatim)."""

    supersedes: list[str] = Field(default_factory=list)
    sources: list[MemorySource] = Field(default_factory=list)


class SearchHit(Memory):
    """A memory returned by ``search``: ``score`` is what the results are ordered by (higher
    first), ``similarity`` its cosine similarity to the query, ``explain`` (when asked for)
    the ranks and scores per signal behind ``score``, ``context`` (when asked for) the
    messages around it: a message's neighbouring turns, a fact's source messages."""

    score: float
    similarity: float | None = None
    explain: dict[str, Any] | None = None
    context: list[Memory] | None = None


class Relation(_Response):
    """A relation of the graph, from the entity ``source_id`` to ``target_id``, as a memory
    stated it (``memory_id``, from ``episode_id``). ``source_name``/``target_name`` are the names
    the conversation used; it held from ``valid_at`` until ``invalid_at`` (None: still holds)."""

    id: str
    source_id: str
    source_name: str
    type: str
    target_id: str
    target_name: str
    valid_at: datetime
    invalid_at: datetime | None = None
    memory_id: str | None = None
    episode_id: str | None = None


class SearchResults(_Response):
    """The body of a search answer (``search`` returns it as :class:`SearchHits`)."""

    results: list[SearchHit]
    relations: list[Relation] | None = None


class SearchHits(list[SearchHit]):
    """What ``search`` returns: the hits, best first, as a list; with ``relations=True`` also
    ``relations``, the current relations among the hits' entities (``None`` when not asked)."""

    def __init__(self, hits: list[SearchHit], relations: list[Relation] | None = None) -> None:
        super().__init__(hits)
        self.relations = relations


class Entity(_Response):
    """Someone or something the memories of a scope talk about (a node of the graph)."""

    id: str
    name: str
    type: str
    summary: str = ""
    user_id: str | None = None
    agent_id: str | None = None
    run_id: str | None = None
    created_at: datetime
    updated_at: datetime


class EntityAlias(_Response):
    """Another name merged into an entity, why (``reason``) and how alike it was (``score``)."""

    alias: str
    reason: str
    score: float
    created_at: datetime


class EntityDetail(Entity):
    """An entity as ``get_entity`` returns it: its current relations (both ways), the current
    memories that mention it, and the names merged into it (undo one with ``unmerge_entity``)."""

    relations: list[Relation] = Field(default_factory=list)
    memories: list[Memory] = Field(default_factory=list)
    aliases: list[EntityAlias] = Field(default_factory=list)


class Neighbor(_Response):
    """An entity ``distance`` relations away from the one asked about."""

    entity: Entity
    distance: int


class Unmerged(_Response):
    """What ``unmerge_entity`` did: ``split`` is the alias as an entity of its own, ``entity``
    the entity without it (``None`` when only the alias's mentions ever made it), ``undone``
    how many merge records were undone."""

    entity: Entity | None = None
    split: Entity | None = None
    undone: int


class Key(_Response):
    """An API key of the project, as listed: never the key itself, only its ``prefix``.
    ``scopes`` are among ``"read"``, ``"write"`` and ``"admin"``."""

    id: str
    prefix: str
    name: str | None = None
    scopes: list[str]
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


class KeyCreated(Key):
    """A new key: ``key`` is the secret, returned this once (only its hash is stored)."""

    key: str


class RecordCounts(_Response):
    """What an import did with one record type: written, already there, or skipped."""

    inserted: int = 0
    present: int = 0
    skipped: int = 0


class SkippedLine(_Response):
    """A line an import left out, and why."""

    line: int
    record: str
    reason: str


class ImportReceipt(_Response):
    """What ``import_project`` did: counts per record type (``records``), vectors taken from the
    file or embedded again, supersessions whose replacement is missing, the first lines it
    skipped and how long it took."""

    lines: int
    records: dict[str, RecordCounts] = Field(default_factory=dict)
    vectors_given: int = 0
    vectors_embedded: int = 0
    unresolved_supersessions: int = 0
    skipped: list[SkippedLine] = Field(default_factory=list)
    seconds: float


class HistoryEvent(_Response):
    """One change to a memory. ``event`` is ``"ADD"``, ``"UPDATE"``, ``"SUPERSEDE"`` or
    ``"DELETE"``.

    A direct API change names ``actor_key_id`` and ``request_id``; a consolidation change
    names ``episode_id``, ``job_id``, the episode's ``message_indices`` behind it, the ``model``
    and ``prompt_version`` that decided, and the ``decision`` taken. ``related_memory_id`` is,
    on a SUPERSEDE, the memory that replaced this one and, on an ADD by supersession, the
    memory it replaced.
    """

    id: str
    memory_id: str
    event: str
    old_memory: str | None = None
    new_memory: str | None = None
    old_metadata: dict[str, Any] | None = None
    new_metadata: dict[str, Any] | None = None
    actor_key_id: str | None = None
    request_id: str | None = None
    episode_id: str | None = None
    job_id: str | None = None
    message_indices: list[int] | None = None
    model: str | None = None
    prompt_version: str | None = None
    decision: str | None = None
    related_memory_id: str | None = None
    created_at: datetime


class Project(_Response):
    """The project the API key belongs to; ``instructions`` apply to every episode's
    extraction (``None`` when unset)."""

    id: str
    name: str
    instructions: str | None = None
    created_at: datetime


class Results(_Response, Generic[T]):
    """Envelope ``{"results": [...], "next_cursor"?: ...}`` shared by list-shaped answers."""

    results: list[T]
    next_cursor: str | None = None


class ScopeCount(_Response):
    """A user, agent or run id the project's memories are stored under (``scopes``)."""

    id: str
    memories: int  # memories under it, in every state


class Deleted(_Response):
    """Answer to the bulk delete: how many memories were deleted."""

    deleted: int


class Health(_Response):
    status: str
