"""Search: candidates from each signal, fused, hydrated from Postgres.

1. *embed*     the query, through the LRU of query embeddings;
2. *dense*     nearest memories by cosine similarity, and
   *lexical*   best by BM25 over text and context, both among exactly what the filters,
               scope and time let through: from the in-process index (``search.index =
               memory``, FAISS + BM25 fed by the change log) or from Postgres (pgvector's
               HNSW and full-text search);
3. *graph*     with ``graph``, memories one relation away from the entities the query names;
4. *hydrate*   every candidate read back from Postgres under the same filters (the truth:
               a memory changed since the index saw it is judged as it is now), with its
               exact cosine similarity;
5. *fuse*      ``fusion.fuse``: one score per memory, best first, explained on request.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import Caller
from app.config import SearchSettings
from app.graph.schemas import RelationRead
from app.memories.service import timeline
from app.retrieve.filters import All, Condition, Filter, conjoin, parse_filters
from app.retrieve.fusion import Candidate, Ranked, Signal, fuse
from app.retrieve.graph_expansion import hop_memories
from app.retrieve.query_embeddings import QueryEmbeddings
from app.retrieve.schemas import SearchHit, SearchRequest, SearchResponse
from app.store.graph.base import GraphScope, GraphStore, Moment
from app.store.memory_index import NEVER, MemoryIndex, View
from app.store.models import Memory
from app.store.repositories import memories as repository
from app.store.repositories.memories import Timeline

SCOPE_FIELDS = ("user_id", "agent_id", "run_id")


class Stopwatch:
    """Milliseconds per step, for the response's ``Server-Timing`` header."""

    def __init__(self) -> None:
        self.steps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.steps[step] = self.steps.get(step, 0.0) + (now - self._last) * 1000
        self._last = now

    def header(self) -> str:
        return ", ".join(f"{step};dur={ms:.2f}" for step, ms in self.steps.items())


async def search(session: AsyncSession, queries: QueryEmbeddings, index: MemoryIndex | None,
                 graph: GraphStore, settings: SearchSettings, caller: Caller,
                 request: SearchRequest, watch: Stopwatch | None = None) -> SearchResponse:
    began = time.monotonic()
    watch = watch or Stopwatch()
    ranking = request.ranking or settings.ranking
    scope = {name: getattr(request, name) for name in SCOPE_FIELDS}
    extra = parse_filters(request.filters)
    folded = _fold_scope(extra, scope)
    if folded is not None:  # the filter only named scope ids: the index takes them as such
        scope, extra = folded, None
    tree = conjoin(extra, *(Condition(name, "eq", value) for name, value in scope.items()
                            if value is not None))
    seen = timeline(request.as_of, request.include_superseded)
    query = await queries.get(request.query)
    watch.lap("embed")
    depth = max(settings.candidates, request.top_k)

    found: Found | None = None
    if index is not None:
        await index.refresh(began, session)
        watch.lap("catch_up")
        found = await _from_index(session, index, caller, request, ranking, scope, extra,
                                  tree, seen, query, depth, settings)
    if found is None:
        found = await _from_postgres(session, caller, request.query, ranking, tree, seen,
                                     query, depth, settings)
    dense, lexical = found.dense, found.lexical
    watch.lap("candidates")

    graph_scope = GraphScope(caller.project_id, request.user_id, request.agent_id,
                             request.run_id)
    moment = Moment(as_of=seen.as_of, include_invalid=seen.include_superseded)
    reached = await hop_memories(graph, graph_scope, request.query, moment) \
        if request.graph else []
    watch.lap("graph")
    candidates = list(dict.fromkeys(
        [m for signal in (dense, lexical) if signal for m, _ in signal.ranked] + reached))
    if found.allowed is not None and index is not None:
        # Ranked on what the index holds; only the winners are read from Postgres.
        rows = {m: Candidate(score, _moment(since), None if until == NEVER else _moment(until))
                for m, (score, since, until) in index.describe(query, candidates,
                                                               found.allowed).items()}
        if lexical is not None:
            lexical.extra = index.lexical_scores(caller.project_id, request.query,
                                                 [m for m in rows if m not in lexical.score])
        ranked = fuse(rows, dense, lexical, reached, settings, request.threshold)
        watch.lap("fuse")
        memories = await _hydrate(session, caller, ranked, request.top_k, tree, seen)
    else:
        hydrated = await repository.scored(session, caller.project_id, candidates,
                                           query.tolist(), tree, seen)
        ranked = fuse({m: Candidate.of(memory, score) for m, (memory, score) in hydrated.items()},
                      dense, lexical, reached, settings, request.threshold)[:request.top_k]
        memories = {m: memory for m, (memory, _) in hydrated.items()}
        watch.lap("fuse")
    ranked = [r for r in ranked if r.memory_id in memories][:request.top_k]
    hits = [SearchHit.of(memories[r.memory_id], score=r.score, similarity=r.similarity,
                         explain=r.explain if request.explain else None) for r in ranked]
    watch.lap("hydrate")
    relations = None
    if "relations" in request.include:
        relations = await _relations_among(graph, graph_scope, moment,
                                           [r.memory_id for r in ranked])
        watch.lap("relations")
    return SearchResponse(results=hits, relations=relations)


