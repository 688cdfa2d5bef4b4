"""Whether a fact may be ended by a later one: a state (lives in, works at) may, an event
(went to, met) may not. Consolidation asks the model only about states; rows from before
this revision (and facts a client writes) are null, read as states, as they were.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("memories", sa.Column("lasting", sa.Boolean(), nullable=True))


def downgrade() -> None:
    op.drop_column("memories", "lasting")
