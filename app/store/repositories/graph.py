"""Graph extractions and entity merges (SQL only): kept in Postgres whatever the graph store,
so the graph can always be rebuilt from them."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain import Scope
from app.store.graph.base import name_key
from app.store.ids import uuid7
from app.store.models import EntityMerge, GraphExtraction, Memory


async def add_extraction(session: AsyncSession, project_id: uuid.UUID, scope: Scope, *,
                         episode_id: uuid.UUID, job_id: uuid.UUID | None,
                         payload: dict[str, Any], observed_at: datetime) -> GraphExtraction:
    row = GraphExtraction(id=uuid7(), project_id=project_id, episode_id=episode_id,
                          job_id=job_id, user_id=scope.user_id, agent_id=scope.agent_id,
                          run_id=scope.run_id, payload=payload, observed_at=observed_at)
    session.add(row)
    await session.flush()
    return row


def _exactly(scope: Scope) -> list[sa.ColumnElement[bool]]:
    return [GraphExtraction.user_id.is_not_distinct_from(scope.user_id),
            GraphExtraction.agent_id.is_not_distinct_from(scope.agent_id),
            GraphExtraction.run_id.is_not_distinct_from(scope.run_id)]


async def extractions(session: AsyncSession, project_id: uuid.UUID, *,
                      after: uuid.UUID | None, limit: int,
                      scope: Scope | None = None) -> Sequence[GraphExtraction]:
    """In the order they were made (ids are time-ordered); of exactly ``scope`` if given."""
    query = sa.select(GraphExtraction).where(GraphExtraction.project_id == project_id)
    if scope is not None:
        query = query.where(*_exactly(scope))
    if after is not None:
        query = query.where(GraphExtraction.id > after)
    return (await session.scalars(query.order_by(GraphExtraction.id).limit(limit))).all()


async def mark_applied(session: AsyncSession, extraction_id: uuid.UUID) -> None:
    await session.execute(sa.update(GraphExtraction).where(GraphExtraction.id == extraction_id)
                          .values(applied_at=sa.func.now()))


async def add_merges(session: AsyncSession, project_id: uuid.UUID,
                     merges: Sequence[tuple[uuid.UUID, str, str, float]],
                     extraction_id: uuid.UUID | None) -> None:
    """(entity id, alias, reason, score) each."""
    if not merges:
        return
    await session.execute(sa.insert(EntityMerge).values([
        {"id": uuid7(), "project_id": project_id, "entity_id": entity_id, "alias": alias,
         "reason": reason, "score": score, "extraction_id": extraction_id}
        for entity_id, alias, reason, score in merges
    ]))


async def merges_of(session: AsyncSession, project_id: uuid.UUID,
                    entity_id: uuid.UUID) -> Sequence[EntityMerge]:
    query = (sa.select(EntityMerge)
             .where(EntityMerge.project_id == project_id, EntityMerge.entity_id == entity_id)
             .order_by(EntityMerge.id))
    return (await session.scalars(query)).all()


async def forget_merges(session: AsyncSession, project_id: uuid.UUID,
                        scope: Scope | None = None) -> None:
    """Before a rebuild (of the project, or of exactly ``scope``), which records the merges
    again as it replays. Undone merges stay: they keep the rebuild from merging again."""
    query = sa.delete(EntityMerge).where(EntityMerge.project_id == project_id,
                                         EntityMerge.undone_at.is_(None))
    if scope is not None:
        query = query.where(EntityMerge.extraction_id.in_(
            sa.select(GraphExtraction.id).where(GraphExtraction.project_id == project_id,
                                                *_exactly(scope))))
    await session.execute(query)


async def undo_merges(session: AsyncSession, project_id: uuid.UUID, entity_id: uuid.UUID,
                      key: str) -> list[EntityMerge]:
    """Marks the entity's merges of the alias with this name key undone; returns them."""
    rows = [row for row in await merges_of(session, project_id, entity_id)
            if row.undone_at is None and name_key(row.alias) == key]
    if rows:
        await session.execute(sa.update(EntityMerge)
                              .where(EntityMerge.id.in_([row.id for row in rows]))
                              .values(undone_at=sa.func.now()))
    return rows


async def refused_merges(session: AsyncSession,
                         project_id: uuid.UUID) -> frozenset[tuple[uuid.UUID, str]]:
    """(entity id, alias name key) pairs a user took apart: never merged again."""
    query = sa.select(EntityMerge.entity_id, EntityMerge.alias).where(
        EntityMerge.project_id == project_id, EntityMerge.undone_at.is_not(None))
    return frozenset((entity_id, name_key(alias))
                     for entity_id, alias in (await session.execute(query)).all())


async def unapplied(session: AsyncSession, older_than: timedelta,
                    limit: int) -> Sequence[GraphExtraction]:
    """Extractions whose projection into the graph store failed (or never ran) and that no
    run is about to apply: recorded more than ``older_than`` ago."""
    query = (sa.select(GraphExtraction)
             .where(GraphExtraction.applied_at.is_(None),
                    GraphExtraction.created_at < sa.func.now() - older_than)
             .order_by(GraphExtraction.id).limit(limit))
    return (await session.scalars(query)).all()


async def is_applied(session: AsyncSession, extraction_id: uuid.UUID) -> bool:
    query = sa.select(GraphExtraction.applied_at).where(GraphExtraction.id == extraction_id)
    return (await session.scalar(query)) is not None


DELETED_ENTITY = "entity_deleted"


async def add_entity_deletion(session: AsyncSession, project_id: uuid.UUID,
                              entity_id: uuid.UUID, scope: Scope) -> None:
    """Kept in the same log as the extractions, with the entity's scope, so a rebuild (of the
    project or of that scope) deletes it again at its turn."""
    now = (await session.execute(sa.select(sa.func.now()))).scalar_one()
    session.add(GraphExtraction(id=uuid7(), project_id=project_id, episode_id=None,
                                user_id=scope.user_id, agent_id=scope.agent_id,
                                run_id=scope.run_id,
                                payload={"kind": DELETED_ENTITY, "entity_id": str(entity_id)},
                                observed_at=now, applied_at=now))
    await session.flush()


async def deleted_memories(session: AsyncSession, project_id: uuid.UUID,
                           memory_ids: Sequence[uuid.UUID]) -> frozenset[uuid.UUID]:
    """Those of ``memory_ids`` erased (or archived) since."""
    if not memory_ids:
        return frozenset()
    query = sa.select(Memory.id).where(Memory.project_id == project_id,
                                       Memory.id.in_(memory_ids),
                                       Memory.deleted_at.is_(None))
    return frozenset(memory_ids) - frozenset((await session.scalars(query)).all())
