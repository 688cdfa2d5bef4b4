"""What the in-process index answers one search (``MemoryIndex.candidates``): its lists and
the means to describe, score and name any candidate, over the index's state when the search
began."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from app.index.candidates import Candidate, CandidateQuery, Ranked
from app.index.slots import Slots
from app.index.state import IndexState
from app.store.models import Memory


def ranked(state: IndexState, slots: Slots, scores: npt.NDArray[np.float32]) -> Ranked:
    ids = state.slots.ids
    return [(ids[s], float(v)) for s, v in zip(slots.tolist(), scores.tolist(), strict=True)]


class FromIndex:
    """The index's candidates for one search, over the slots it may return (of ``state``,
    the index's state when the search began)."""

    def __init__(self, state: IndexState, query: CandidateQuery, allowed: Slots):
        self.state, self.query, self.allowed = state, query, allowed
        self.dense: Ranked | None = None
        self.lexical: Ranked | None = None
        self.project = state.slots.codes.get(str(query.where.project_id))

    async def describe(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Candidate]:
        return self.state.describe(self.query.vector, ids, self.allowed)

    def lexical_scores(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, float]:
        pairs = self.state.slots.slots(ids)
        if self.project is None or not pairs:
            return {}
        scores = self.state.lexical.scores_at(
            self.project, self.query.text, np.asarray([s for _, s in pairs], dtype=np.int64))
        return {m: float(score) for (m, _), score in zip(pairs, scores.tolist(), strict=True)}

    def query_weight(self) -> float | None:
        return None if self.project is None else self.state.lexical.weight(self.project,
                                                                           self.query.text)

    def naming(self, ids: Sequence[uuid.UUID], names: set[str]) -> set[uuid.UUID]:
        pairs = self.state.slots.slots(ids)
        slots = [slot for _, slot in pairs]
        return {memory_id for name in names for (memory_id, _), held
                in zip(pairs, self.state.lexical.holding(slots, name), strict=True) if held}

    def rows(self) -> dict[uuid.UUID, Memory]:
        return {}  # ranked on what the index holds: only the winners are read from Postgres
