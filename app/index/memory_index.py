"""The in-process search projection: every memory's vector (FAISS) and words (BM25), with
what search filters on, kept current from Postgres's change log.

Postgres stays the truth. Each API process holds one ``MemoryIndex``:

* **Start.** Load the snapshot from disk (``IndexState``: vectors, words, slot table and the
  change-log position it reflects) and catch up from the change log; with no usable snapshot,
  read every memory once (the stored embeddings: nothing is embedded again).
* **Current.** ``catch_up`` reads the change log past the cursor and applies the current
  state of each changed memory (idempotent). A background task polls every
  ``poll_interval_s``; every search also catches up first, one indexed range read that finds
  nothing most of the time, so a write that committed before a search began is in that
  search, on every replica (read-your-writes). Holes in the log: ``cursor``.
* **Filters, exactly.** Scope ids and time (current, ``as_of``, superseded) are held per slot
  and filtered here (``slots``); any other filter condition is resolved by Postgres to the
  ids that match. The vector and lexical indexes then score only the allowed slots, so a
  filtered search returns the true top k of what matches. A filter matching more than
  ``filter_ids_max`` memories is answered by Postgres instead.
* **Device copy.** With ``search.vector_backend`` torch or faiss (auto: on a GPU), searches
  allowed more than ``host_max`` slots scan a copy of the vectors on ``search.device``
  exactly, the allowed slots as a mask, in micro-batches with concurrent ones (``device``).
* **Compaction.** Dead slots are dropped by building the state again off to the side once
  they outnumber the live ones, then swapping it in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import SearchSettings, Settings
from app.domain import MemoryKind, ProjectScope, Timeline
from app.embeddings import Embedder
from app.index.candidates import (
    CandidateQuery,
    Candidates,
    Lap,
    PostgresCandidates,
    Ranked,
    merged,
)
from app.index.cursor import ChangeCursor
from app.index.device import Batcher
from app.index.found import FromIndex, ranked
from app.index.slots import Slots
from app.index.state import IndexState
from app.index.vectors import VectorIndex
from app.store.db import Database
from app.store.repositories import changes
from app.store.repositories import memories as repository

logger = logging.getLogger(__name__)

BATCH = 5_000


async def open_memory_index(settings: Settings, database: Database, embedder: Embedder, *,
                            rebuild: bool = False) -> MemoryIndex | None:
    """The in-process search index, loaded (unless ``rebuild``) or built, and caught up;
    None when ``search.index`` is ``postgres``. Snapshots live in a folder per database."""
    if settings.search.index != "memory":
        return None
    async with database.session_scope() as session:
        identity = await changes.database_identity(session)
    folder = (settings.search.snapshot_dir or settings.data_dir / "index") / identity
    # Its own pool: every search catches the index up first, inside a request that holds a
    # connection of the main pool; from that pool too, a burst of searches deadlocked it.
    pool = database.companion(settings.db.index_pool_size, settings.db.pool_timeout_s)
    index = MemoryIndex(pool, embedder.dimension, embedder.model_name, settings.search, folder,
                        own_pool=True)
    try:
        await index.start(rebuild=rebuild, poll=not rebuild)
    except BaseException:
        await pool.engine.dispose()
        raise
    return index


class MemoryIndex:
    def __init__(self, database: Database, dimension: int, model: str,
                 settings: SearchSettings, snapshot_dir: Path | None, *,
                 own_pool: bool = False):
        self.database = database
        self.own_pool = own_pool  # ``database`` is a pool of its own, closed with the index
        self.dimension = dimension
        self.model = model
        self.settings = settings
        self.snapshot_dir = snapshot_dir
        self.state = IndexState.empty(dimension, settings)
        self.fallback = PostgresCandidates()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._since_snapshot = 0
        self._erased_at: float | None = None  # the first erasure the snapshot still holds
        self._last_catch_up = 0.0
        self._batcher = Batcher(settings.batch_window_ms / 1000)

    @property
    def vectors(self) -> VectorIndex:
        return self.state.vectors

    @property
    def live(self) -> int:
        return self.state.live

    @property
    def position(self) -> int:
        return self.state.cursor.position

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, *, rebuild: bool = False, poll: bool = True) -> None:
        began = time.perf_counter()
        source = "snapshot"
        if rebuild or not await asyncio.to_thread(self._load) or await self._unusable():
            source = "postgres"
            await self.build()
        await self.catch_up_fully()
        await self.grow()
        logger.info("memory index ready from %s in %.1fs: %d memories, %s, position %d",
                    source, time.perf_counter() - began, self.live, self.vectors.describe(),
                    self.position)
        if poll:
            self._task = asyncio.create_task(self._poll(), name="memory-index-poll")

    async def aclose(self, *, save: bool = True) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if save and self._erased_at is not None:
            await self.forget_erased()  # not even a last snapshot keeps erased words
        elif save and self.snapshot_dir is not None:
            async with self._lock:
                await asyncio.to_thread(self.save)
        if self.own_pool:
            await self.database.engine.dispose()

    async def grow(self) -> None:
        """Past ``flat_max`` vectors, an HNSW index is built in a thread (searches go on
        over the flat one; changes wait, as the lock is held) and swapped in."""
        if not self.vectors.outgrown:
            return
        async with self._lock:
            if self.vectors.outgrown:
                self.vectors.use(await asyncio.to_thread(self.vectors.hnsw_copy))

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.settings.poll_interval_s)
            try:
                await self.catch_up()
                if self._erased_at is not None and \
                        time.monotonic() - self._erased_at >= self.settings.erase_snapshot_s:
                    await self.forget_erased()
                elif self._since_snapshot >= self.settings.snapshot_every:
                    async with self._lock:
                        await asyncio.to_thread(self.save)
                await self.grow()
                if self.state.dead > max(10_000, self.live):
                    await self.compact()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("memory index: catching up with the change log failed")

    async def build(self) -> None:
        """Everything again from the memories table (no snapshot, or ``anamnesis reindex``)."""
        async with self._lock:
            state = IndexState.empty(self.dimension, self.settings)
            async with self.database.session_scope() as session:
                # Changes committed from here on are caught up; holes below are waited for.
                top = await changes.last_seq(session)
                known = await changes.seqs_in(session, max(0, top - 10_000), top)
            after: uuid.UUID | None = None
            while True:
                async with self.database.session_scope() as session:
                    rows = await changes.every_memory(session, after, BATCH)
                if not rows:
                    break
                after = rows[-1].id
                state.apply(rows)
            state.cursor = ChangeCursor.after_build(top, known, time.monotonic())
            self.state = state
            self._since_snapshot = self.live

    async def compact(self) -> None:
        """The live slots renumbered in a thread (searches go on), then swapped in."""
        async with self._lock:
            began = time.perf_counter()
            self.state = await asyncio.to_thread(self.state.compacted, self.dimension)
            logger.info("memory index compacted to %d memories in %.1fs", self.live,
                        time.perf_counter() - began)

    async def forget_erased(self) -> None:
        """Erased memories leave the process (their words, vectors and scope names) and the
        snapshot: compacted, then saved."""
        async with self._lock:
            self._erased_at = None
            self.state = await asyncio.to_thread(self.state.compacted, self.dimension)
            await asyncio.to_thread(self.save)

    def holding(self, ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
        """Those of ``ids`` the index holds."""
        return [memory_id for memory_id, _ in self.state.slots.slots(ids)]

    # -- catching up -----------------------------------------------------------------------

    async def catch_up_fully(self) -> None:
        while await self.catch_up():
            pass

    async def refresh(self, began: float, session: AsyncSession | None = None) -> None:
        """Makes sure every change committed before ``began`` (``time.monotonic()``) is
        applied: a catch-up that started after it is enough, and so is the change log's last
        number, read on the caller's ``session``, being one already applied (the common case:
        one index lookup, no catch-up; it then counts as a catch-up started before it)."""
        if self._last_catch_up >= began:
            return
        checked = time.monotonic()
        if session is not None and not self.state.cursor.holes and \
                await changes.last_seq(session) <= self.position:
            self._last_catch_up = max(self._last_catch_up, checked)
            return
        async with self._lock:
            while self._last_catch_up < began and await self._catch_up_locked():
                pass

    async def catch_up(self) -> bool:
        """One round; True when it read a full batch (more may be waiting)."""
        async with self._lock:
            return await self._catch_up_locked()

    async def _catch_up_locked(self) -> bool:
        now = time.monotonic()
        cursor = self.state.cursor
        async with self.database.session_scope() as session:
            found = await changes.after(session, cursor.position, BATCH)
            late = await changes.among(session, sorted(cursor.late)) if cursor.late else []
            fresh = cursor.fresh(found, late)
            rows = await changes.memories(session, list(dict.fromkeys(m for _, m in fresh)))
        present = {memory_id for _, memory_id in fresh}
        read = {row.id for row in rows}
        erased = [m for m in present if m not in read]
        if self._erased_at is None and self.holding(erased):
            self._erased_at = now
        self.state.apply(rows, erased=erased)
        cursor.advance(found, late, now, self.settings.gap_timeout_s)
        self._since_snapshot += len(fresh)
        more = len(found) >= BATCH
        if not more:
            # Only now: a search that began before this round started may rely on it once
            # the round is applied (and read everything), not while it is still reading.
            self._last_catch_up = now
        return more

    # -- search ----------------------------------------------------------------------------

    async def candidates(self, session: AsyncSession, query: CandidateQuery,
                         lap: Lap | None = None) -> Candidates:
        await self.refresh(query.began, session)
        if lap is not None:
            lap("catch_up")
        if query.dense and query.model is not None and query.model != self.model:
            # This process is switching model and the query's vector is of the other one
            # (``app.index.switch``): Postgres answers, as it does while the index rebuilds.
            return await self.fallback.candidates(session, query, lap)
        among = None
        if query.extra is not None:
            tree = query.tree
            assert tree is not None
            among = await repository.matching_ids(session, query.where.project_id, tree,
                                                  query.timeline, self.settings.filter_ids_max)
            if among is None:  # too many to list: Postgres answers this search
                return await self.fallback.candidates(session, query, lap)
        # One state throughout: a compaction swapping in another (slots renumbered) while
        # this search waits in a batch must not mix its slot numbers with ours. (Lexical
        # first: it does not wait, so it reads this state too.)
        state = self.state
        allowed = state.slots.allowed(query.where, query.timeline, among, kinds=query.kinds)
        found = FromIndex(state, query, allowed)
        # ``depth`` of each kind (``CandidateQuery.depth``); one kind: one list
        groups = state.slots.by_kind(allowed) if query.kinds is None else [allowed]
        if query.lexical:
            found.lexical = self.lexical_search(query.where.project_id, query.text, allowed,
                                                query.depth, groups)
        if query.dense:
            found.dense = merged(await asyncio.gather(*(
                self._nearest(state, query.vector, query.depth, group) for group in groups)))
        return found

    async def _nearest(self, state: IndexState, vector: npt.NDArray[np.float32], n: int,
                       allowed: Slots) -> Ranked:
        if state.vectors.on_device(allowed):  # batched with concurrent ones
            return ranked(state, *await self._batcher(state.vectors, vector, n, allowed))
        return ranked(state, *state.vectors.search(vector, n, allowed))

    async def speakers_named(self, session: AsyncSession, where: ProjectScope, query: str,
                             began: float) -> set[str]:
        await self.refresh(began, session)  # the search's one look at the change log
        return self.state.slots.speakers_named(where, query)

    def allowed(self, where: ProjectScope, timeline: Timeline,
                among: Sequence[uuid.UUID] | None = None,
                kinds: Sequence[MemoryKind] | None = None) -> Slots:
        return self.state.slots.allowed(where, timeline, among, kinds=kinds)

    def dense(self, query: npt.NDArray[np.float32], allowed: Slots, n: int) -> Ranked:
        return ranked(self.state, *self.vectors.search(query, n, allowed))

    def lexical_search(self, project_id: uuid.UUID, query: str, allowed: Slots, n: int,
                       groups: Sequence[Slots] | None = None) -> Ranked:
        """The ``n`` best of ``allowed`` by BM25, or of each of ``groups`` (parts of it),
        scored once."""
        project = self.state.slots.codes.get(str(project_id))
        if project is None or allowed.size == 0:
            return []
        mask = np.zeros(self.vectors.size, dtype=bool)
        mask[allowed] = True
        return merged([ranked(self.state, *found) for found in self.state.lexical.search_each(
            project, query, mask, n, groups if groups is not None else [allowed])])

    # -- snapshot --------------------------------------------------------------------------

    def save(self) -> None:
        """Writes the snapshot (``IndexState.save``)."""
        if self.snapshot_dir is None:
            return
        began = time.perf_counter()
        self.state.save(self.snapshot_dir, {"dimension": self.dimension, "model": self.model},
                        writer=f"{os.getpid()}-{id(self)}")
        self._since_snapshot = 0
        logger.info("memory index snapshot: %d memories at position %d in %.1fs", self.live,
                    self.position, time.perf_counter() - began)

    def _load(self) -> bool:
        """The snapshot, if there is a usable one."""
        loaded = None if self.snapshot_dir is None else IndexState.load(
            self.snapshot_dir, self.dimension, self.model, self.settings)
        if loaded is not None:
            self.state = loaded
        return loaded is not None

    async def _unusable(self) -> bool:
        """The loaded snapshot cannot be caught up: the change log was pruned past its
        position, or it is ahead of the database (a restored backup)."""
        async with self.database.session_scope() as session:
            first = await changes.first_seq(session)
            last = await changes.last_seq(session)
        if (first is not None and first > self.position + 1) or self.position > last:
            logger.warning("memory index snapshot at position %d, change log holds %s..%d; "
                           "rebuilding from Postgres", self.position, first, last)
            return True
        return False
