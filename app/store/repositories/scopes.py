"""The scope ids a project's memories are stored under (SQL only)."""

from __future__ import annotations

import uuid
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from app.store.models import Memory

ScopeKind = Literal["user", "agent", "run"]

_COLUMNS = {"user": Memory.user_id, "agent": Memory.agent_id, "run": Memory.run_id}


async def page(session: AsyncSession, project_id: uuid.UUID, kind: ScopeKind,
               prefix: str | None, limit: int, after: str | None) -> list[tuple[str, int]]:
    """Distinct ids of one scope kind in id order, each with how many memory rows (every
    state) it holds; ``after`` (the last id seen) is the cursor. The (project, id) index of
    each kind serves the grouping."""
    column = _COLUMNS[kind]
    query = (sa.select(column, sa.func.count())
             .where(Memory.project_id == project_id, column.is_not(None))
             .group_by(column).order_by(column).limit(limit))
    if prefix is not None:
        query = query.where(sa.func.starts_with(column, prefix))
    if after is not None:
        query = query.where(column > after)
    return [(str(name), int(count)) for name, count in (await session.execute(query)).all()]
