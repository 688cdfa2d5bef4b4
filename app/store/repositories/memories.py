"""Memories and their history (SQL only). Every function takes the caller's project."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer
from sqlalchemy.sql.elements import ColumnElement

from app.domain import CURRENT, Filter, MemoryKind, Scope, Timeline
from app.store.ids import uuid7
from app.store.models import Memory
from app.store.repositories.filter_sql import compile_filter

# pgvector's HNSW candidate list; iterative scans keep going past it under filters.
MIN_EF_SEARCH = 64
MAX_EF_SEARCH = 1000
# How far pgvector's iterative scan may walk the HNSW graph past rows the filter rejects
# before giving up (its default is 20,000); a filter that selective is answered exactly
# instead. bench.filtered_search compares both on the same 100k rows: broad filters and
# plain scopes 20-45 ms either way, filters matching 2% and 0.2% 105-160 ms either way.
# Selective filters stay slow in Postgres: the FAISS hot path is where they get fast.
MAX_SCAN_TUPLES = 20000


@dataclass(frozen=True)
class NewMemory:
    text: str
    content_hash: str
    metadata: dict[str, Any]
    embedding: list[float]
    expires_at: datetime | None = None
    valid_at: datetime | None = None
    context: str | None = None
    conversation_id: uuid.UUID | None = None  # messages only (migration 0008)
    turn: int | None = None
    lasting: bool | None = None  # facts only: see ``Memory.lasting``


def live() -> ColumnElement[bool]:
    """Not deleted, not expired, and currently true."""
    return visible(CURRENT)


def visible(timeline: Timeline) -> ColumnElement[bool]:
    """Not deleted, not expired, and true at the timeline's moment. A memory without
    ``valid_at`` counts as true since it was stored."""
    now = sa.func.now()
    kept = [Memory.deleted_at.is_(None),
            sa.or_(Memory.expires_at.is_(None), Memory.expires_at > now)]
    if timeline.include_superseded:
        return sa.and_(*kept)
    if timeline.as_of is None:
        return sa.and_(*kept, sa.or_(Memory.invalid_at.is_(None), Memory.invalid_at > now))
    moment = sa.literal(timeline.as_of, sa.DateTime(timezone=True))
    return sa.and_(*kept, sa.func.coalesce(Memory.valid_at, Memory.created_at) <= moment,
                   sa.or_(Memory.invalid_at.is_(None), Memory.invalid_at > moment))


def _scope_clauses(scope: Scope) -> list[ColumnElement[bool]]:
    clauses = []
    for column, value in ((Memory.user_id, scope.user_id), (Memory.agent_id, scope.agent_id),
                          (Memory.run_id, scope.run_id)):
        if value is not None:
            clauses.append(column == value)
    return clauses


def _exact_scope(scope: Scope) -> list[ColumnElement[bool]]:
    return [Memory.user_id.is_not_distinct_from(scope.user_id),
            Memory.agent_id.is_not_distinct_from(scope.agent_id),
            Memory.run_id.is_not_distinct_from(scope.run_id)]


async def insert_new(session: AsyncSession, project_id: uuid.UUID, scope: Scope,
                     items: Sequence[NewMemory]) -> dict[str, uuid.UUID]:
    """Inserts each item as a fact unless an identical live fact exists in the scope.

    Returns content hash → id for the rows this call inserted; the unique index on
    (project, scope, hash) settles races between concurrent writers.
    """
    if not items:
        return {}
    statement = insert(Memory).values([
        {
            "id": uuid7(), "project_id": project_id, "user_id": scope.user_id,
            "agent_id": scope.agent_id, "run_id": scope.run_id, "text": item.text,
            "content_hash": item.content_hash, "metadata": item.metadata,
            "embedding": item.embedding, "expires_at": item.expires_at,
            "valid_at": item.valid_at, "context": item.context, "kind": "fact",
            "lasting": item.lasting,
        }
        for item in items
    ]).on_conflict_do_nothing(
        index_elements=["project_id", "user_id", "agent_id", "run_id", "content_hash"],
        # The index's own predicate, literally: Postgres matches it, it cannot prove a bound
        # parameter implies it.
        index_where=sa.text("deleted_at IS NULL AND invalid_at IS NULL AND kind = 'fact'"),
    ).returning(Memory.id, Memory.content_hash)
    return {row.content_hash: row.id for row in await session.execute(statement)}


async def retire_expired_and_find(session: AsyncSession, project_id: uuid.UUID, scope: Scope,
                         hashes: Sequence[str]) -> dict[str, Memory]:
    """The unique-index holders (live facts) of these hashes in exactly this scope.

    Expired holders are retired first (marked deleted), so their text can be stored again.
    """
    query = sa.select(Memory).where(
        Memory.project_id == project_id,
        *_exact_scope(scope),
        Memory.content_hash.in_(hashes),
        Memory.kind == "fact",
        Memory.deleted_at.is_(None),
        Memory.invalid_at.is_(None),
    )
    holders = {memory.content_hash: memory for memory in (await session.scalars(query))}
    now = datetime.now(UTC)
    expired = [m for m in holders.values() if m.expires_at is not None and m.expires_at <= now]
    if expired:
        await session.execute(sa.update(Memory).where(Memory.id.in_([m.id for m in expired]))
                              .values(deleted_at=sa.func.now()))
    return {digest: m for digest, m in holders.items() if m not in expired}


async def insert_messages(session: AsyncSession, project_id: uuid.UUID, scope: Scope,
                          items: Sequence[NewMemory]) -> list[uuid.UUID]:
    """Inserts each item as a message, whatever the scope already holds (a message is an
    event: the same words said again are another one). Returns the ids in order."""
    ids = [uuid7() for _ in items]
    rows = [{"id": memory_id, "project_id": project_id, "user_id": scope.user_id,
             "agent_id": scope.agent_id, "run_id": scope.run_id, "text": item.text,
             "content_hash": item.content_hash, "metadata": item.metadata,
             "embedding": item.embedding, "expires_at": item.expires_at,
             "valid_at": item.valid_at, "context": item.context, "kind": "message",
             "conversation_id": item.conversation_id, "turn": item.turn}
            for memory_id, item in zip(ids, items, strict=True)]
    if rows:
        await session.execute(insert(Memory).values(rows))
    return ids


async def last_message(session: AsyncSession, project_id: uuid.UUID, scope: Scope,
                       at: datetime, within: timedelta) -> Memory | None:
    """The scope's message said last at or before ``at``, if said no earlier than ``within``
    before it (the turn an agent's next message answers, whichever add call brought it)."""
    said = sa.func.coalesce(Memory.valid_at, Memory.created_at)
    query = (
        sa.select(Memory)
        .where(Memory.project_id == project_id, *_exact_scope(scope), Memory.kind == "message",
               Memory.deleted_at.is_(None), said <= at, said >= at - within)
        .order_by(said.desc(), Memory.id.desc())
        .limit(1)
    )
    return (await session.scalars(query)).first()


async def insert_or_find(session: AsyncSession, project_id: uuid.UUID, scope: Scope,
                         items: Sequence[NewMemory]) -> dict[str, tuple[uuid.UUID, Memory | None]]:
    """Each item stored, or the live memory of exactly this scope that already holds its text
    (ingest and consolidation alike): content hash → (id, None if this call inserted it, else
    the holder). An expired holder gives up its place, and a holder that expires between the
    insert and the look is retried."""
    outcome: dict[str, tuple[uuid.UUID, Memory | None]] = {}
    pending = list({item.content_hash: item for item in items}.values())
    while pending:
        inserted = await insert_new(session, project_id, scope, pending)
        outcome |= {digest: (memory_id, None) for digest, memory_id in inserted.items()}
        lost = [item for item in pending if item.content_hash not in inserted]
        holders = await retire_expired_and_find(session, project_id, scope,
                                                [item.content_hash for item in lost])
        outcome |= {digest: (holder.id, holder) for digest, holder in holders.items()}
        pending = [item for item in lost if item.content_hash not in holders]
    return outcome


async def get(session: AsyncSession, project_id: uuid.UUID, memory_id: uuid.UUID, *,
              for_update: bool = False, timeline: Timeline = CURRENT) -> Memory | None:
    query = sa.select(Memory).where(Memory.id == memory_id, Memory.project_id == project_id,
                                    visible(timeline))
    if for_update:
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def exists_any(session: AsyncSession, project_id: uuid.UUID,
                     memory_id: uuid.UUID) -> bool:
    """Whether the project ever had this memory (deleted ones included)."""
    query = sa.select(sa.literal(1)).where(Memory.id == memory_id,
                                           Memory.project_id == project_id)
    return (await session.execute(query)).first() is not None


def _listed(project_id: uuid.UUID, scope: Scope, filter_tree: Filter | None,
            timeline: Timeline) -> list[ColumnElement[bool]]:
    """What a listing (``page``, ``count``) keeps: the scope, the filter, the timeline."""
    clauses = [Memory.project_id == project_id, visible(timeline), *_scope_clauses(scope)]
    if filter_tree is not None:
        clauses.append(compile_filter(filter_tree))
    return clauses


async def page(session: AsyncSession, project_id: uuid.UUID, scope: Scope,
               filter_tree: Filter | None, limit: int, before: uuid.UUID | None,
               timeline: Timeline = CURRENT, *, offset: int = 0) -> Sequence[Memory]:
    """Newest first; ids are time-ordered, so ``before`` (the last id seen) is the cursor.
    ``offset`` skips that many rows first (numbered pages)."""
    query = sa.select(Memory).where(*_listed(project_id, scope, filter_tree, timeline))
    if before is not None:
        query = query.where(Memory.id < before)
    query = query.order_by(Memory.id.desc()).offset(offset).limit(limit)
    return (await session.scalars(query)).all()


async def count(session: AsyncSession, project_id: uuid.UUID, scope: Scope,
                filter_tree: Filter | None, timeline: Timeline = CURRENT) -> int:
    """How many memories ``page`` would list, all pages together."""
    query = sa.select(sa.func.count()).select_from(Memory).where(
        *_listed(project_id, scope, filter_tree, timeline))
    return int((await session.execute(query)).scalar_one())


async def nearest(session: AsyncSession, project_id: uuid.UUID, embedding: list[float],
                  filter_tree: Filter | None, top_k: int, threshold: float | None, *,
                  timeline: Timeline = CURRENT, exact_scope: Scope | None = None,
                  among: Sequence[uuid.UUID] | None = None,
                  kind: MemoryKind | None = None) -> list[tuple[Memory, float]]:
    """The ``top_k`` live memories closest to ``embedding`` that match the filter.

    First through the HNSW index with pgvector's iterative scan, which keeps walking until
    enough rows pass the filter or ``MAX_SCAN_TUPLES`` were seen; if that yields fewer than
    ``top_k``, all matching rows are scored exactly. A selective filter never loses hits.
    ``exact_scope`` keeps to memories stored under exactly that user/agent/run (unset ids
    included), as consolidation compares a new fact only with its own scope's facts
    (``kind``); ``among`` keeps to these ids (scored exactly).
    """
    distance = Memory.embedding.cosine_distance(embedding)
    scoped: list[ColumnElement[bool]] = [Memory.project_id == project_id, visible(timeline)]
    if exact_scope is not None:
        scoped += _exact_scope(exact_scope)
    if kind is not None:
        scoped.append(Memory.kind == kind)
    if among is not None:
        if not among:
            return []
        scoped.append(Memory.id.in_(among))
    if threshold is not None:
        scoped.append(distance <= 1.0 - threshold)

    def matching(two_valued: bool) -> list[ColumnElement[bool]]:
        if filter_tree is None:
            return scoped
        return [*scoped, compile_filter(filter_tree, two_valued=two_valued)]

    ef_search = max(MIN_EF_SEARCH, min(MAX_EF_SEARCH, 2 * top_k))
    await session.execute(sa.select(
        sa.func.set_config("hnsw.ef_search", str(ef_search), True),
        sa.func.set_config("hnsw.iterative_scan", "strict_order", True),
        sa.func.set_config("hnsw.max_scan_tuples", str(MAX_SCAN_TUPLES), True),
    ))
    # Two-valued leaves keep the planner on the HNSW index rather than a filter index.
    approximate = (sa.select(Memory, distance).where(*matching(True))
                   .order_by(distance).limit(top_k))
    rows = (await session.execute(approximate)).all()
    if len(rows) < top_k:
        # "+ 0" keeps the planner off the vector index: exact over the matching rows, found
        # through the scope and metadata indexes.
        exact = (sa.select(Memory, distance).where(*matching(False))
                 .order_by(distance + 0).limit(top_k))
        rows = (await session.execute(exact)).all()
    return [(memory, 1.0 - float(dist)) for memory, dist in rows]


def _searchable(project_id: uuid.UUID, filter_tree: Filter | None,
                timeline: Timeline) -> list[ColumnElement[bool]]:
    clauses = [Memory.project_id == project_id, visible(timeline)]
    if filter_tree is not None:
        clauses.append(compile_filter(filter_tree))
    return clauses


async def matching_ids(session: AsyncSession, project_id: uuid.UUID, filter_tree: Filter,
                       timeline: Timeline, limit: int) -> list[uuid.UUID] | None:
    """Ids of the memories the filter and timeline let through, or None past ``limit``."""
    query = (sa.select(Memory.id).where(*_searchable(project_id, filter_tree, timeline))
             .limit(limit + 1))
    ids = list((await session.scalars(query)).all())
    return None if len(ids) > limit else ids


async def scored(session: AsyncSession, project_id: uuid.UUID, ids: Sequence[uuid.UUID],
                 embedding: list[float], filter_tree: Filter | None,
                 timeline: Timeline) -> dict[uuid.UUID, tuple[Memory, float]]:
    """These memories as they are now, each with its cosine similarity to ``embedding``;
    those that no longer match the filter or timeline are left out."""
    if not ids:
        return {}
    similarity = 1.0 - Memory.embedding.cosine_distance(embedding)
    # The vectors stay in Postgres: decoding a few hundred of them costs more than the rest.
    query = (sa.select(Memory, similarity).options(defer(Memory.embedding))
             .where(Memory.id.in_(ids), *_searchable(project_id, filter_tree, timeline)))
    return {memory.id: (memory, float(score))
            for memory, score in (await session.execute(query)).all()}


async def matching(session: AsyncSession, project_id: uuid.UUID, ids: Sequence[uuid.UUID],
                   filter_tree: Filter | None, timeline: Timeline) -> dict[uuid.UUID, Memory]:
    """These memories as they are now, those that still match the filter and timeline."""
    if not ids:
        return {}
    query = (sa.select(Memory).options(defer(Memory.embedding))
             .where(Memory.id.in_(ids), *_searchable(project_id, filter_tree, timeline)))
    return {memory.id: memory for memory in (await session.scalars(query)).all()}


async def turns_around(session: AsyncSession, project_id: uuid.UUID,
                       places: Sequence[tuple[uuid.UUID, int]], radius: int,
                       timeline: Timeline) -> list[Memory]:
    """The messages within ``radius`` turns of each (conversation, turn) place, the places'
    own included, as far as they are visible at ``timeline``; in conversation and turn
    order."""
    if not places:
        return []
    near = [sa.and_(Memory.conversation_id == conversation,
                    Memory.turn.between(turn - radius, turn + radius))
            for conversation, turn in dict.fromkeys(places)]
    query = (sa.select(Memory).options(defer(Memory.embedding))
             .where(Memory.project_id == project_id, Memory.kind == "message",
                    sa.or_(*near), visible(timeline))
             .order_by(Memory.conversation_id, Memory.turn, Memory.id))
    return list((await session.scalars(query)).all())


async def lexical_nearest(session: AsyncSession, project_id: uuid.UUID, text: str,
                          filter_tree: Filter | None, timeline: Timeline, limit: int, *,
                          per_kind: bool = False) -> list[tuple[uuid.UUID, float]]:
    """Postgres full-text search: memories sharing any stemmed word with ``text``, ranked by
    ``ts_rank_cd`` over text and context (length-normalised); ``per_kind``: of each kind."""
    words = sa.func.replace(sa.cast(sa.func.plainto_tsquery("english", text), sa.Text),
                            " & ", " | ")
    query_ts = sa.func.to_tsquery("english", words)
    rank = sa.func.ts_rank_cd(Memory.lexical, query_ts, 1)
    matching = (Memory.lexical.bool_op("@@")(query_ts),
                *_searchable(project_id, filter_tree, timeline))
    query = sa.select(Memory.id, rank).where(*matching).order_by(rank.desc()).limit(limit)
    if per_kind:
        place = sa.func.row_number().over(partition_by=Memory.kind, order_by=rank.desc())
        each = sa.select(Memory.id, rank.label("rank"), place.label("at")).where(*matching)
        ranked = each.subquery()
        query = sa.select(ranked.c.id, ranked.c.rank).where(ranked.c.at <= limit).order_by(
            ranked.c.rank.desc())
    return [(memory_id, float(score)) for memory_id, score in (await session.execute(query)).all()]


async def update_content(session: AsyncSession, memory: Memory, *, text: str | None,
                         content_hash: str | None, embedding: list[float] | None,
                         metadata: dict[str, Any] | None) -> None:
    values: dict[Any, Any] = {Memory.updated_at: sa.func.now()}
    if text is not None:
        values |= {Memory.text: text, Memory.content_hash: content_hash,
                   Memory.embedding: embedding}
    if metadata is not None:
        values[Memory.metadata_] = metadata
    await session.execute(sa.update(Memory).where(Memory.id == memory.id).values(values))
    await session.refresh(memory)


async def live_by_ids(session: AsyncSession, project_id: uuid.UUID,
                     ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Memory]:
    """The current memories among ``ids``, locked until the transaction ends."""
    if not ids:
        return {}
    query = (sa.select(Memory).where(Memory.project_id == project_id, Memory.id.in_(ids), live())
             .order_by(Memory.id).with_for_update())
    return {memory.id: memory for memory in await session.scalars(query)}


async def supersede(session: AsyncSession, memory: Memory, *, by: uuid.UUID,
                    invalid_at: datetime) -> None:
    """``memory`` stopped being true at ``invalid_at``; ``by`` is what replaced it."""
    await session.execute(sa.update(Memory).where(Memory.id == memory.id).values(
        invalid_at=invalid_at, superseded_by=by, updated_at=sa.func.now()))
    await session.refresh(memory)


async def superseded_ids(session: AsyncSession, project_id: uuid.UUID,
                         memory_id: uuid.UUID) -> list[uuid.UUID]:
    """The memories ``memory_id`` replaced, oldest first."""
    query = (sa.select(Memory.id).where(Memory.project_id == project_id,
                                        Memory.superseded_by == memory_id,
                                        Memory.deleted_at.is_(None))
             .order_by(Memory.id))
    return list((await session.scalars(query)).all())