@dataclass
class Found:
    dense: Signal | None
    lexical: Signal | None
    allowed: npt.NDArray[np.int64] | None = None  # the index's slots the search may return


def _moment(milliseconds: int) -> datetime:
    return datetime.fromtimestamp(milliseconds / 1000, UTC)


async def _hydrate(session: AsyncSession, caller: Caller, ranked: list[Ranked], top_k: int,
                   tree: Filter | None, seen: Timeline) -> dict[uuid.UUID, Memory]:
    """The rows of the best ``top_k`` of ``ranked`` that still match in Postgres (the truth:
    one changed since the index saw it is passed over), reading further down as needed."""
    rows: dict[uuid.UUID, Memory] = {}
    start = 0
    while len(rows) < top_k and start < len(ranked):
        ids = [r.memory_id for r in ranked[start:start + top_k - len(rows)]]
        start += len(ids)
        rows.update(await repository.matching(session, caller.project_id, ids, tree, seen))
    return rows


def _fold_scope(tree: Filter | None,
                scope: dict[str, str | None]) -> dict[str, str | None] | None:
    """When the filter is only ``eq`` on scope ids (Mem0 clients put ``user_id`` there),
    those ids as a scope; None when it says anything else or contradicts the body's."""
    if tree is None:
        return scope
    parts = tree.parts if isinstance(tree, All) else (tree,)
    folded = dict(scope)
    for part in parts:
        if not (isinstance(part, Condition) and part.field in SCOPE_FIELDS and part.op == "eq"
                and isinstance(part.value, str)):
            return None
        if folded[part.field] not in (None, part.value):
            return None
        folded[part.field] = part.value
    return folded


async def _from_index(session: AsyncSession, index: MemoryIndex, caller: Caller,
                      request: SearchRequest, ranking: str, scope: dict[str, str | None],
                      extra: Filter | None, tree: Filter | None, seen: Timeline,
                      query: npt.NDArray[np.float32], depth: int,
                      settings: SearchSettings) -> Found | None:
    """The index's candidates, or None when the filter matches more memories than it is
    worth listing (``filter_ids_max``): Postgres answers that search."""
    view = View(caller.project_id, scope["user_id"], scope["agent_id"], scope["run_id"],
                seen.as_of, seen.include_superseded)
    among = None
    if extra is not None:
        among = await repository.matching_ids(session, caller.project_id, tree, seen,  # type: ignore[arg-type]
                                              settings.filter_ids_max)
        if among is None:
            return None
    allowed = index.allowed(view, among)
    dense = lexical = None
    if ranking in ("hybrid", "dense"):
        found = None
        if index.vectors.on_gpu and len(allowed) > settings.exact_max:
            found = await index.dense_batched(query, allowed, depth)
        if found is None:
            found = index.dense(query, allowed, depth)
        dense = Signal(found, settings.dense_weight)
    if ranking in ("hybrid", "lexical"):
        lexical = Signal(index.lexical_search(caller.project_id, request.query, allowed,
                                              depth), settings.lexical_weight)
    return Found(dense, lexical, allowed)


async def _from_postgres(session: AsyncSession, caller: Caller, text: str, ranking: str,
                         tree: Filter | None, seen: Timeline,
                         query: npt.NDArray[np.float32], depth: int,
                         settings: SearchSettings) -> Found:
    dense = lexical = None
    if ranking in ("hybrid", "dense"):
        rows = await repository.nearest(session, caller.project_id, query.tolist(), tree,
                                        depth, None, timeline=seen)
        dense = Signal([(memory.id, score) for memory, score in rows], settings.dense_weight)
    if ranking in ("hybrid", "lexical"):
        lexical = Signal(await repository.lexical_nearest(session, caller.project_id, text,
                                                          tree, seen, depth),
                         settings.lexical_weight)
    return Found(dense, lexical)


async def _relations_among(graph: GraphStore, scope: GraphScope, moment: Moment,
                           memory_ids: list[uuid.UUID]) -> list[RelationRead]:
    mentioned = await graph.entities_of(scope.project_id, memory_ids)
    entities = list(dict.fromkeys(e for ids in mentioned.values() for e in ids))
    if not entities:
        return []
    found = await graph.find_relations(scope, touching=entities, moment=moment)
    return [RelationRead.of(relation) for relation in found]
