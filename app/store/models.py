"""ORM tables. Postgres is the source of truth; every row carries its project."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Computed,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    func,
)
from sqlalchemy import (
    text as sql_text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TSVECTOR, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from app.store.ids import uuid7


class Base(DeclarativeBase):
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads this class attribute
        dict[str, Any]: JSONB,
        datetime: DateTime(timezone=True),
        uuid.UUID: UUID(as_uuid=True),
    }


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    instructions: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"),
                                                  index=True)
    name: Mapped[str | None] = mapped_column(String(255))
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    key_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    # What the key may do: read, write, admin (migration 0012).
    scopes: Mapped[list[str]] = mapped_column(
        ARRAY(String(16)), server_default=sql_text("'{read,write,admin}'"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class Memory(Base):
    __tablename__ = "memories"
    __table_args__ = (
        Index(
            "uq_memories_live_content",
            "project_id", "user_id", "agent_id", "run_id", "content_hash",
            unique=True,
            postgresql_where=sql_text(
                "deleted_at IS NULL AND invalid_at IS NULL AND kind = 'fact'"),
            postgresql_nulls_not_distinct=True,
        ),
        Index("ix_memories_project_user", "project_id", "user_id", "id"),
        Index("ix_memories_project_agent", "project_id", "agent_id", "id"),
        Index("ix_memories_project_run", "project_id", "run_id", "id"),
        Index("ix_memories_metadata", "metadata", postgresql_using="gin",
              postgresql_ops={"metadata": "jsonb_path_ops"}),
        Index("ix_memories_embedding_hnsw", "embedding", postgresql_using="hnsw",
              postgresql_ops={"embedding": "vector_cosine_ops"},
              postgresql_with={"m": 16, "ef_construction": 64}),
        Index("ix_memories_superseded_by", "superseded_by",
              postgresql_where=sql_text("superseded_by IS NOT NULL")),
        Index("ix_memories_lexical", "lexical", postgresql_using="gin"),
        Index("ix_memories_conversation_turn", "project_id", "conversation_id", "turn",
              postgresql_where=sql_text("conversation_id IS NOT NULL")),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    user_id: Mapped[str | None] = mapped_column(String(255))
    agent_id: Mapped[str | None] = mapped_column(String(255))
    run_id: Mapped[str | None] = mapped_column(String(255))
    # "message": what was said, one per message of an episode; "fact": what consolidation
    # distilled (unique per scope by content).
    kind: Mapped[str] = mapped_column(String(16), server_default="fact")
    # Facts only: whether a later fact may end it (a state: lives in, works at, likes) or
    # not (an event, true once told: went to, met); null when unknown (written by a client,
    # imported, or consolidated before migration 0014), which counts as a state.
    lasting: Mapped[bool | None]
    text: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64))
    metadata_: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSONB, server_default=sql_text("'{}'::jsonb")
    )
    embedding: Mapped[list[float]] = mapped_column(Vector())
    # The model the vector was made by, stamped from the connection (migration 0009).
    embedding_model: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())
    deleted_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]
    valid_at: Mapped[datetime | None]
    invalid_at: Mapped[datetime | None]
    superseded_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("memories.id", ondelete="SET NULL"))
    # A message's conversation and its place in it (migration 0008); facts have none.
    conversation_id: Mapped[uuid.UUID | None]
    turn: Mapped[int | None]
    # Words around the memory that help find it (see migration 0006); the lexical index only.
    context: Mapped[str | None] = mapped_column(Text)
    lexical: Mapped[Any] = mapped_column(
        TSVECTOR, Computed("to_tsvector('english'::regconfig, text || ' ' || "
                           "coalesce(context, ''))", persisted=True), deferred=True)


class EmbeddingSpace(Base):
    """One row: the model every stored vector is of (migration 0010); a switch under way
    names the next one."""

    __tablename__ = "embedding_space"
    __table_args__ = (CheckConstraint("id", name="embedding_space_one_row"),)

    id: Mapped[bool] = mapped_column(primary_key=True, server_default=sql_text("true"))
    model: Mapped[str] = mapped_column(Text)
    dimension: Mapped[int]
    generation: Mapped[int] = mapped_column(server_default="0")
    next_model: Mapped[str | None] = mapped_column(Text)


class MemoryVectorNext(Base):
    """A memory's vector by the model a switch goes to, made from the memory as it was at
    ``source_updated_at``."""

    __tablename__ = "memory_vectors_next"

    memory_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("memories.id", ondelete="CASCADE"), primary_key=True)
    model: Mapped[str] = mapped_column(Text)
    source_updated_at: Mapped[datetime]
    embedding: Mapped[list[float]] = mapped_column(Vector())


class MemoryChange(Base):
    """The change log the in-process index tails; written by triggers on ``memories``."""

    __tablename__ = "memory_changes"
    __table_args__ = (Index("ix_memory_changes_changed_at", "changed_at"),)

    seq: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    project_id: Mapped[uuid.UUID]
    memory_id: Mapped[uuid.UUID]
    changed_at: Mapped[datetime] = mapped_column(server_default=func.now())


class MemoryEvent(Base):
    """One history entry: what changed on a memory, by whom, in which request."""

    __tablename__ = "memory_events"
    __table_args__ = (Index("ix_memory_events_memory", "memory_id", "id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    memory_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("memories.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(String(16))
    old_text: Mapped[str | None] = mapped_column(Text)
    new_text: Mapped[str | None] = mapped_column(Text)
    old_metadata: Mapped[dict[str, Any] | None]
    new_metadata: Mapped[dict[str, Any] | None]
    actor_key_id: Mapped[uuid.UUID | None]
    request_id: Mapped[str | None] = mapped_column(String(128))
    # Set by consolidation: which episode and job caused the change, from which messages,
    # decided by which model under which prompt, and the memory on the other end of a
    # supersession.
    episode_id: Mapped[uuid.UUID | None]
    job_id: Mapped[uuid.UUID | None]
    message_indices: Mapped[list[int] | None] = mapped_column(ARRAY(Integer))
    model: Mapped[str | None] = mapped_column(String(255))
    prompt_version: Mapped[str | None] = mapped_column(String(64))
    decision: Mapped[str | None] = mapped_column(String(16))
    related_memory_id: Mapped[uuid.UUID | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class IdempotencyRecord(Base):
    """The stored answer to a request sent with an idempotency key, replayed on retries."""

    __tablename__ = "idempotency_keys"

    project_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int | None] = mapped_column(Integer)
    response: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Episode(Base):
    """A conversation exactly as a client sent it, kept so consolidation can always re-run."""

    __tablename__ = "episodes"
    __table_args__ = (
        Index("uq_episodes_idempotency_key", "project_id", "idempotency_key", unique=True,
              postgresql_where=sql_text("idempotency_key IS NOT NULL")),
        Index("ix_episodes_project_user", "project_id", "user_id", "observed_at"),
        Index("ix_episodes_project_agent", "project_id", "agent_id", "observed_at"),
        Index("ix_episodes_project_run", "project_id", "run_id", "observed_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    user_id: Mapped[str | None] = mapped_column(String(255))
    agent_id: Mapped[str | None] = mapped_column(String(255))
    run_id: Mapped[str | None] = mapped_column(String(255))
    messages: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    metadata_: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSONB, server_default=sql_text("'{}'::jsonb")
    )
    instructions: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    observed_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Job(Base):
    """One consolidation of one episode: its state, its outcome and what its LLM calls cost."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_episode", "episode_id"),
        Index("ix_jobs_project", "project_id", "id"),
        Index("ix_jobs_unfinished", "status", "enqueued_at",
              postgresql_where=sql_text("status IN ('PENDING', 'RUNNING')")),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    episode_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("episodes.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    results: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(String(255))
    llm_calls: Mapped[int] = mapped_column(Integer, server_default="0")
    truncated_replies: Mapped[int] = mapped_column(Integer, server_default="0")
    prompt_tokens: Mapped[int] = mapped_column(Integer, server_default="0")
    completion_tokens: Mapped[int] = mapped_column(Integer, server_default="0")
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    enqueued_at: Mapped[datetime] = mapped_column(server_default=func.now())
    started_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]


