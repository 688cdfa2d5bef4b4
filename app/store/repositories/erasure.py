"""Erasure: what a user asked to forget, removed from every table that holds it (SQL only).

A memory's words can sit in more places than its row: its history events, the episode it was
said in (a ``message`` memory), the lexical context of the memory said after it and of the
facts distilled from it, a job's results, the graph step's extraction log and an idempotent
request's stored answer. Each is erased or rewritten here, in the caller's transaction; the
change log (ids only, no words) then tells the search index to drop the memory.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONPATH
from sqlalchemy.dialects.postgresql import UUID as PgUUID
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from app.domain import Scope, normalise
from app.store.models import (
    EntityMerge,
    Episode,
    GraphExtraction,
    IdempotencyRecord,
    Job,
    Memory,
    MemoryEvent,
    MemorySource,
)
from app.store.repositories.filter_sql import any_of

_UUIDS = PgUUID(as_uuid=True)
# A context line is recognised by this much of the erased text (contexts are capped, so the
# last line may hold only the start of a long message).
_LINE_PREFIX = 64


@dataclass
class ErasedRows:
    """How many rows of each kind an erasure removed or rewrote."""

    memories: int = 0
    history_events: int = 0
    episodes: int = 0
    messages_redacted: int = 0
    contexts_rewritten: int = 0
    jobs: int = 0
    job_results_rewritten: int = 0
    graph_extractions: int = 0
    entity_merges: int = 0
    idempotency_records: int = 0

    def add(self, other: ErasedRows) -> None:
        for field in fields(self):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))


def _rowcount(result: sa.Result[Any]) -> int:
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def _scoped(model: type[Memory] | type[Episode] | type[GraphExtraction], project_id: uuid.UUID,
            scope: Scope) -> list[ColumnElement[bool]]:
    """The rows of the scope: an unset scope id matches any."""
    clauses: list[ColumnElement[bool]] = [model.project_id == project_id]
    for column, value in ((model.user_id, scope.user_id), (model.agent_id, scope.agent_id),
                          (model.run_id, scope.run_id)):
        if value is not None:
            clauses.append(column == value)
    return clauses


async def memories_in_scope(session: AsyncSession, project_id: uuid.UUID,
                            scope: Scope) -> list[uuid.UUID]:
    """Every memory of the scope, whatever its state (superseded, expired, archived), locked."""
    query = (sa.select(Memory.id).where(*_scoped(Memory, project_id, scope))
             .order_by(Memory.id).with_for_update())
    return list((await session.scalars(query)).all())


async def erase_memories(session: AsyncSession, project_id: uuid.UUID,
                         ids: Sequence[uuid.UUID], *, copies: bool = True) -> ErasedRows:
    """The memories and every copy of their words in other rows of the project; without
    ``copies`` the rows only, for a caller that erases the conversations (and their jobs,
    extractions and answers) of the whole scope next, and with them every copy."""
    erased = ErasedRows()
    if not ids:
        return erased
    gone = (await session.execute(
        sa.select(Memory.id, Memory.kind, Memory.text, Memory.user_id, Memory.agent_id,
                  Memory.run_id)
        .where(Memory.project_id == project_id, any_of(Memory.id, ids, _UUIDS)))).all()
    if not gone:
        return erased
    found = [row.id for row in gone]
    if copies:
        await _erase_copies(session, project_id, gone, erased)
    erased.history_events = _rowcount(await session.execute(sa.delete(MemoryEvent).where(
        MemoryEvent.project_id == project_id, any_of(MemoryEvent.memory_id, found, _UUIDS))))
    # Sources, graph links, staged vectors go with the row (ON DELETE CASCADE); memories it
    # superseded forget the link (SET NULL); the delete trigger logs the id for the index.
    erased.memories = _rowcount(await session.execute(sa.delete(Memory).where(
        Memory.project_id == project_id, any_of(Memory.id, found, _UUIDS))))
    return erased


async def _erase_copies(session: AsyncSession, project_id: uuid.UUID, gone: Sequence[Any],
                        erased: ErasedRows) -> None:
    found = [row.id for row in gone]
    erased.messages_redacted = await _redact_messages(
        session, project_id, [row.id for row in gone if row.kind == "message"])
    erased.contexts_rewritten = await _drop_context_lines(session, project_id, gone, found)
    erased.job_results_rewritten = await _drop_job_results(session, project_id, found)
    erased.graph_extractions = await _blank_extracted_facts(session, project_id, found)
    erased.idempotency_records = await _drop_stored_answers(session, project_id, found)


async def erase_episodes(session: AsyncSession, project_id: uuid.UUID,
                         scope: Scope) -> ErasedRows:
    """The scope's episodes with their jobs, graph extractions and stored answers, and the
    scope's entity-deletion records (call after its memories are erased)."""
    erased = ErasedRows()
    episodes = (await session.execute(
        sa.select(Episode.id, Episode.idempotency_key)
        .where(*_scoped(Episode, project_id, scope)).with_for_update())).all()
    ids = [row.id for row in episodes]
    keys = [row.idempotency_key for row in episodes if row.idempotency_key is not None]
    if keys:
        erased.idempotency_records = _rowcount(await session.execute(
            sa.delete(IdempotencyRecord).where(IdempotencyRecord.project_id == project_id,
                                               any_of(IdempotencyRecord.key, keys,
                                                      sa.String()))))
    # The merges the scope's extractions made name its entities ("Mel" → Melanie).
    erased.entity_merges = _rowcount(await session.execute(sa.delete(EntityMerge).where(
        EntityMerge.project_id == project_id, EntityMerge.extraction_id.in_(
            sa.select(GraphExtraction.id).where(*_scoped(GraphExtraction, project_id, scope))))))
    if ids:
        erased.jobs = _rowcount(await session.execute(sa.delete(Job).where(
            Job.project_id == project_id, any_of(Job.episode_id, ids, _UUIDS))))
        erased.graph_extractions = _rowcount(await session.execute(
            sa.delete(GraphExtraction).where(GraphExtraction.project_id == project_id,
                                             any_of(GraphExtraction.episode_id, ids, _UUIDS))))
        erased.episodes = _rowcount(await session.execute(sa.delete(Episode).where(
            Episode.project_id == project_id, any_of(Episode.id, ids, _UUIDS))))
    # What is left of the scope's graph log: entity deletions (they name no episode).
    erased.graph_extractions += _rowcount(await session.execute(
        sa.delete(GraphExtraction).where(*_scoped(GraphExtraction, project_id, scope))))
    return erased


