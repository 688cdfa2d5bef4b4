"""Jobs by project, newest first: the index behind ``GET /v1/jobs`` (a project's recent
jobs, optionally of one status, paged by id), so listing one tenant's jobs never scans
everyone's.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_jobs_project", "jobs", ["project_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_jobs_project", table_name="jobs")
