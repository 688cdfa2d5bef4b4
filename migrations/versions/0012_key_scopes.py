"""Keys with scopes: ``api_keys.scopes`` says what a key may do — ``read`` (list, get,
search), ``write`` (add, change, erase memories; retry jobs; change the graph), ``admin``
(the project's extraction instructions, and keys). Keys made before keep all three.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column(
        "scopes", pg.ARRAY(sa.String(16)), nullable=False,
        server_default=sa.text("'{read,write,admin}'")))
    op.create_check_constraint(
        "api_keys_known_scopes", "api_keys",
        "scopes <@ ARRAY['read', 'write', 'admin']::varchar(16)[] AND cardinality(scopes) > 0")


def downgrade() -> None:
    op.drop_constraint("api_keys_known_scopes", "api_keys")
    op.drop_column("api_keys", "scopes")
