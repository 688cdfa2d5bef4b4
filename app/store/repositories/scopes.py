"""The user, agent and run ids a project's memories are stored under, and who speaks in them
(SQL only)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain import ProjectScope
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


@dataclass(frozen=True)
class ScopeId:
    """One user, agent or run id of a project, and its memories in any state."""

    field: str
    value: str
    memories: int
    first_at: datetime
    last_at: datetime


async def scope_ids(session: AsyncSession, project_id: uuid.UUID) -> list[ScopeId]:
    """Every user, agent and run id the project's memories carry (superseded, expired and
    archived memories included), by field then id."""
    found: list[ScopeId] = []
    for kind, column in _COLUMNS.items():
        field = f"{kind}_id"
        rows = (await session.execute(
            sa.select(column, sa.func.count(), sa.func.min(Memory.created_at),
                      sa.func.max(Memory.updated_at))
            .where(Memory.project_id == project_id, column.is_not(None))
            .group_by(column).order_by(column))).all()
        found += [ScopeId(field, str(value), int(n), first, last)
                  for value, n, first, last in rows]
    return found


async def speakers(session: AsyncSession, where: ProjectScope, limit: int = 10_000) -> list[str]:
    """Names messages of ``where``'s user were said under (any agent, run or state), the
    first ``limit`` of them: a query naming someone past that is searched with the name."""
    name = Memory.metadata_["name"].astext
    user = [] if where.user_id is None else [Memory.user_id == where.user_id]
    return [str(found) for found in (await session.scalars(
        sa.select(name).distinct().where(Memory.project_id == where.project_id, *user,
                                         Memory.kind == "message", name.is_not(None))
        .limit(limit))).all()]
