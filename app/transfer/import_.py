"""The second pass of an import: the surveyed lines written into the caller's project, batch
by batch, each batch one transaction (``bulk_insert``: copied into a temporary table, then
inserted with ``ON CONFLICT DO NOTHING``).

An import stopped anywhere (a crash, a lost connection, Ctrl-C) has committed whole batches
only; sent again, it finds them by their ids (``ids``) and goes on from there, embedding only
what is not stored yet. Vectors are taken as given when they are of the database's model;
other memories are embedded here, in batches. Lines of one record type follow each other in
an export (episodes, memories, sources, history, graph log, entities, merges, relations), so
each batch is of one type; a line pointing at a memory or episode the project does not hold
is left out and named in the receipt.
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from app.domain import content_hash, embedding_text, normalise
from app.embeddings import Embedder
from app.errors import ValidationFailed
from app.store.db import Database
from app.store.graph.base import GraphStore
from app.store.repositories import bulk_insert
from app.store.repositories import embedding_space as spaces
from app.transfer import graph_lines
from app.transfer.ids import place
from app.transfer.records import (
    RECORDS,
    EpisodeLine,
    EventLine,
    ExtractionLine,
    Header,
    MemoryLine,
    MergeLine,
    Record,
    SourceLine,
    parse,
)
from app.transfer.schemas import ImportReceipt, RecordCounts, SkippedLine
from app.transfer.survey import Space, Survey, split_lines, usable_vector

BATCH = 1000
MAX_SKIPPED = 100
# An extraction log entry for an entity deleted through the API (``repositories.graph``).
DELETED_ENTITY = "entity_deleted"

OnBatch = Callable[[int, "Loader"], Awaitable[None]]
Numbered = list[tuple[int, Any]]


@dataclass(frozen=True)
class Target:
    """Where an import writes: the caller's project, with what it needs to write there."""

    database: Database
    graph: GraphStore
    embedder: Embedder
    project_id: uuid.UUID


async def space_of(database: Database) -> Space:
    async with database.session_scope() as session:
        current = await spaces.current(session)
    return Space(current.model, current.dimension)


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)


