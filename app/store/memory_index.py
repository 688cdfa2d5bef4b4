"""The in-process search projection: every memory's vector (FAISS) and words (BM25), with
what search filters on, kept current from Postgres's change log.

Postgres stays the truth. Each API process holds one ``MemoryIndex``:

* **Start.** Load the snapshot from disk (vectors, words, slot table and the change-log
  position it reflects) and catch up from the change log; with no usable snapshot, read
  every memory once (the stored embeddings: nothing is embedded again).
* **Current.** ``catch_up`` reads the change log past the last position and applies the
  current state of each changed memory (idempotent: applying one twice changes nothing).
  A background task polls every ``poll_interval_s``; every search also catches up first,
  one indexed range read that finds nothing most of the time, so a write that committed
  before a search began is in that search, on every replica (read-your-writes).
* **Holes.** Sequence numbers are taken when a transaction writes and appear when it
  commits, so a number can be missing for a while. The position stops below a hole for
  ``gap_timeout_s``, then moves on, but the hole is checked again on every poll for an
  hour, so a long transaction's changes are applied late rather than never.
* **Filters, exactly.** Scope ids and time (current, ``as_of``, superseded) are held per
  slot and filtered here; any other filter condition is resolved by Postgres to the ids
  that match (``resolve_ids``). The vector and lexical indexes then score only the allowed
  slots, so a filtered search returns the true top k of what matches.
* **Slots.** A memory's vector and words get a slot; a changed text gets a new slot and the
  old one is dead (masked). ``compact`` makes the index again from the live slots once they
  are outnumbered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import SearchSettings, Settings
from app.embeddings import Embedder
from app.store.db import Database
from app.store.index_snapshot import read_snapshot, write_snapshot
from app.store.lexical_index import LexicalIndex
from app.store.repositories import changes
from app.store.repositories.changes import IndexRow
from app.store.vector_index import Batcher, VectorIndex

logger = logging.getLogger(__name__)

NEVER = np.iinfo(np.int64).max
BATCH = 5_000
LATE_FOR_S = 3600.0  # how long a hole in the change log is checked again
SCOPE_FIELDS = ("user_id", "agent_id", "run_id")


def _ms(value: datetime | None) -> int:
    if value is None:
        return NEVER
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp() * 1000)


def lexical_text(text: str, context: str | None) -> str:
    return f"{text}\n{context}" if context else text


@dataclass(frozen=True)
class View:
    """What a search may see: the caller's project, the scope ids it names, and a moment."""

    project_id: uuid.UUID
    user_id: str | None = None
    agent_id: str | None = None
    run_id: str | None = None
    as_of: datetime | None = None
    include_superseded: bool = False


async def open_memory_index(settings: Settings, database: Database, embedder: Embedder, *,
                            rebuild: bool = False) -> MemoryIndex | None:
    """The in-process search index, loaded (unless ``rebuild``) or built, and caught up;
    None when ``search.index`` is ``postgres``. Snapshots live in a folder per database."""
    if settings.search.index != "memory":
        return None
    async with database.session_scope() as session:
        identity = await changes.database_identity(session)
    folder = (settings.search.snapshot_dir or settings.data_dir / "index") / identity
    index = MemoryIndex(database, embedder.dimension, embedder.model_name, settings.search,
                        folder)
    await index.start(rebuild=rebuild, poll=not rebuild)
    return index


class _Column:
    """A growable per-slot numpy column."""

    def __init__(self, dtype: Any, fill: Any):
        self.data = np.full(1024, fill, dtype=dtype)
        self.fill = fill

    def ensure(self, size: int) -> None:
        if size > len(self.data):
            grown = np.full(max(size, 2 * len(self.data)), self.fill, dtype=self.data.dtype)
            grown[:len(self.data)] = self.data
            self.data = grown


