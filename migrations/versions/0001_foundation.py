"""Foundation: vector extension, projects, API keys, memories, history, idempotency.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects import postgresql as pg

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DEFAULT_DIMENSION = 384


def _dimension() -> int:
    config = op.get_context().config
    attributes = config.attributes if config is not None else {}
    return int(attributes.get("embedding_dimension", DEFAULT_DIMENSION))


def _timestamps(*names: str, now: bool = True) -> list[sa.Column]:  # type: ignore[type-arg]
    return [
        sa.Column(name, sa.DateTime(timezone=True),
                  server_default=sa.func.now() if now else None, nullable=not now)
        for name in names
    ]


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    op.create_table(
        "projects",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        *_timestamps("created_at"),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("project_id", pg.UUID(as_uuid=True),
                  sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("name", sa.String(255)),
        sa.Column("prefix", sa.String(32), nullable=False, unique=True),
        sa.Column("key_hash", sa.LargeBinary(32), nullable=False, unique=True),
        *_timestamps("created_at"),
        *_timestamps("last_used_at", "revoked_at", now=False),
    )
    op.create_table(
        "memories",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("project_id", pg.UUID(as_uuid=True),
                  sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
        sa.Column("user_id", sa.String(255)),
        sa.Column("agent_id", sa.String(255)),
        sa.Column("run_id", sa.String(255)),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("metadata", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("embedding", Vector(_dimension()), nullable=False),
        *_timestamps("created_at", "updated_at"),
        *_timestamps("deleted_at", "expires_at", "valid_at", "invalid_at", now=False),
    )
    op.create_index(
        "uq_memories_live_content", "memories",
        ["project_id", "user_id", "agent_id", "run_id", "content_hash"],
        unique=True, postgresql_nulls_not_distinct=True,
        postgresql_where=sa.text("deleted_at IS NULL AND invalid_at IS NULL"),
    )
    for column in ("user_id", "agent_id", "run_id"):
        op.create_index(f"ix_memories_project_{column.removesuffix('_id')}", "memories",
                        ["project_id", column, "id"])
    op.create_index("ix_memories_metadata", "memories", ["metadata"], postgresql_using="gin",
                    postgresql_ops={"metadata": "jsonb_path_ops"})
    op.create_index("ix_memories_embedding_hnsw", "memories", ["embedding"],
                    postgresql_using="hnsw", postgresql_ops={"embedding": "vector_cosine_ops"},
                    postgresql_with={"m": 16, "ef_construction": 64})
    op.create_table(
        "memory_events",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("project_id", pg.UUID(as_uuid=True),
                  sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
        sa.Column("memory_id", pg.UUID(as_uuid=True),
                  sa.ForeignKey("memories.id", ondelete="CASCADE"), nullable=False),
        sa.Column("event", sa.String(16), nullable=False),
        sa.Column("old_text", sa.Text),
        sa.Column("new_text", sa.Text),
        sa.Column("old_metadata", pg.JSONB),
        sa.Column("new_metadata", pg.JSONB),
        sa.Column("actor_key_id", pg.UUID(as_uuid=True)),
        sa.Column("request_id", sa.String(128)),
        *_timestamps("created_at"),
    )
    op.create_index("ix_memory_events_memory", "memory_events", ["memory_id", "id"])
    op.create_table(
        "idempotency_keys",
        sa.Column("project_id", pg.UUID(as_uuid=True),
                  sa.ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("status_code", sa.Integer),
        sa.Column("response", pg.JSONB),
        *_timestamps("created_at"),
    )


def downgrade() -> None:
    op.drop_table("idempotency_keys")
    op.drop_table("memory_events")
    op.drop_table("memories")
    op.drop_table("api_keys")
    op.drop_table("projects")
    op.execute("DROP EXTENSION IF EXISTS vector")
