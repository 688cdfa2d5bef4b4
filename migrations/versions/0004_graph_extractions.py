"""Graph extractions (what the LLM said per episode, replayable) and entity merges.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "graph_extractions",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("project_id", pg.UUID(as_uuid=True),
                  sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
        # Null for the log's other entries (an entity deleted through the API).
        sa.Column("episode_id", pg.UUID(as_uuid=True),
                  sa.ForeignKey("episodes.id", ondelete="CASCADE")),
        sa.Column("job_id", pg.UUID(as_uuid=True)),
        sa.Column("user_id", sa.String(255)),
        sa.Column("agent_id", sa.String(255)),
        sa.Column("run_id", sa.String(255)),
        sa.Column("payload", pg.JSONB, nullable=False),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_graph_extractions_project", "graph_extractions", ["project_id", "id"])
    op.create_table(
        "entity_merges",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("project_id", pg.UUID(as_uuid=True),
                  sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
        sa.Column("entity_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("alias", sa.String(255), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("extraction_id", pg.UUID(as_uuid=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.Column("undone_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_entity_merges_entity", "entity_merges", ["project_id", "entity_id"])


def downgrade() -> None:
    op.drop_table("entity_merges")
    op.drop_table("graph_extractions")
