"""The search projection's feed and the lexical side of hybrid search.

* ``memory_changes``: one row per memory inserted, updated or deleted, written by triggers in
  the same transaction as the change, so every path that touches ``memories`` is logged and a
  change is in the log exactly when it is committed. ``seq`` only grows; the in-process
  index tails it (gaps from transactions still open are waited for, see ``memory_index``).
* ``memories.context``: text around a memory that helps find it by its words and is not the
  memory itself (the message before a stored message, the messages a fact was distilled
  from, the day it was said). Only the lexical index reads it.
* ``memories.lexical``: the English full-text vector of text and context, for the Postgres
  search path.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LEXICAL = "to_tsvector('english'::regconfig, text || ' ' || coalesce(context, ''))"
EVENTS = ("insert", "update", "delete")
# Written out, not formatted: one statement-level trigger per kind of change, each
# logging the rows it saw in its transition table.
TRIGGERS = (
    """
    CREATE FUNCTION anamnesis_log_memory_insert() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO memory_changes (project_id, memory_id)
        SELECT project_id, id FROM new_rows ORDER BY id;
        RETURN NULL;
    END $$""",
    """
    CREATE TRIGGER memories_log_insert AFTER INSERT ON memories
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION anamnesis_log_memory_insert()""",
    """
    CREATE FUNCTION anamnesis_log_memory_update() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO memory_changes (project_id, memory_id)
        SELECT project_id, id FROM new_rows ORDER BY id;
        RETURN NULL;
    END $$""",
    """
    CREATE TRIGGER memories_log_update AFTER UPDATE ON memories
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION anamnesis_log_memory_update()""",
    """
    CREATE FUNCTION anamnesis_log_memory_delete() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO memory_changes (project_id, memory_id)
        SELECT project_id, id FROM old_rows ORDER BY id;
        RETURN NULL;
    END $$""",
    """
    CREATE TRIGGER memories_log_delete AFTER DELETE ON memories
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION anamnesis_log_memory_delete()""",
)


def upgrade() -> None:
    op.create_table(
        "memory_changes",
        sa.Column("seq", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("project_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("memory_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
    )
    op.create_index("ix_memory_changes_changed_at", "memory_changes", ["changed_at"])
    for statement in TRIGGERS:
        op.execute(statement)
    op.add_column("memories", sa.Column("context", sa.Text))
    op.add_column("memories", sa.Column("lexical", pg.TSVECTOR,
                                        sa.Computed(LEXICAL, persisted=True)))
    op.create_index("ix_memories_lexical", "memories", ["lexical"], postgresql_using="gin")


def downgrade() -> None:
    op.drop_index("ix_memories_lexical", table_name="memories")
    op.drop_column("memories", "lexical")
    op.drop_column("memories", "context")
    for event in EVENTS:
        op.execute(f"DROP TRIGGER memories_log_{event} ON memories")
        op.execute(f"DROP FUNCTION anamnesis_log_memory_{event}()")
    op.drop_table("memory_changes")
