"""Jobs count their LLM replies cut at max_tokens (``truncated_replies``: a model that ran
away). Memories are of two kinds: ``message`` (what was said, one per message of an episode,
never de-duplicated: the same words said again are another message) and ``fact`` (what
consolidation distilled; unique per scope by content, as before).

Existing memories stored verbatim (``infer=false``: a ``message_index`` in their metadata
and no consolidation source) become messages.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LIVE = "deleted_at IS NULL AND invalid_at IS NULL"
SCOPE_AND_HASH = ["project_id", "user_id", "agent_id", "run_id", "content_hash"]


def upgrade() -> None:
    op.add_column("jobs", sa.Column("truncated_replies", sa.Integer(), nullable=False,
                                    server_default="0"))
    op.add_column("memories", sa.Column("kind", sa.String(16), nullable=False,
                                        server_default="fact"))
    op.execute("UPDATE memories SET kind = 'message' WHERE metadata ? 'message_index' "
               "AND NOT EXISTS (SELECT 1 FROM memory_sources s WHERE s.memory_id = memories.id)")
    op.drop_index("uq_memories_live_content", table_name="memories")
    op.create_index("uq_memories_live_content", "memories", SCOPE_AND_HASH, unique=True,
                    postgresql_where=sa.text(f"{LIVE} AND kind = 'fact'"),
                    postgresql_nulls_not_distinct=True)


def downgrade() -> None:
    # Messages repeating a live text would break the old index: the later copies go.
    op.execute("""
        DELETE FROM memories m USING memories o
        WHERE m.deleted_at IS NULL AND m.invalid_at IS NULL
          AND o.deleted_at IS NULL AND o.invalid_at IS NULL
          AND m.project_id = o.project_id AND m.content_hash = o.content_hash
          AND m.user_id IS NOT DISTINCT FROM o.user_id
          AND m.agent_id IS NOT DISTINCT FROM o.agent_id
          AND m.run_id IS NOT DISTINCT FROM o.run_id
          AND m.id > o.id""")
    op.drop_index("uq_memories_live_content", table_name="memories")
    op.create_index("uq_memories_live_content", "memories", SCOPE_AND_HASH, unique=True,
                    postgresql_where=sa.text(LIVE), postgresql_nulls_not_distinct=True)
    op.drop_column("memories", "kind")
    op.drop_column("jobs", "truncated_replies")
