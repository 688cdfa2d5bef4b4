"""Deleted means erased: memories deleted before this release were only marked
(``deleted_at``), their text, vector and history kept. They are erased now, as a delete
erases from here on (``app.store.repositories.erasure``); their history events, sources,
graph links and staged vectors go with them (ON DELETE CASCADE), and the delete trigger logs
their ids for the search index.

Not reversible: what is erased is gone.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("DELETE FROM memory_events WHERE memory_id IN "
               "(SELECT id FROM memories WHERE deleted_at IS NOT NULL)")
    op.execute("DELETE FROM memories WHERE deleted_at IS NOT NULL")


def downgrade() -> None:
    pass  # nothing to bring back
