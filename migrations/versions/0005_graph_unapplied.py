"""Finds graph extractions the graph store has not applied yet, for the sweep.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from collections.abc import Sequence

from alembic import op
from sqlalchemy import text

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_graph_extractions_unapplied", "graph_extractions", ["created_at"],
                    postgresql_where=text("applied_at IS NULL"))


def downgrade() -> None:
    op.drop_index("ix_graph_extractions_unapplied", table_name="graph_extractions")
