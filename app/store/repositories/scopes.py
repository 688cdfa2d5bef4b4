"""The user, agent and run ids a project's memories carry (SQL only)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from app.store.models import Memory


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
    for field, column in (("user_id", Memory.user_id), ("agent_id", Memory.agent_id),
                          ("run_id", Memory.run_id)):
        rows = (await session.execute(
            sa.select(column, sa.func.count(), sa.func.min(Memory.created_at),
                      sa.func.max(Memory.updated_at))
            .where(Memory.project_id == project_id, column.is_not(None))
            .group_by(column).order_by(column))).all()
        found += [ScopeId(field, str(value), int(n), first, last)
                  for value, n, first, last in rows]
    return found
