"""The embedding space: which model the stored vectors are of, so that a new one can take its
place while the service runs (``anamnesis reindex --model``, ``app.index.reembed``).

* ``embedding_space``: one row: the model every vector is of, its dimension, a generation
  counted up at each switch, and the model a switch under way goes to (``next_model``, for
  running processes to load ahead).
* ``memory_vectors_next``: the next model's vector of each memory, made while the service
  runs on the current ones, and the ``updated_at`` of the memory it was made from (a memory
  changed since is made again).
* The trigger of migration 0009 now also refuses a vector from a connection whose model is
  not the space's (SQLSTATE ``AN001``): a process still on the old model after a switch
  cannot write a vector of it; it retries once it has switched. It fires on every update
  and compares the vectors (a column it names could not change type in a switch).
* Entities record their vector's model too (``entities.embedding_model``), and their column
  takes vectors of any size, so the graph can be re-embedded after the memories.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects import postgresql as pg

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DEFAULT_MODEL = "all-MiniLM-L6-v2"

STAMP = """
    CREATE OR REPLACE FUNCTION memories_embedding_model() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        writer text := nullif(current_setting('anamnesis.embedding_model', true), '');
    BEGIN
        IF TG_OP = 'UPDATE' AND NEW.embedding IS NOT DISTINCT FROM OLD.embedding THEN
            RETURN NEW;  -- the vector stays: whoever writes the rest
        END IF;
        IF writer IS NULL THEN
            RAISE EXCEPTION 'a memory''s vector written by a connection that names no '
                            'embedding model (set anamnesis.embedding_model)';
        END IF;
        IF writer IS DISTINCT FROM (SELECT model FROM embedding_space) THEN
            RAISE EXCEPTION USING ERRCODE = 'AN001',
                MESSAGE = 'the embedding model was switched; this vector is of ' || writer;
        END IF;
        NEW.embedding_model := writer;
        RETURN NEW;
    END $$"""

STAMP_0009 = """
    CREATE OR REPLACE FUNCTION memories_embedding_model() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        NEW.embedding_model := nullif(current_setting('anamnesis.embedding_model', true), '');
        IF NEW.embedding_model IS NULL THEN
            RAISE EXCEPTION 'a memory''s vector written by a connection that names no '
                            'embedding model (set anamnesis.embedding_model)';
        END IF;
        RETURN NEW;
    END $$"""


def _model() -> str:
    config = op.get_context().config
    attributes = config.attributes if config is not None else {}
    return str(attributes.get("embedding_model", DEFAULT_MODEL))


def upgrade() -> None:
    op.create_table(
        "embedding_space",
        sa.Column("id", sa.Boolean(), primary_key=True, server_default=sa.true()),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("dimension", sa.Integer(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_model", sa.Text()),
        sa.CheckConstraint("id", name="embedding_space_one_row"),
    )
    # The model the stored vectors are recorded with (migration 0009), else the configured.
    op.execute(sa.text("""
        INSERT INTO embedding_space (model, dimension)
        SELECT coalesce((SELECT embedding_model FROM memories LIMIT 1), :model),
               (SELECT atttypmod FROM pg_attribute
                WHERE attrelid = 'memories'::regclass AND attname = 'embedding')
    """).bindparams(model=_model()))
    op.create_table(
        "memory_vectors_next",
        sa.Column("memory_id", pg.UUID(as_uuid=True),
                  sa.ForeignKey("memories.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("source_updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("embedding", Vector(), nullable=False),
    )
    op.execute(STAMP)
    op.execute("DROP TRIGGER memories_embedding_model ON memories")
    op.execute("CREATE TRIGGER memories_embedding_model BEFORE INSERT OR UPDATE ON memories "
               "FOR EACH ROW EXECUTE FUNCTION memories_embedding_model()")
    op.add_column("entities", sa.Column("embedding_model", sa.Text()))
    op.execute(sa.text("UPDATE entities SET embedding_model = "
                       "(SELECT model FROM embedding_space)"))
    op.alter_column("entities", "embedding_model", nullable=False)
    op.execute("ALTER TABLE entities ALTER COLUMN embedding TYPE vector")


def downgrade() -> None:
    # Entities of another size than the space's cannot go back into a sized column.
    op.execute("DELETE FROM entities WHERE embedding_model <> (SELECT model FROM embedding_space)"
               " OR vector_dims(embedding) <> (SELECT dimension FROM embedding_space)")
    size = op.get_bind().execute(sa.text("SELECT dimension FROM embedding_space")).scalar_one()
    op.execute(f"ALTER TABLE entities ALTER COLUMN embedding TYPE vector({int(size)})")
    op.drop_column("entities", "embedding_model")
    op.execute(STAMP_0009)
    op.execute("DROP TRIGGER memories_embedding_model ON memories")
    op.execute("CREATE TRIGGER memories_embedding_model BEFORE INSERT OR UPDATE OF embedding "
               "ON memories FOR EACH ROW EXECUTE FUNCTION memories_embedding_model()")
    op.drop_table("memory_vectors_next")
    op.drop_table("embedding_space")
