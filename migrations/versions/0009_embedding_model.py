"""Each memory records the model its vector was made by (``embedding_model``: the model's
identity, e.g. ``all-MiniLM-L6-v2``), so vectors of two models are never compared unseen: a
server configured with another model than the stored vectors' refuses to start.

The identity comes from the connection: every process sets ``anamnesis.embedding_model`` to
its model's identity when it connects (``app.store.db``), and a trigger stamps it on each
row whose vector is written; a connection that sets none cannot write a vector. Existing
rows take the identity this migration is run with (the configured model).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DEFAULT_MODEL = "all-MiniLM-L6-v2"


def _model() -> str:
    config = op.get_context().config
    attributes = config.attributes if config is not None else {}
    return str(attributes.get("embedding_model", DEFAULT_MODEL))


def upgrade() -> None:
    op.add_column("memories", sa.Column("embedding_model", sa.Text()))
    op.execute(sa.text("UPDATE memories SET embedding_model = :model").bindparams(
        model=_model()))
    op.alter_column("memories", "embedding_model", nullable=False)
    op.execute("""
        CREATE FUNCTION memories_embedding_model() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            NEW.embedding_model := nullif(current_setting('anamnesis.embedding_model', true), '');
            IF NEW.embedding_model IS NULL THEN
                RAISE EXCEPTION 'a memory''s vector written by a connection that names no '
                                'embedding model (set anamnesis.embedding_model)';
            END IF;
            RETURN NEW;
        END $$""")
    op.execute("""
        CREATE TRIGGER memories_embedding_model
        BEFORE INSERT OR UPDATE OF embedding ON memories
        FOR EACH ROW EXECUTE FUNCTION memories_embedding_model()""")


def downgrade() -> None:
    op.execute("DROP TRIGGER memories_embedding_model ON memories")
    op.execute("DROP FUNCTION memories_embedding_model()")
    op.drop_column("memories", "embedding_model")
