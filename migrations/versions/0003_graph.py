"""Graph: entities, relations and their links to memories (the Postgres graph store).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects import postgresql as pg

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DEFAULT_DIMENSION = 384


def _dimension() -> int:
    config = op.get_context().config
    attributes = config.attributes if config is not None else {}
    return int(attributes.get("embedding_dimension", DEFAULT_DIMENSION))


def _project() -> sa.Column:  # type: ignore[type-arg]
    return sa.Column("project_id", pg.UUID(as_uuid=True),
                     sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False)


def _scope() -> list[sa.Column]:  # type: ignore[type-arg]
    return [sa.Column(name, sa.String(255)) for name in ("user_id", "agent_id", "run_id")]


def _at(name: str, *, now: bool = True) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True),
                     server_default=sa.func.now() if now else None, nullable=not now)


def upgrade() -> None:
    op.create_table(
        "entities",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        _project(), *_scope(),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("name_key", sa.String(255), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("summary", sa.Text, nullable=False, server_default=""),
        sa.Column("embedding", Vector(_dimension()), nullable=False),
        _at("created_at"), _at("updated_at"),
    )
    op.create_index("uq_entities_scope_name", "entities",
                    ["project_id", "user_id", "agent_id", "run_id", "name_key"],
                    unique=True, postgresql_nulls_not_distinct=True)
    op.create_table(
        "relations",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        _project(), *_scope(),
        sa.Column("source_id", pg.UUID(as_uuid=True),
                  sa.ForeignKey("entities.id", ondelete="CASCADE"), nullable=False),
        sa.Column("target_id", pg.UUID(as_uuid=True),
                  sa.ForeignKey("entities.id", ondelete="CASCADE"), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("source_name", sa.String(255), nullable=False),
        sa.Column("target_name", sa.String(255), nullable=False),
        sa.Column("valid_at", sa.DateTime(timezone=True), nullable=False),
        _at("invalid_at", now=False),
        sa.Column("memory_id", pg.UUID(as_uuid=True)),
        sa.Column("episode_id", pg.UUID(as_uuid=True)),
        _at("created_at"),
    )
    op.create_index("ix_relations_source", "relations", ["project_id", "source_id", "type"])
    op.create_index("ix_relations_target", "relations", ["project_id", "target_id"])
    op.create_index("ix_relations_memory", "relations", ["memory_id"],
                    postgresql_where=sa.text("memory_id IS NOT NULL"))
    op.create_table(
        "entity_memories",
        sa.Column("entity_id", pg.UUID(as_uuid=True),
                  sa.ForeignKey("entities.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("memory_id", pg.UUID(as_uuid=True),
                  sa.ForeignKey("memories.id", ondelete="CASCADE"), primary_key=True),
        _project(),
    )
    op.create_index("ix_entity_memories_memory", "entity_memories", ["memory_id"])


def downgrade() -> None:
    op.drop_table("entity_memories")
    op.drop_table("relations")
    op.drop_table("entities")
