"""Consolidation: episodes, jobs, memory sources, supersession links, richer history.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _uuid(name: str, *, nullable: bool = True) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, pg.UUID(as_uuid=True), nullable=nullable)


def _project() -> sa.Column:  # type: ignore[type-arg]
    return sa.Column("project_id", pg.UUID(as_uuid=True),
                     sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False)


def _at(name: str, *, now: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True),
                     server_default=sa.func.now() if now else None, nullable=not now)


def upgrade() -> None:
    op.add_column("projects", sa.Column("instructions", sa.Text))
    op.create_table(
        "episodes",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        _project(),
        sa.Column("user_id", sa.String(255)),
        sa.Column("agent_id", sa.String(255)),
        sa.Column("run_id", sa.String(255)),
        sa.Column("messages", pg.JSONB, nullable=False),
        sa.Column("metadata", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("instructions", sa.Text),
        sa.Column("idempotency_key", sa.String(255)),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        _at("expires_at"),
        _at("created_at", now=True),
    )
    op.create_index("uq_episodes_idempotency_key", "episodes", ["project_id", "idempotency_key"],
                    unique=True, postgresql_where=sa.text("idempotency_key IS NOT NULL"))
    for column in ("user_id", "agent_id", "run_id"):
        op.create_index(f"ix_episodes_project_{column.removesuffix('_id')}", "episodes",
                        ["project_id", column, "observed_at"])
    op.create_table(
        "jobs",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        _project(),
        sa.Column("episode_id", pg.UUID(as_uuid=True),
                  sa.ForeignKey("episodes.id", ondelete="CASCADE"), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("results", pg.JSONB),
        sa.Column("error_code", sa.String(64)),
        sa.Column("error", sa.Text),
        sa.Column("model", sa.String(255)),
        sa.Column("llm_calls", sa.Integer, nullable=False, server_default="0"),
        sa.Column("prompt_tokens", sa.Integer, nullable=False, server_default="0"),
        sa.Column("completion_tokens", sa.Integer, nullable=False, server_default="0"),
        _at("created_at", now=True),
        _at("enqueued_at", now=True),
        _at("started_at"),
        _at("heartbeat_at"),
        _at("completed_at"),
    )
    op.create_index("ix_jobs_episode", "jobs", ["episode_id"])
    # The sweeper's question: which unfinished jobs went quiet?
    op.create_index("ix_jobs_unfinished", "jobs", ["status", "enqueued_at"],
                    postgresql_where=sa.text("status IN ('PENDING', 'RUNNING')"))
    op.add_column("memories", _uuid("superseded_by"))
    op.create_foreign_key("fk_memories_superseded_by", "memories", "memories",
                          ["superseded_by"], ["id"], ondelete="SET NULL")
    op.create_index("ix_memories_superseded_by", "memories", ["superseded_by"],
                    postgresql_where=sa.text("superseded_by IS NOT NULL"))
    op.create_table(
        "memory_sources",
        sa.Column("memory_id", pg.UUID(as_uuid=True),
                  sa.ForeignKey("memories.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("episode_id", pg.UUID(as_uuid=True),
                  sa.ForeignKey("episodes.id", ondelete="CASCADE"), primary_key=True),
        _project(),
        sa.Column("message_indices", pg.ARRAY(sa.Integer), nullable=False),
        _at("created_at", now=True),
    )
    op.create_index("ix_memory_sources_episode", "memory_sources", ["episode_id"])
    for column in ("episode_id", "job_id"):
        op.add_column("memory_events", _uuid(column))
    op.add_column("memory_events", sa.Column("message_indices", pg.ARRAY(sa.Integer)))
    op.add_column("memory_events", sa.Column("model", sa.String(255)))
    op.add_column("memory_events", sa.Column("prompt_version", sa.String(64)))
    op.add_column("memory_events", sa.Column("decision", sa.String(16)))
    op.add_column("memory_events", _uuid("related_memory_id"))


def downgrade() -> None:
    for column in ("related_memory_id", "decision", "prompt_version", "model",
                   "message_indices", "job_id", "episode_id"):
        op.drop_column("memory_events", column)
    op.drop_table("memory_sources")
    op.drop_index("ix_memories_superseded_by", "memories")
    op.drop_constraint("fk_memories_superseded_by", "memories", type_="foreignkey")
    op.drop_column("memories", "superseded_by")
    op.drop_table("jobs")
    op.drop_table("episodes")
    op.drop_column("projects", "instructions")