async def _redact_messages(session: AsyncSession, project_id: uuid.UUID,
                           message_ids: Sequence[uuid.UUID]) -> int:
    """Empties the erased messages in their episodes (the episode stays: the other messages
    are still the user's), marking each ``erased``."""
    if not message_ids:
        return 0
    places = (await session.execute(
        sa.select(MemorySource.episode_id, MemorySource.message_indices)
        .where(MemorySource.project_id == project_id,
               any_of(MemorySource.memory_id, message_ids, _UUIDS)))).all()
    by_episode: dict[uuid.UUID, set[int]] = {}
    for episode_id, cited in places:
        by_episode.setdefault(episode_id, set()).update(cited)
    redacted = 0
    for episode_id, indices in by_episode.items():
        episode = await session.get(Episode, episode_id, with_for_update=True)
        if episode is None:
            continue
        messages = [dict(message) for message in episode.messages]
        for index in sorted(indices):
            if 0 <= index < len(messages):
                messages[index] = {"role": messages[index].get("role", "user"), "content": "",
                                   "erased": True}
                redacted += 1
        await session.execute(sa.update(Episode).where(Episode.id == episode_id)
                              .values(messages=messages))
    return redacted


def _mentions(line: str, text: str) -> bool:
    """The context line holds ``text`` (a message, maybe after its speaker's name, maybe cut
    short by the context's cap)."""
    said = normalise(line.split(": ", 1)[1]) if ": " in line else ""
    for body in (normalise(line), said):
        if body and (body == text or (len(body) >= _LINE_PREFIX and text.startswith(body))
                     or (len(text) >= _LINE_PREFIX and text in body)):
            return True
    return False


