"""Episodes (the raw conversations) and memory provenance (SQL only)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from app.domain import Scope
from app.store.ids import uuid7
from app.store.models import Episode, Memory, MemorySource, Project


@dataclass(frozen=True)
class SourceLink:
    memory_id: uuid.UUID
    message_indices: Sequence[int]


async def add(session: AsyncSession, project_id: uuid.UUID, scope: Scope, *,
              messages: list[dict[str, Any]], metadata: dict[str, Any],
              instructions: str | None, idempotency_key: str | None, observed_at: datetime,
              expires_at: datetime | None) -> Episode:
    episode = Episode(id=uuid7(), project_id=project_id, user_id=scope.user_id,
                      agent_id=scope.agent_id, run_id=scope.run_id, messages=messages,
                      metadata_=metadata, instructions=instructions,
                      idempotency_key=idempotency_key, observed_at=observed_at,
                      expires_at=expires_at)
    session.add(episode)
    await session.flush()
    return episode


async def get(session: AsyncSession, project_id: uuid.UUID,
              episode_id: uuid.UUID) -> Episode | None:
    query = sa.select(Episode).where(Episode.id == episode_id, Episode.project_id == project_id)
    return (await session.execute(query)).scalar_one_or_none()


async def preceding(session: AsyncSession, episode: Episode, limit: int) -> Sequence[Episode]:
    """The ``limit`` episodes of the same scope observed just before ``episode``, oldest first
    (the short-term memory a new conversation is read against)."""
    if limit <= 0:
        return []
    query = (
        sa.select(Episode)
        .where(Episode.project_id == episode.project_id,
               Episode.user_id.is_not_distinct_from(episode.user_id),
               Episode.agent_id.is_not_distinct_from(episode.agent_id),
               Episode.run_id.is_not_distinct_from(episode.run_id),
               Episode.id != episode.id,
               sa.tuple_(Episode.observed_at, Episode.id)
               < sa.tuple_(sa.literal(episode.observed_at), sa.literal(episode.id)))
        .order_by(Episode.observed_at.desc(), Episode.id.desc())
        .limit(limit)
    )
    return list(reversed((await session.scalars(query)).all()))


async def project_instructions(session: AsyncSession, project_id: uuid.UUID) -> str | None:
    query = sa.select(Project.instructions).where(Project.id == project_id)
    return (await session.execute(query)).scalar_one_or_none()


async def link_sources(session: AsyncSession, project_id: uuid.UUID, episode_id: uuid.UUID,
                       links: Sequence[SourceLink]) -> None:
    """Records that each memory came from these messages of the episode; a memory linked to
    the same episode twice keeps the union of the indices."""
    merged: dict[uuid.UUID, set[int]] = {}
    for link in links:
        merged.setdefault(link.memory_id, set()).update(link.message_indices)
    if not merged:
        return
    statement = insert(MemorySource).values([
        {"memory_id": memory_id, "episode_id": episode_id, "project_id": project_id,
         "message_indices": sorted(indices)}
        for memory_id, indices in merged.items()
    ])
    union = sa.text("ARRAY(SELECT DISTINCT unnest(memory_sources.message_indices"
                    " || excluded.message_indices) ORDER BY 1)")
    await session.execute(statement.on_conflict_do_update(
        index_elements=[MemorySource.memory_id, MemorySource.episode_id],
        set_={"message_indices": union},
    ))


Sources = dict[uuid.UUID, list[tuple[Episode, list[int]]]]


async def sources(session: AsyncSession, project_id: uuid.UUID,
                  memory_ids: Sequence[uuid.UUID]) -> Sources:
    """memory id → [(episode, message indices)], oldest episode first."""
    if not memory_ids:
        return {}
    query = (
        sa.select(MemorySource.memory_id, MemorySource.message_indices, Episode)
        .join(Episode, Episode.id == MemorySource.episode_id)
        .where(MemorySource.project_id == project_id, MemorySource.memory_id.in_(memory_ids))
        .order_by(Episode.observed_at, Episode.id)
    )
    found: Sources = {}
    for memory_id, indices, episode in await session.execute(query):
        found.setdefault(memory_id, []).append((episode, list(indices)))
    return found


async def cited_messages(session: AsyncSession, project_id: uuid.UUID,
                         fact_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, set[uuid.UUID]]:
    """fact id → the message memories (``kind = 'message'``, not deleted) of the messages it
    was distilled from: the same episode, a message index the fact cites."""
    if not fact_ids:
        return {}
    fact, message = aliased(MemorySource), aliased(MemorySource)
    query = (
        sa.select(fact.memory_id, message.memory_id)
        .join(message, sa.and_(message.episode_id == fact.episode_id,
                               message.project_id == fact.project_id,
                               message.message_indices.overlap(fact.message_indices)))
        .join(Memory, Memory.id == message.memory_id)
        .where(fact.project_id == project_id, fact.memory_id.in_(fact_ids),
               Memory.kind == "message", Memory.deleted_at.is_(None))
    )
    found: dict[uuid.UUID, set[uuid.UUID]] = {}
    for fact_id, message_id in await session.execute(query):
        found.setdefault(fact_id, set()).add(message_id)
    return found
