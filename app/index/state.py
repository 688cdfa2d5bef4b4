"""Everything the memory index holds, in one object: the vectors (FAISS), the words (BM25), the
slot table and the change-log cursor. What is saved in a snapshot, what a compaction makes
anew, and what a catch-up changes, each in one place."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from app.config import SearchSettings
from app.domain import KINDS, lexical_text
from app.index.candidates import Candidate
from app.index.cursor import ChangeCursor
from app.index.lexical import LexicalIndex
from app.index.saved import Saved
from app.index.slots import NEVER, Slots, SlotTable
from app.index.snapshot import read_snapshot, write_snapshot
from app.index.vectors import VectorIndex, VectorOptions
from app.store.repositories.changes import IndexRow

logger = logging.getLogger(__name__)


@dataclass
class IndexState:
    vectors: VectorIndex
    lexical: LexicalIndex
    slots: SlotTable
    cursor: ChangeCursor
    dead: int = 0  # slots killed since the last compaction

    @classmethod
    def empty(cls, dimension: int, settings: SearchSettings) -> IndexState:
        return cls(VectorIndex(dimension, VectorOptions.of(settings)), LexicalIndex(),
                   SlotTable(), ChangeCursor())

    @property
    def live(self) -> int:
        return self.slots.live

    def apply(self, rows: Iterable[IndexRow], erased: Sequence[uuid.UUID] = ()) -> None:
        """Each row's current state (idempotent: applying one twice changes nothing);
        ``erased`` ids are gone from Postgres altogether."""
        dead = [self.kill(memory_id) for memory_id in erased]
        added: list[IndexRow] = []
        for row in rows:
            if row.deleted or len(row.embedding) != self.vectors.dimension:
                # (a vector of another size: the embedding model was switched, and this
                # index is about to be built again for the new one)
                dead.append(self.kill(row.id))
            elif self.slots.unchanged(row):  # superseded, expired…: same words, same vector
                self.slots.set_times(self.slots.slot_of[row.id], row)
            else:
                dead.append(self.kill(row.id))
                added.append(row)
        # A deleted memory's vector leaves memory now (and the next snapshot), not at the
        # next compaction; the slot is masked out of every search anyway. In one call: on a
        # device copy, each call is a transfer.
        self.vectors.remove([slot for slot in dead if slot is not None])
        if not added:
            return
        first = self.vectors.size
        self.vectors.add(np.asarray([np.asarray(r.embedding, dtype=np.float32) for r in added]))
        for offset, row in enumerate(added):
            project = self.slots.add(first + offset, row)
            self.lexical.add(first + offset, project, lexical_text(row.text, row.context))

    def kill(self, memory_id: uuid.UUID) -> int | None:
        """The memory's slot, now dead in the table and the words (the caller removes its
        vector); None when it had none."""
        slot = self.slots.kill(memory_id)
        if slot is None:
            return None
        self.lexical.remove(slot)
        self.dead += 1
        return slot

    def describe(self, query: npt.NDArray[np.float32], ids: Sequence[uuid.UUID],
                 allowed: Slots) -> dict[uuid.UUID, Candidate]:
        """Of these memories, those among ``allowed``, with their cosine similarity to
        ``query`` and their validity, as the index holds them."""
        pairs = self.slots.slots(ids)
        if not pairs:
            return {}
        slots = np.asarray([s for _, s in pairs], dtype=np.int64)
        # ``allowed`` is sorted: a binary search of each of these few slots, where np.isin
        # would sort all of them again (a user's 100,000 slots at a million memories).
        at = np.minimum(np.searchsorted(allowed, slots), max(len(allowed) - 1, 0))
        keep = allowed[at] == slots if len(allowed) else np.zeros(len(slots), dtype=bool)
        slots = slots[keep]
        kept = [m for (m, _), k in zip(pairs, keep.tolist(), strict=True) if k]
        scores = (self.vectors.vectors()[slots] @ query).tolist()
        valid = self.slots.column("valid")[slots].tolist()
        invalid = self.slots.column("invalid")[slots].tolist()
        kinds = self.slots.column("kind")[slots].tolist()
        conversations = self.slots.column("conversation")[slots].tolist()
        turns = self.slots.column("turn")[slots].tolist()
        speakers = self.slots.column("speaker")[slots].tolist()
        words = self.slots.column("words")[slots].tolist()
        names = self.slots.speakers
        return {m: Candidate(score, _moment(since), None if until == NEVER else _moment(until),
                             KINDS[kind], None if conversation < 0 else conversation,
                             None if conversation < 0 else turn, names.get(speaker), count)
                for m, score, since, until, kind, conversation, turn, speaker, count in zip(
                    kept, scores, valid, invalid, kinds, conversations, turns, speakers, words,
                    strict=True)}

    def compacted(self, dimension: int) -> IndexState:
        """A new state of the live slots only, renumbered densely (dead ones dropped from
        FAISS and BM25). Reads this one and changes nothing in it, so it can run in a thread
        while searches go on."""
        old = self.slots.live_slots()
        vectors = VectorIndex(dimension, self.vectors.options)
        vectors.rebuild(self.vectors.vectors()[old].copy() if len(old)
                        else np.empty((0, dimension), np.float32))
        return IndexState(vectors, self.lexical.renumbered(old), self.slots.renumbered(old),
                          self.cursor.copy())

    # -- snapshot --------------------------------------------------------------------------

    def save(self, folder: Path, meta: dict[str, Any], writer: str) -> None:
        state = Saved.of({"slots": self.slots.saved(), "lexical": self.lexical.saved(),
                          "cursor": self.cursor.saved()}, dead=self.dead)
        write_snapshot(folder, self.vectors, state, {**meta, "position": self.cursor.position,
                                                     "size": self.vectors.size,
                                                     "live": self.live}, writer)

    @classmethod
    def load(cls, folder: Path, dimension: int, model: str,
             settings: SearchSettings) -> IndexState | None:
        found = read_snapshot(folder, dimension, model, settings)
        if found is None:
            return None
        vectors, state, _ = found
        try:
            return cls._of(vectors, state)
        except Exception as exc:  # a snapshot of another shape: rebuilt, as an unreadable one
            logger.warning("memory index snapshot does not fit (%s: %s); rebuilding",
                           type(exc).__name__, exc)
            return None

    @classmethod
    def _of(cls, vectors: VectorIndex, state: Saved) -> IndexState:
        """The state ``state`` holds, checked to agree with itself: as many slots in the
        table, the words and the vectors, and the same ones live, of the same projects, in the
        table and the words (each part checks its own arrays)."""
        slots = SlotTable.from_saved(state.part("slots"))
        lexical = LexicalIndex.from_saved(state.part("lexical"))
        if not len(slots.ids) == lexical.size == vectors.size:
            raise ValueError(f"snapshot slots disagree: {len(slots.ids)} in the table, "
                             f"{lexical.size} in the words, {vectors.size} vectors")
        documents, projects = lexical.documents()
        live = slots.live_slots()
        if not (np.array_equal(live, documents)
                and np.array_equal(slots.column("project")[live], projects)):
            raise ValueError("snapshot slots disagree on which are live, or their projects")
        dead = state.integer("dead")
        if dead < 0:
            raise ValueError("snapshot counts fewer than no dead slots")
        return cls(vectors, lexical, slots,
                   ChangeCursor.from_saved(state.part("cursor"), time.monotonic()), dead)


def _moment(milliseconds: int) -> datetime:
    return datetime.fromtimestamp(milliseconds / 1000, UTC)
