"""Messages carry their conversation and their turn in it: ``conversation_id`` (the episode
that opened the conversation: an add continues the scope's conversation when its first
message follows the scope's last one within the conversation gap) and ``turn`` (0, 1, …
over the conversation's non-empty messages, whichever add brought each). Search lets turns
of one conversation lend each other score and returns a hit's neighbouring turns; both are
the same whether a conversation came in one add or one message per add.

Existing messages become one conversation per episode, in message order. Facts have none:
a fact outlives the exchange it was said in.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("memories", sa.Column("conversation_id", postgresql.UUID(as_uuid=True)))
    op.add_column("memories", sa.Column("turn", sa.Integer()))
    op.execute("""
        UPDATE memories m SET conversation_id = s.episode_id, turn = s.turn
        FROM (SELECT s.memory_id, s.episode_id,
                     (row_number() OVER (PARTITION BY s.episode_id
                                         ORDER BY s.message_indices[1], s.memory_id)) - 1 AS turn
              FROM memory_sources s JOIN memories k ON k.id = s.memory_id
              WHERE k.kind = 'message') s
        WHERE s.memory_id = m.id""")
    op.create_index("ix_memories_conversation_turn", "memories",
                    ["project_id", "conversation_id", "turn"],
                    postgresql_where=sa.text("conversation_id IS NOT NULL"))


def downgrade() -> None:
    op.drop_index("ix_memories_conversation_turn", table_name="memories")
    op.drop_column("memories", "turn")
    op.drop_column("memories", "conversation_id")