class MemoryIndex:
    def __init__(self, database: Database, dimension: int, model: str,
                 settings: SearchSettings, snapshot_dir: Path | None):
        self.database = database
        self.dimension = dimension
        self.model = model
        self.settings = settings
        self.snapshot_dir = snapshot_dir
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._reset()

    def _reset(self) -> None:
        self.vectors = VectorIndex(self.dimension, self.settings)
        self.lexical = LexicalIndex()
        self._ids: list[uuid.UUID] = []
        self._slot_of: dict[uuid.UUID, int] = {}
        self._digest: dict[int, int] = {}  # slot → hash of what was indexed
        self._codes: dict[str, int] = {}
        self._project = _Column(np.int32, -1)
        self._scope = {name: _Column(np.int32, -1) for name in SCOPE_FIELDS}
        self._valid = _Column(np.int64, 0)  # valid_at, else created_at
        self._invalid = _Column(np.int64, NEVER)
        self._expires = _Column(np.int64, NEVER)
        self._alive = _Column(np.bool_, False)
        self._postings: dict[tuple[int, int], list[int]] = {}  # (project, -1) or (project, user)
        self._posting_arrays: dict[tuple[int, int], npt.NDArray[np.int64]] = {}
        self.position = 0  # every change at or below is applied (or given up on, see _late)
        self._ahead: set[int] = set()  # applied changes above the position
        self._holes: dict[int, float] = {}  # missing sequence numbers → first seen missing
        self._late: dict[int, float] = {}  # holes passed over, still checked
        self._since_snapshot = 0
        self._last_catch_up = 0.0
        self.dead = 0
        self._batcher = Batcher(self.vectors.search_all, self.settings.batch_window_ms / 1000)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, *, rebuild: bool = False, poll: bool = True) -> None:
        began = time.perf_counter()
        source = "snapshot"
        if rebuild or not await asyncio.to_thread(self._load) or await self._unusable():
            source = "postgres"
            await self.build()
        await self.catch_up_fully()
        await self.grow()
        logger.info("memory index ready from %s in %.1fs: %d memories, %s index, position %d",
                    source, time.perf_counter() - began, self.live, self.vectors.kind,
                    self.position)
        if poll:
            self._task = asyncio.create_task(self._poll(), name="memory-index-poll")

    async def aclose(self, *, save: bool = True) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if save and self.snapshot_dir is not None:
            async with self._lock:
                await asyncio.to_thread(self.save)

    async def grow(self) -> None:
        """Past ``flat_max`` vectors, an HNSW index is built in a thread (searches go on
        over the flat one; changes wait, as the lock is held) and swapped in."""
        if not self.vectors.outgrown:
            return
        async with self._lock:
            if self.vectors.outgrown:
                self.vectors.use(await asyncio.to_thread(self.vectors.hnsw_copy))

    @property
    def live(self) -> int:
        return len(self._slot_of)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.settings.poll_interval_s)
            try:
                await self.catch_up()
                if self._since_snapshot >= self.settings.snapshot_every:
                    async with self._lock:
                        await asyncio.to_thread(self.save)
                await self.grow()
                if self.dead > max(10_000, self.live):
                    async with self._lock:
                        self.adopt(await asyncio.to_thread(self.compacted))
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("memory index: catching up with the change log failed")

    async def build(self) -> None:
        """Everything again from the memories table (no snapshot, or ``anamnesis reindex``)."""
        async with self._lock:
            self._reset()
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
                self._apply(rows)
            self.position = top
            present = set(known)
            now = time.monotonic()
            self._late = {seq: now for seq in range(max(1, top - 10_000 + 1), top + 1)
                          if seq not in present}
            self._since_snapshot = self.live

    # -- catching up -----------------------------------------------------------------------

    async def catch_up_fully(self) -> None:
        while await self.catch_up():
            pass

    async def refresh(self, began: float, session: AsyncSession | None = None) -> None:
        """Makes sure every change committed before ``began`` (``time.monotonic()``) is
        applied: a catch-up that started after it is enough, and so is the change log's last
        number, read on the caller's ``session``, being one already applied (the common case:
        one index lookup, no catch-up)."""
        if self._last_catch_up >= began:
            return
        if session is not None and not self._holes and \
                await changes.last_seq(session) <= self.position:
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
        async with self.database.session_scope() as session:
            found = await changes.after(session, self.position, BATCH)
            late = await changes.among(session, sorted(self._late)) if self._late else []
            fresh = [(s, m) for s, m in found if s not in self._ahead] + late
            rows = await changes.memories(session, list(dict.fromkeys(m for _, m in fresh)))
        present = {memory_id for _, memory_id in fresh}
        self._apply(rows, erased=[m for m in present if m not in {r.id for r in rows}])
        for seq, _ in late:
            self._late.pop(seq, None)
        seen = {s for s, _ in found}
        self._ahead |= seen
        for seq in range(self.position + 1, max(seen, default=self.position)):
            if seq not in seen and seq not in self._ahead:
                self._holes.setdefault(seq, now)
        while True:  # advance over what is applied and over holes that waited long enough
            following = self.position + 1
            if following in self._ahead:
                self._ahead.discard(following)
            elif following in self._holes and now - self._holes[following] > \
                    self.settings.gap_timeout_s:
                self._late[following] = self._holes.pop(following)
            else:
                break
            self._holes.pop(following, None)
            self.position = following
        self._late = {s: t for s, t in self._late.items() if now - t < LATE_FOR_S}
        self._since_snapshot += len(fresh)
        more = len(found) >= BATCH
        if not more:
            # Only now: a search that began before this round started may rely on it once
            # the round is applied (and read everything), not while it is still reading.
            self._last_catch_up = now
        return more

    def _apply(self, rows: Iterable[IndexRow], erased: Sequence[uuid.UUID] = ()) -> None:
        for memory_id in erased:
            self._kill(memory_id)
        added: list[IndexRow] = []
        for row in rows:
            slot = self._slot_of.get(row.id)
            if row.deleted:
                self._kill(row.id)
                continue
            digest = hash((row.content_hash, row.context))
            if slot is not None and self._digest.get(slot) == digest:
                self._set_times(slot, row)  # superseded, expired, …: same words, same vector
                continue
            if slot is not None:
                self._kill(row.id)
            added.append(row)
        if not added:
            return
        first = self.vectors.size
        vectors = np.asarray([np.asarray(r.embedding, dtype=np.float32) for r in added])
        self.vectors.add(vectors)
        size = first + len(added)
        for column in (self._project, self._valid, self._invalid, self._expires, self._alive,
                       *self._scope.values()):
            column.ensure(size)
        for offset, row in enumerate(added):
            slot = first + offset
            self._ids.append(row.id)
            self._slot_of[row.id] = slot
            self._digest[slot] = hash((row.content_hash, row.context))
            project = self._code(str(row.project_id))
            self._project.data[slot] = project
            for name in SCOPE_FIELDS:
                value = getattr(row, name)
                self._scope[name].data[slot] = -1 if value is None else self._code(value)
            self._set_times(slot, row)
            self._alive.data[slot] = True
            self._post((project, -1), slot)
            if row.user_id is not None:
                self._post((project, int(self._scope["user_id"].data[slot])), slot)
            self.lexical.add(slot, project, lexical_text(row.text, row.context))

    def _set_times(self, slot: int, row: IndexRow) -> None:
        self._valid.data[slot] = _ms(row.valid_at or row.created_at)
        self._invalid.data[slot] = _ms(row.invalid_at)
        self._expires.data[slot] = _ms(row.expires_at)

    def _kill(self, memory_id: uuid.UUID) -> None:
        slot = self._slot_of.pop(memory_id, None)
        if slot is None:
            return
        self._alive.data[slot] = False
        self._digest.pop(slot, None)
        self.lexical.remove(slot)
        # A deleted memory's vector leaves memory now (and the next snapshot), not at the
        # next compaction; the slot is masked out of every search anyway.
        self.vectors.vectors()[slot] = 0.0
        self.dead += 1

    def _code(self, value: str) -> int:
        code = self._codes.get(value)
        if code is None:
            code = self._codes[value] = len(self._codes)
        return code

    def _post(self, key: tuple[int, int], slot: int) -> None:
        self._postings.setdefault(key, []).append(slot)
        self._posting_arrays.pop(key, None)

    # -- search ----------------------------------------------------------------------------

    def allowed(self, view: View, among: Sequence[uuid.UUID] | None = None,
                now: datetime | None = None) -> npt.NDArray[np.int64]:
        """The sorted slots a search with this view may return; ``among`` narrows to ids
        (the ones Postgres found matching the rest of a filter)."""
        project = self._codes.get(str(view.project_id))
        if project is None:
            return np.empty(0, np.int64)
        if among is not None:
            slots = np.fromiter((s for m in among if (s := self._slot_of.get(m)) is not None),
                                dtype=np.int64)
            slots = slots[self._project.data[slots] == project]
        else:
            user = self._codes.get(view.user_id) if view.user_id is not None else None
            if view.user_id is not None and user is None:
                return np.empty(0, np.int64)
            slots = self._posting((project, -1 if user is None else user))
        if slots.size == 0:
            return slots
        keep = self._alive.data[slots].copy()
        for name in SCOPE_FIELDS:
            value = getattr(view, name)
            if value is not None:
                code = self._codes.get(value)
                if code is None:
                    return np.empty(0, np.int64)
                keep &= self._scope[name].data[slots] == code
        moment = _ms(now or datetime.now(UTC))
        keep &= self._expires.data[slots] > moment
        if view.as_of is not None:
            at = _ms(view.as_of)
            keep &= (self._valid.data[slots] <= at) & (self._invalid.data[slots] > at)
        elif not view.include_superseded:
            keep &= self._invalid.data[slots] > moment
        return np.sort(slots[keep])

    def _posting(self, key: tuple[int, int]) -> npt.NDArray[np.int64]:
        array = self._posting_arrays.get(key)
        if array is None:
            array = np.asarray(self._postings.get(key, []), dtype=np.int64)
            self._posting_arrays[key] = array
        return array

    def dense(self, query: npt.NDArray[np.float32], allowed: npt.NDArray[np.int64],
              n: int) -> list[tuple[uuid.UUID, float]]:
        slots, scores = self.vectors.search(query, n, allowed)
        return [(self._ids[s], float(v)) for s, v in zip(slots.tolist(), scores.tolist(),
                                                          strict=True)]

    def lexical_search(self, project_id: uuid.UUID, query: str,
                       allowed: npt.NDArray[np.int64], n: int) -> list[tuple[uuid.UUID, float]]:
        project = self._codes.get(str(project_id))
        if project is None or allowed.size == 0:
            return []
        mask = np.zeros(self.vectors.size, dtype=bool)
        mask[allowed] = True
        slots, scores = self.lexical.search(project, query, mask, n)
        return [(self._ids[s], float(v)) for s, v in zip(slots.tolist(), scores.tolist(),
                                                          strict=True)]

    def lexical_scores(self, project_id: uuid.UUID, query: str,
                       ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, float]:
        """BM25 of these memories (fusion scores candidates the lexical list left out)."""
        project = self._codes.get(str(project_id))
        slots = [(m, s) for m in ids if (s := self._slot_of.get(m)) is not None]
        if project is None or not slots:
            return {}
        scores = self.lexical.scores_at(project, query,
                                        np.asarray([s for _, s in slots], dtype=np.int64))
        return {m: float(score) for (m, _), score in zip(slots, scores.tolist(), strict=True)}

    def describe(self, query: npt.NDArray[np.float32], ids: Sequence[uuid.UUID],
                 allowed: npt.NDArray[np.int64]) -> dict[uuid.UUID, tuple[float, int, int]]:
        """Of these memories, those among ``allowed``: (cosine similarity to ``query``,
        valid-since and invalid-at in epoch milliseconds, ``NEVER`` for unset)."""
        pairs = [(m, s) for m in ids if (s := self._slot_of.get(m)) is not None]
        if not pairs:
            return {}
        slots = np.asarray([s for _, s in pairs], dtype=np.int64)
        keep = np.isin(slots, allowed)
        slots = slots[keep]
        kept = [m for (m, _), k in zip(pairs, keep.tolist(), strict=True) if k]
        scores = (self.vectors.vectors()[slots] @ query).tolist()
        valid = self._valid.data[slots].tolist()
        invalid = self._invalid.data[slots].tolist()
        return {m: (score, since, until)
                for m, score, since, until in zip(kept, scores, valid, invalid, strict=True)}

    async def dense_batched(self, query: npt.NDArray[np.float32],
                            allowed: npt.NDArray[np.int64],
                            n: int) -> list[tuple[uuid.UUID, float]] | None:
        """A whole-index ANN search in a micro-batch (the GPU path), keeping allowed slots;
        None when too few of them survive and the caller must search exactly."""
        slots, scores = await self._batcher(query, max(4 * n, 64))
        keep = np.isin(slots, allowed)
        slots, scores = slots[keep][:n], scores[keep][:n]
        if len(slots) < min(n, len(allowed)):
            return None
        return [(self._ids[s], float(v)) for s, v in zip(slots.tolist(), scores.tolist(),
                                                          strict=True)]

    # -- snapshot and compaction -----------------------------------------------------------

    def save(self) -> None:
        """Writes the snapshot (``index_snapshot``)."""
        if self.snapshot_dir is None:
            return
        began = time.perf_counter()
        size = self.vectors.size
        state = {
            "ids": self._ids, "slot_of": self._slot_of, "digest": self._digest,
            "codes": self._codes, "postings": self._postings,
            "columns": {name: column.data[:size].copy() for name, column in self._columns()},
            "ahead": self._ahead, "holes": self._holes, "late": self._late,
            "dead": self.dead, "lexical": self.lexical.state(),
        }
        meta = {"dimension": self.dimension, "model": self.model, "position": self.position,
                "size": size, "live": self.live}
        write_snapshot(self.snapshot_dir, self.vectors, state, meta,
                       writer=f"{os.getpid()}-{id(self)}")
        self._since_snapshot = 0
        logger.info("memory index snapshot: %d memories at position %d in %.1fs", self.live,
                    self.position, time.perf_counter() - began)

    def _columns(self) -> list[tuple[str, _Column]]:
        return [("project", self._project), ("valid", self._valid),
                ("invalid", self._invalid), ("expires", self._expires),
                ("alive", self._alive), *((f"scope.{k}", c) for k, c in self._scope.items())]

    def _load(self) -> bool:
        """The snapshot, if there is a usable one (``index_snapshot``)."""
        found = None if self.snapshot_dir is None else read_snapshot(
            self.snapshot_dir, self.dimension, self.model, self.settings)
        if found is None:
            return False
        vectors, state, meta = found
        self._reset()
        self.vectors = vectors
        self._batcher = Batcher(self.vectors.search_all, self.settings.batch_window_ms / 1000)
        self._ids, self._slot_of, self._digest = state["ids"], state["slot_of"], state["digest"]
        self._codes, self._postings = state["codes"], state["postings"]
        for name, column in self._columns():
            data = state["columns"][name]
            column.ensure(len(data))
            column.data[:len(data)] = data
        now = time.monotonic()  # monotonic clocks do not survive a restart
        self._ahead = state["ahead"]
        self._holes = dict.fromkeys(state["holes"], now)
        self._late = dict.fromkeys(state["late"], now)
        self.dead = state["dead"]
        self.lexical = LexicalIndex.from_state(state["lexical"])
        self.position = int(meta["position"])
        return True

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

    def compacted(self) -> MemoryIndex:
        """A new index of the live slots only, renumbered densely (dead ones dropped from
        FAISS and BM25). Reads this one and changes nothing in it, so it can run in a thread
        while searches go on; ``adopt`` then swaps it in."""
        began = time.perf_counter()
        other = MemoryIndex(self.database, self.dimension, self.model, self.settings,
                            self.snapshot_dir)
        live = sorted(self._slot_of.items(), key=lambda item: item[1])
        old = np.asarray([slot for _, slot in live], dtype=np.int64)
        vectors = self.vectors.vectors()[old].copy() if len(old) else np.empty(
            (0, self.dimension), np.float32)
        other._codes = dict(self._codes)
        other.vectors.rebuild(vectors)
        other._ids = [memory_id for memory_id, _ in live]
        other._slot_of = {memory_id: new for new, memory_id in enumerate(other._ids)}
        other._digest = {new: self._digest[slot] for new, slot in enumerate(old.tolist())}
        for (_, column), (_, mine) in zip(other._columns(), self._columns(), strict=True):
            column.ensure(len(old))
            column.data[:len(old)] = mine.data[old]
        for new in range(len(old)):
            project = int(other._project.data[new])
            other._post((project, -1), new)
            user = int(other._scope["user_id"].data[new])
            if user >= 0:
                other._post((project, user), new)
        other.lexical = self.lexical.renumbered(old)
        other.position, other._ahead = self.position, set(self._ahead)
        other._holes, other._late = dict(self._holes), dict(self._late)
        logger.info("memory index compacted to %d memories in %.1fs", len(other._ids),
                    time.perf_counter() - began)
        return other

    def adopt(self, other: MemoryIndex) -> None:
        """Takes over ``other``'s contents (a compaction's result) in one step."""
        for name in ("vectors", "lexical", "_ids", "_slot_of", "_digest", "_codes",
                     "_project", "_scope", "_valid", "_invalid", "_expires", "_alive",
                     "_postings", "_posting_arrays", "position", "_ahead", "_holes", "_late",
                     "_batcher"):
            setattr(self, name, getattr(other, name))
        self.dead = 0
