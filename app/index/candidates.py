"""The one entry point retrieval uses: candidates for a search, from whichever index serves.

A ``CandidateSource`` takes a ``CandidateQuery`` (where, when, the filter beyond the scope,
the query's vector and text, how many per signal and kind, which signals) and answers
``Candidates``: a dense and a lexical list, best first, and the means to describe any
candidate for fusion (its exact cosine similarity and validity) and to score it lexically.
Two sources keep this contract: the in-process ``MemoryIndex`` (FAISS + BM25 fed by the
change log) and ``PostgresCandidates`` (pgvector's HNSW and full-text search;
``search.index = postgres``, and the index's own fallback for filters that match too many
memories to list).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol, cast

import numpy as np
import numpy.typing as npt
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain import (
    KINDS,
    Condition,
    Filter,
    MemoryKind,
    ProjectScope,
    Timeline,
    conjoin,
    lexical_text,
    named_speakers,
    scope_filter,
    speaker_of,
    word_count,
)
from app.store.models import Memory
from app.store.repositories import memories as repository
from app.store.repositories import scopes

Ranking = Literal["hybrid", "dense", "lexical"]
Ranked = list[tuple[uuid.UUID, float]]
Lap = Callable[[str], None]


@dataclass(frozen=True)
class Candidate:
    """What ranking needs of a memory: its exact cosine similarity to the query, since when
    it holds (``valid_at``, else ``created_at``), when it stopped (``invalid_at``), its
    kind, for a message its conversation (an identity, only compared: the id or the
    index's code for it), its turn there and its speaker (``speaker_of``), and how many
    words it has."""

    similarity: float
    since: datetime
    invalid_at: datetime | None
    kind: MemoryKind
    conversation: uuid.UUID | int | None = None
    turn: int | None = None
    speaker: str | None = None
    words: int = 0

    @classmethod
    def of(cls, memory: Memory, similarity: float) -> Candidate:
        return cls(similarity, memory.valid_at or memory.created_at, memory.invalid_at,
                   cast(MemoryKind, memory.kind), memory.conversation_id, memory.turn,
                   speaker_of(memory.metadata_.get("name")), word_count(memory.text))


@dataclass(frozen=True)
class CandidateQuery:
    where: ProjectScope
    timeline: Timeline
    extra: Filter | None  # the filter's conditions beyond the scope ids
    vector: npt.NDArray[np.float32]
    text: str
    depth: int  # candidates per signal, of each kind when ``kinds`` is None
    ranking: Ranking
    began: float = 0.0  # time.monotonic() when the search began: what it must see
    kinds: tuple[MemoryKind, ...] | None = None  # None: messages and facts
    model: str | None = None  # the model ``vector`` is of

    @property
    def tree(self) -> Filter | None:
        """The whole filter, scope ids and kinds included, as Postgres evaluates it."""
        kinds = None if self.kinds is None else Condition("kind", "in", list(self.kinds))
        return conjoin(self.extra, scope_filter(self.where.scope), kinds)

    @property
    def dense(self) -> bool:
        return self.ranking in ("hybrid", "dense")

    @property
    def lexical(self) -> bool:
        return self.ranking in ("hybrid", "lexical")


def merged(lists: Sequence[Ranked]) -> Ranked:
    """Lists of one signal taken apart (one per kind) as one, best first: their scores are on
    one scale (cosine similarity; a lexical score of one query over one index)."""
    if len(lists) == 1:
        return lists[0]
    return sorted((pair for found in lists for pair in found), key=lambda pair: -pair[1])


class Candidates(Protocol):
    dense: Ranked | None  # None: the ranking leaves the signal out
    lexical: Ranked | None

    async def describe(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Candidate]:
        """Those of ``ids`` the search may return, described for fusion."""
        ...

    def lexical_scores(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, float]:
        """BM25 of candidates the lexical list left out, where the source can tell."""
        ...

    def query_weight(self) -> float | None:
        """What a document of mean length holding each query term once scores lexically
        (``LexicalIndex.weight``); None where the source has no term statistics."""
        ...

    def naming(self, ids: Sequence[uuid.UUID], names: set[str]) -> set[uuid.UUID]:
        """Those of ``ids`` whose words (text and context) name one of ``names``."""
        ...

    def rows(self) -> dict[uuid.UUID, Memory]:
        """Memories the source already read from Postgres (hydration skips them)."""
        ...


class CandidateSource(Protocol):
    async def candidates(self, session: AsyncSession, query: CandidateQuery,
                         lap: Lap | None = None) -> Candidates: ...

    async def speakers_named(self, session: AsyncSession, where: ProjectScope, query: str,
                             began: float) -> set[str]:
        """Those who said messages of ``where``'s user (``speaker_of``) that ``query``
        names (``named_speakers``)."""
        ...


class PostgresCandidates:
    """Candidates straight from Postgres: pgvector's HNSW (exact where a filter is selective)
    and full-text search, under the filter, in the request's transaction."""

    async def candidates(self, session: AsyncSession, query: CandidateQuery,
                         lap: Lap | None = None) -> Candidates:
        found = _FromPostgres(session, query)
        project = query.where.project_id
        each = query.kinds is None  # ``depth`` of each kind
        if query.dense:  # an index scan per kind: HNSW has no "best of each"
            found.dense = merged([
                [(memory.id, score) for memory, score in await repository.nearest(
                    session, project, query.vector.tolist(), query.tree, query.depth, None,
                    timeline=query.timeline, kind=kind)]
                for kind in (KINDS if each else (None,))])
        if query.lexical:
            found.lexical = await repository.lexical_nearest(
                session, project, query.text, query.tree, query.timeline, query.depth,
                per_kind=each)
        return found

    async def speakers_named(self, session: AsyncSession, where: ProjectScope, query: str,
                             began: float) -> set[str]:
        return named_speakers(query, {speaker for name in await scopes.speakers(session, where)
                                      if (speaker := speaker_of(name)) is not None})


@dataclass
class _FromPostgres:
    session: AsyncSession
    query: CandidateQuery
    dense: Ranked | None = None
    lexical: Ranked | None = None
    _rows: dict[uuid.UUID, Memory] = field(default_factory=dict)

    async def describe(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Candidate]:
        scored = await repository.scored(self.session, self.query.where.project_id, ids,
                                         self.query.vector.tolist(), self.query.tree,
                                         self.query.timeline)
        self._rows = {memory_id: memory for memory_id, (memory, _) in scored.items()}
        return {memory_id: Candidate.of(memory, score)
                for memory_id, (memory, score) in scored.items()}

    def lexical_scores(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, float]:
        return {}  # ts_rank of a memory that did not match the words is 0 anyway

    def query_weight(self) -> float | None:
        return None  # ts_rank_cd weighs no term by its rarity

    def naming(self, ids: Sequence[uuid.UUID], names: set[str]) -> set[uuid.UUID]:
        return {memory_id for memory_id in ids if (row := self._rows.get(memory_id)) is not None
                and named_speakers(lexical_text(row.text, row.context), names)}

    def rows(self) -> dict[uuid.UUID, Memory]:
        return self._rows