async def _drop_context_lines(session: AsyncSession, project_id: uuid.UUID,
                              gone: Sequence[Any], erased: Sequence[uuid.UUID]) -> int:
    """Removes the erased texts from the lexical context of the other memories of their
    scopes (the message said after one, the facts distilled from it)."""
    rewritten: dict[uuid.UUID, str | None] = {}
    for row in gone:
        probe = row.text[:_LINE_PREFIX]
        scope = Scope(row.user_id, row.agent_id, row.run_id)
        holders = (await session.execute(
            sa.select(Memory.id, Memory.context)
            .where(Memory.user_id.is_not_distinct_from(scope.user_id),
                   Memory.agent_id.is_not_distinct_from(scope.agent_id),
                   Memory.run_id.is_not_distinct_from(scope.run_id),
                   Memory.project_id == project_id,
                   sa.func.strpos(Memory.context, probe) > 0,
                   sa.not_(any_of(Memory.id, erased, _UUIDS))))).all()
        for memory_id, context in holders:
            current = rewritten.get(memory_id, context) or ""
            kept = [line for line in current.split("\n") if not _mentions(line, row.text)]
            if len(kept) != len(current.split("\n")):
                rewritten[memory_id] = "\n".join(kept) or None
    for memory_id, context in rewritten.items():
        await session.execute(sa.update(Memory).where(Memory.id == memory_id)
                              .values(context=context))
    return len(rewritten)


_RESULT_NAMES = ("id", "previous_id")


def _names_any(column: Any, path: str, names: set[str]) -> ColumnElement[bool]:
    """The JSON path ``path`` (comparing with ``$ids[*]``) finds one of ``names`` in
    ``column``: one array parameter, however many names."""
    ids = sa.cast(sa.literal(sorted(names), sa.ARRAY(sa.Text)), sa.ARRAY(sa.Text))
    found: ColumnElement[bool] = sa.func.jsonb_path_exists(
        column, sa.cast(sa.literal(path), JSONPATH),
        sa.func.jsonb_build_object("ids", sa.func.to_jsonb(ids)))
    return found


async def _drop_job_results(session: AsyncSession, project_id: uuid.UUID,
                            ids: Sequence[uuid.UUID]) -> int:
    """Drops the results that name an erased memory (as the memory, or as the one it
    superseded) from the project's jobs."""
    names = {str(memory_id) for memory_id in ids}
    jobs = (await session.execute(
        sa.select(Job.id, Job.results).where(
            Job.project_id == project_id, Job.results.is_not(None),
            sa.or_(*(_names_any(Job.results, f"$[*] ? (@.{name} == $ids[*])", names)
                     for name in _RESULT_NAMES))))).all()
    for job_id, results in jobs:
        kept = [result for result in results
                if not any(result.get(name) in names for name in _RESULT_NAMES)]
        await session.execute(sa.update(Job).where(Job.id == job_id).values(results=kept))
    return len(jobs)


async def _blank_extracted_facts(session: AsyncSession, project_id: uuid.UUID,
                                 ids: Sequence[uuid.UUID]) -> int:
    """Takes the text and memory id of erased facts out of the graph step's log, marking them
    ``erased``: a replay leaves out their relations, as it does a deleted memory's."""
    names = {str(memory_id) for memory_id in ids}
    rows = (await session.execute(
        sa.select(GraphExtraction.id, GraphExtraction.payload).where(
            GraphExtraction.project_id == project_id,
            _names_any(GraphExtraction.payload, "$.facts[*] ? (@.memory_id == $ids[*])",
                       names)))).all()
    for extraction_id, payload in rows:
        facts = [{**fact, "text": "", "memory_id": None, "erased": True}
                 if fact.get("memory_id") in names else fact
                 for fact in payload.get("facts", [])]
        await session.execute(sa.update(GraphExtraction).where(
            GraphExtraction.id == extraction_id).values(payload={**payload, "facts": facts}))
    return len(rows)


async def _drop_stored_answers(session: AsyncSession, project_id: uuid.UUID,
                               ids: Sequence[uuid.UUID]) -> int:
    """Drops the erased memories from the stored answers of idempotent adds (``results``)."""
    names = {str(memory_id) for memory_id in ids}
    rows = (await session.execute(
        sa.select(IdempotencyRecord.key, IdempotencyRecord.response).where(
            IdempotencyRecord.project_id == project_id,
            IdempotencyRecord.response.is_not(None),
            _names_any(IdempotencyRecord.response, "$.results[*] ? (@.id == $ids[*])",
                       names)))).all()
    for key, response in rows:
        results = [result for result in response.get("results", [])
                   if result.get("id") not in names]
        await session.execute(sa.update(IdempotencyRecord).where(
            IdempotencyRecord.project_id == project_id, IdempotencyRecord.key == key
        ).values(response={**response, "results": results}))
    return len(rows)