class MemorySource(Base):
    """Provenance: a memory came from (or was confirmed by) these messages of an episode."""

    __tablename__ = "memory_sources"
    __table_args__ = (Index("ix_memory_sources_episode", "episode_id"),)

    memory_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("memories.id", ondelete="CASCADE"), primary_key=True)
    episode_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("episodes.id", ondelete="CASCADE"), primary_key=True)
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    message_indices: Mapped[list[int]] = mapped_column(ARRAY(Integer))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Entity(Base):
    """A person, place or thing the conversations of a scope mention (Postgres graph store)."""

    __tablename__ = "entities"
    __table_args__ = (
        Index("uq_entities_scope_name", "project_id", "user_id", "agent_id", "run_id",
              "name_key", unique=True, postgresql_nulls_not_distinct=True),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    user_id: Mapped[str | None] = mapped_column(String(255))
    agent_id: Mapped[str | None] = mapped_column(String(255))
    run_id: Mapped[str | None] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(255))
    name_key: Mapped[str] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(32))
    summary: Mapped[str] = mapped_column(Text, server_default="")
    embedding: Mapped[list[float]] = mapped_column(Vector())
    embedding_model: Mapped[str] = mapped_column(Text)  # the model of the vector (0010)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Relation(Base):
    """``source`` —``type``→ ``target`` from ``valid_at`` until ``invalid_at``."""

    __tablename__ = "relations"
    __table_args__ = (
        Index("ix_relations_source", "project_id", "source_id", "type"),
        Index("ix_relations_target", "project_id", "target_id"),
        Index("ix_relations_memory", "memory_id",
              postgresql_where=sql_text("memory_id IS NOT NULL")),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    user_id: Mapped[str | None] = mapped_column(String(255))
    agent_id: Mapped[str | None] = mapped_column(String(255))
    run_id: Mapped[str | None] = mapped_column(String(255))
    source_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("entities.id", ondelete="CASCADE"))
    target_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("entities.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(64))
    source_name: Mapped[str] = mapped_column(String(255))
    target_name: Mapped[str] = mapped_column(String(255))
    valid_at: Mapped[datetime]
    invalid_at: Mapped[datetime | None]
    memory_id: Mapped[uuid.UUID | None]
    episode_id: Mapped[uuid.UUID | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class EntityMemory(Base):
    """The memory mentions the entity."""

    __tablename__ = "entity_memories"
    __table_args__ = (Index("ix_entity_memories_memory", "memory_id"),)

    entity_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("entities.id", ondelete="CASCADE"), primary_key=True)
    memory_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("memories.id", ondelete="CASCADE"), primary_key=True)
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))