class Loader:
    """Writes one surveyed file; ``counts``, ``skipped`` and the vector tallies are what the
    receipt reports, also while it runs (``on_batch``)."""

    def __init__(self, target: Target, header: Header, space: Space, *, batch: int = BATCH,
                 on_batch: OnBatch | None = None) -> None:
        self.target, self.header, self.space = target, header, space
        self.batch, self.on_batch = batch, on_batch
        # Ids are kept when the file is this project's own export; else graph ids are made
        # the project's own (``graph_lines``).
        self.same_project = header.project.id == target.project_id
        self.counts = {name: RecordCounts() for name in RECORDS}
        self.skipped: list[SkippedLine] = []
        self.given = self.embedded = self.lines = 0
        # Superseded memory → its replacement, until the replacement is stored.
        self.pending: dict[uuid.UUID, uuid.UUID] = {}
        # A file's entity id → the entity's id in the project.
        self.entities: dict[uuid.UUID, uuid.UUID] = {}
        self.began = time.perf_counter()

    async def run(self, lines: AsyncIterable[bytes]) -> ImportReceipt:
        """Writes the lines (already surveyed: every one valid)."""
        batch: Numbered = []
        number = 0
        async for raw in lines:
            number += 1
            if not raw.strip():
                continue
            record: Record = parse(raw)
            if isinstance(record, Header):
                continue
            if batch and (batch[0][1].record != record.record or len(batch) >= self.batch):
                await self._flush(batch)
                batch = []
            batch.append((number, record))
        await self._flush(batch)
        self.lines = number
        return self.receipt()

    def receipt(self) -> ImportReceipt:
        return ImportReceipt(lines=self.lines, records=self.counts, vectors_given=self.given,
                             vectors_embedded=self.embedded,
                             unresolved_supersessions=len(self.pending), skipped=self.skipped,
                             seconds=round(time.perf_counter() - self.began, 3))

    def skip(self, line: int, record: str, reason: str) -> None:
        self.counts[record].skipped += 1
        if len(self.skipped) < MAX_SKIPPED:
            self.skipped.append(SkippedLine(line=line, record=record, reason=reason))

    async def _flush(self, batch: Numbered) -> None:
        if not batch:
            return
        kind = batch[0][1].record
        handlers: dict[str, Callable[[Numbered], Awaitable[None]]] = {
            "episode": self._episodes, "memory": self._memories, "source": self._sources,
            "event": self._events, "extraction": self._extractions, "merge": self._merges,
            "entity": self._entities, "relation": self._relations}
        await handlers[kind](batch)
        self.lines = batch[-1][0]
        if self.on_batch is not None:
            await self.on_batch(self.lines, self)

    def _tally(self, record: str, tried: Sequence[tuple[int, Any]], inserted: set[Any],
               reason: str) -> None:
        """``tried``: (line, key) of the rows sent; those not inserted are skipped."""
        for line, key in tried:
            if key in inserted:
                self.counts[record].inserted += 1
            else:
                self.skip(line, record, reason)

    async def _memories(self, batch: Numbered) -> None:
        project = self.target.project_id
        lines: list[tuple[int, MemoryLine]] = batch
        async with self.target.database.session_scope() as session:
            placed = await place(session, "memories", project,
                                 [id_ for _, r in lines for id_ in (r.id, r.superseded_by)])
        for _, record in lines:
            if record.superseded_by is not None:
                self.pending[placed[record.id]] = placed[record.superseded_by]
        todo = self._new("memory", [(n, r, placed[r.id]) for n, r in lines], placed.held)
        vectors = await self._vectors([record for _, record, _ in todo])
        rows = [(new, r.kind, r.user_id, r.agent_id, r.run_id, normalise(r.text),
                 content_hash(r.text), _json(r.metadata), vector, r.context, r.conversation_id,
                 r.turn, r.created_at, r.updated_at, r.expires_at, r.valid_at, r.invalid_at,
                 r.lasting)
                for (_, r, new), vector in zip(todo, vectors, strict=True)]
        async with self.target.database.session_scope() as session:
            inserted = await bulk_insert.insert(session, bulk_insert.MEMORIES, project, rows)
            settled = await bulk_insert.link_supersessions(session, project, self.pending)
        for memory in settled:
            del self.pending[memory]
        self._tally("memory", [(n, new) for n, _, new in todo], inserted,
                    "an identical current fact is already stored in its scope")

    async def _vectors(self, records: Sequence[MemoryLine]) -> list[npt.NDArray[np.float32]]:
        """Each memory's vector: the file's when it is of the database's model, else made
        here (in one call: the embedder batches it)."""
        texts = [embedding_text(normalise(r.text), r.metadata) for r in records
                 if not usable_vector(r, self.header, self.space)]
        made = iter(await self.target.embedder.embed(texts) if texts else [])
        vectors = []
        for record in records:
            if usable_vector(record, self.header, self.space):
                assert record.vector is not None
                vectors.append(record.vector)
            else:
                vectors.append(np.asarray(next(made), dtype=np.float32))
        self.embedded += len(texts)
        self.given += len(records) - len(texts)
        return vectors

    async def _episodes(self, batch: Numbered) -> None:
        project = self.target.project_id
        lines: list[tuple[int, EpisodeLine]] = batch
        async with self.target.database.session_scope() as session:
            placed = await place(session, "episodes", project, [r.id for _, r in lines])
            todo = self._new("episode", [(n, r, placed[r.id]) for n, r in lines], placed.held)
            inserted = await bulk_insert.insert(session, bulk_insert.EPISODES, project, [
                (new, r.user_id, r.agent_id, r.run_id, _json(r.messages), _json(r.metadata),
                 r.instructions, r.observed_at, r.expires_at, r.created_at)
                for _, r, new in todo])
        self._tally("episode", [(n, new) for n, _, new in todo], inserted, "not stored")

    def _new(self, record: str, lines: list[tuple[int, Any, uuid.UUID]],
             held: frozenset[uuid.UUID]) -> list[tuple[int, Any, uuid.UUID]]:
        """The lines whose row is not stored yet (each id once); the others are counted
        present."""
        todo, seen = [], set()
        for number, line, new in lines:
            if new in held or new in seen:
                self.counts[record].present += 1
            else:
                seen.add(new)
                todo.append((number, line, new))
        return todo

    async def _sources(self, batch: Numbered) -> None:
        project = self.target.project_id
        lines: list[tuple[int, SourceLine]] = batch
        async with self.target.database.session_scope() as session:
            memories = await place(session, "memories", project, [r.memory_id for _, r in lines])
            episodes = await place(session, "episodes", project, [r.episode_id for _, r in lines])
            keyed = [(n, r, (memories[r.memory_id], episodes[r.episode_id])) for n, r in lines]
            rows: dict[tuple[uuid.UUID, uuid.UUID], tuple[Any, ...]] = {}
            for _, r, key in keyed:
                rows.setdefault(key, (*key, r.message_indices, r.created_at))
            inserted = await bulk_insert.insert(session, bulk_insert.SOURCES, project,
                                                list(rows.values()))
        for number, _, (memory, episode) in keyed:
            if (memory, episode) in inserted:
                self.counts["source"].inserted += 1
                inserted.discard((memory, episode))
            elif memory in memories.held and episode in episodes.held:
                self.counts["source"].present += 1
            else:
                self.skip(number, "source", "its memory or episode is not in the project")

    async def _events(self, batch: Numbered) -> None:
        project = self.target.project_id
        lines: list[tuple[int, EventLine]] = batch
        async with self.target.database.session_scope() as session:
            placed = await place(session, "memory_events", project, [r.id for _, r in lines])
            memories = await place(session, "memories", project, [
                id_ for _, r in lines for id_ in (r.memory_id, r.related_memory_id)])
            episodes = await place(session, "episodes", project, [r.episode_id for _, r in lines])
            todo = self._new("event", [(n, r, placed[r.id]) for n, r in lines], placed.held)
            inserted = await bulk_insert.insert(session, bulk_insert.EVENTS, project, [
                (new, memories[r.memory_id], r.event, r.old_memory, r.new_memory,
                 _json(r.old_metadata), _json(r.new_metadata), r.actor_key_id, r.request_id,
                 episodes.get(r.episode_id), r.job_id, r.message_indices, r.model,
                 r.prompt_version, r.decision, memories.get(r.related_memory_id), r.created_at)
                for _, r, new in todo])
        self._tally("event", [(n, new) for n, _, new in todo], inserted,
                    "its memory is not in the project")

    async def _extractions(self, batch: Numbered) -> None:
        project = self.target.project_id
        lines: list[tuple[int, ExtractionLine]] = batch
        cited = [_fact_memory(fact) for _, r in lines for fact in r.payload.get("facts", [])]
        async with self.target.database.session_scope() as session:
            placed = await place(session, "graph_extractions", project, [r.id for _, r in lines])
            episodes = await place(session, "episodes", project, [r.episode_id for _, r in lines])
            memories = await place(session, "memories", project, cited)
            todo = self._new("extraction", [(n, r, placed[r.id]) for n, r in lines],
                             placed.held)
            inserted = await bulk_insert.insert(session, bulk_insert.EXTRACTIONS, project, [
                (new, episodes.get(r.episode_id), r.job_id, r.user_id, r.agent_id, r.run_id,
                 _json(self._payload(r.payload, memories.new)), r.observed_at, r.created_at,
                 r.applied_at) for _, r, new in todo])
        self._tally("extraction", [(n, new) for n, _, new in todo], inserted, "not stored")

    def _payload(self, payload: dict[str, Any],
                 memories: dict[uuid.UUID, uuid.UUID]) -> dict[str, Any]:
        """The extraction as the project knows it: its facts' memories (and a deleted
        entity) under the ids they were imported with."""
        facts = []
        for fact in payload.get("facts", []):
            memory = _fact_memory(fact)
            facts.append({**fact, "memory_id": str(memories[memory])} if memory else fact)
        changed = {**payload, "facts": facts} if "facts" in payload else dict(payload)
        if payload.get("kind") == DELETED_ENTITY:
            entity = _uuid(payload.get("entity_id"))
            if entity is not None and entity in self.entities:
                changed["entity_id"] = str(self.entities[entity])
        return changed

    async def _merges(self, batch: Numbered) -> None:
        project = self.target.project_id
        lines: list[tuple[int, MergeLine]] = batch
        async with self.target.database.session_scope() as session:
            placed = await place(session, "entity_merges", project, [r.id for _, r in lines])
            extractions = await place(session, "graph_extractions", project,
                                      [r.extraction_id for _, r in lines])
            todo = []
            for number, record, new in self._new(
                    "merge", [(n, r, placed[r.id]) for n, r in lines], placed.held):
                entity = self.entities.get(record.entity_id) or (
                    record.entity_id if self.same_project else None)
                if entity is None:
                    self.skip(number, "merge", "its entity is not in the file")
                else:
                    todo.append((number, record, new, entity))
            inserted = await bulk_insert.insert(session, bulk_insert.MERGES, project, [
                (new, entity, r.alias, r.reason, r.score, extractions.get(r.extraction_id),
                 r.created_at, r.undone_at) for _, r, new, entity in todo])
        self._tally("merge", [(n, new) for n, _, new, _ in todo], inserted, "not stored")

    async def _entities(self, batch: Numbered) -> None:
        await graph_lines.put_entities(self, batch)

    async def _relations(self, batch: Numbered) -> None:
        await graph_lines.put_relations(self, batch)