class GraphExtraction(Base):
    """What the graph step read from one episode's facts: replayed by ``graph rebuild``."""

    __tablename__ = "graph_extractions"
    __table_args__ = (
        Index("ix_graph_extractions_project", "project_id", "id"),
        Index("ix_graph_extractions_unapplied", "created_at",
              postgresql_where=sql_text("applied_at IS NULL")),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    episode_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("episodes.id", ondelete="CASCADE"))
    job_id: Mapped[uuid.UUID | None]
    user_id: Mapped[str | None] = mapped_column(String(255))
    agent_id: Mapped[str | None] = mapped_column(String(255))
    run_id: Mapped[str | None] = mapped_column(String(255))
    payload: Mapped[dict[str, Any]]
    observed_at: Mapped[datetime]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    applied_at: Mapped[datetime | None]


class EntityMerge(Base):
    """A mention resolved to an entity under another name ("Mel" → Melanie), undoable."""

    __tablename__ = "entity_merges"
    __table_args__ = (Index("ix_entity_merges_entity", "project_id", "entity_id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    entity_id: Mapped[uuid.UUID]
    alias: Mapped[str] = mapped_column(String(255))
    reason: Mapped[str] = mapped_column(String(32))
    score: Mapped[float]
    extraction_id: Mapped[uuid.UUID | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    undone_at: Mapped[datetime | None]