def _uuid(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value)) if value else None
    except ValueError:
        return None


def _fact_memory(fact: Any) -> uuid.UUID | None:
    return _uuid(fact.get("memory_id")) if isinstance(fact, dict) else None


async def import_body(chunks: AsyncIterable[bytes], target: Target) -> ImportReceipt:
    """An import sent as a request body: spooled to a temporary file while every line is
    surveyed, then written from it; a bad line refuses the whole file (422) and writes
    nothing."""
    found = Survey(await space_of(target.database))
    with tempfile.TemporaryFile(prefix="anamnesis-import-") as spool:
        number = 0
        async for raw in split_lines(chunks):
            number += 1
            found.feed(number, raw)
            spool.write(raw)
        found.finish()
        if not found.ok:
            raise ValidationFailed(found.summary())
        spool.seek(0)
        return await load(target, found, file_lines(spool))


async def file_lines(file: IO[bytes]) -> AsyncIterator[bytes]:
    for raw in file:
        yield raw


async def load(target: Target, survey: Survey, lines: AsyncIterable[bytes], *,
               batch: int = BATCH, on_batch: OnBatch | None = None) -> ImportReceipt:
    """Writes a file ``survey`` found valid (its lines read again from the start)."""
    if not survey.ok or survey.header is None:
        raise ValueError("only a file whose survey found no bad line is loaded")
    loader = Loader(target, survey.header, survey.space, batch=batch, on_batch=on_batch)
    return await loader.run(lines)
