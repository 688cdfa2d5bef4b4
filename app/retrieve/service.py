"""Search: candidates → fusion → hydration.

1. *embed*       the query, through the LRU of query embeddings; in a hybrid search without
                 the names of the scope's speakers it names (``without_names``: who said
                 it is ranked by ``speaker_weight`` instead), and matched by words so too;
2. *candidates*  from the configured ``CandidateSource`` (``app.index``): dense (cosine) and
                 lexical (BM25) lists among exactly what the scope, filters and timeline let
                 through, from the in-process index or from Postgres, each kind its own
                 ``candidates`` (so the candidates of a search of both kinds hold those of
                 a search of messages: facts cannot crowd a message out); with ``graph``,
                 also memories one relation away from the entities the query names;
3. *fuse*        ``fusion.fuse`` over the union: one score per memory, best first, each
                 candidate described by the source (exact cosine similarity, validity);
                 a distilled fact and the messages it came from then take one place
                 (``fusion.fold``);
4. *hydrate*     the winners read from Postgres under the same filters (the truth: a memory
                 changed since the index saw it is passed over), until ``top_k`` are found.
"""

from __future__ import annotations

import time
import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import Caller
from app.config import SearchSettings
from app.domain import (
    KINDS,
    SCOPE_FIELDS,
    All,
    Condition,
    Filter,
    MemoryKind,
    ProjectScope,
    Scope,
    Timeline,
    without_names,
)
from app.graph.schemas import RelationRead
from app.index.candidates import CandidateQuery, CandidateSource
from app.memories.schemas import MemoryRead
from app.retrieve.dates import query_period
from app.retrieve.filters import parse_filters
from app.retrieve.fusion import Ranked, Signal, fold, fuse, lexical_trust, yardstick
from app.retrieve.graph_expansion import hop_memories
from app.retrieve.query_embeddings import QueryEmbeddings
from app.retrieve.schemas import SearchHit, SearchRequest, SearchResponse
from app.store.graph.base import GraphStore
from app.store.models import Memory
from app.store.repositories import episodes
from app.store.repositories import memories as repository

# Facts whose provenance is read to fold them with their messages (``fusion.fold``): those
# among the first FOLD_DEPTH * top_k ranked, more than hydration reads in all but rare cases.
FOLD_DEPTH = 4


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


async def search(session: AsyncSession, queries: QueryEmbeddings, source: CandidateSource,
                 graph: GraphStore, settings: SearchSettings, caller: Caller,
                 request: SearchRequest, watch: Stopwatch | None = None) -> SearchResponse:
    began = time.monotonic()
    watch = watch or Stopwatch()
    asked = ProjectScope(caller.project_id, request.user_id, request.agent_id, request.run_id)
    where, kinds, extra = _fold(parse_filters(request.filters), asked)
    seen = Timeline.of(request.as_of, request.include_superseded)
    ranking = request.ranking or settings.ranking
    named: set[str] = set()
    if ranking == "hybrid" and settings.speaker_weight:  # who said it is ranked on its own
        named = await source.speakers_named(session, where, request.query, began)
    searched = without_names(request.query, named)
    vector, model = await queries.made(caller.project_id, searched)
    query = CandidateQuery(where, seen, extra, vector, searched,
                           max(settings.candidates, request.top_k), ranking, began, kinds,
                           model)
    watch.lap("embed")
    found = await source.candidates(session, query, watch.lap)
    watch.lap("candidates")
    reached = await hop_memories(graph, asked, request.query, seen) if request.graph else []
    watch.lap("graph")

    listed = [m for signal in (found.dense, found.lexical) if signal for m, _ in signal]
    rows = await found.describe(list(dict.fromkeys(listed + reached)))
    scale = yardstick(rows)  # what every candidate is measured against
    dense = Signal(found.dense, settings.dense_weight) if found.dense is not None else None
    lexical = None
    if found.lexical is not None:
        trust = lexical_trust([score for m, score in found.lexical if m in scale],
                              found.query_weight(), settings.lexical_clarity)
        lexical = Signal(found.lexical, settings.lexical_weight * trust)
        lexical.extra = found.lexical_scores([m for m in rows if m not in lexical.score])
    naming = found.naming([m for m, row in rows.items() if row.kind == "fact"], named) \
        if named else set()
    ranked = fuse(rows, dense, lexical, reached, settings, request.threshold, scale,
                  period=query_period(request.query), named=named, naming=naming)
    facts = [r.memory_id for r in ranked[:FOLD_DEPTH * request.top_k]
             if rows[r.memory_id].kind == "fact"]
    # Facts and messages ranked together (a search of facts alone folds none: every fact
    # asked for is shown, two of one message too)
    if facts and any(rows[r.memory_id].kind == "message" for r in ranked):
        ranked = fold(ranked, rows, await episodes.cited_messages(session, caller.project_id,
                                                                  facts))
    watch.lap("fuse")
    memories = await _hydrate(session, caller, ranked, request.top_k, query.tree, seen,
                              found.rows())
    ranked = [r for r in ranked if r.memory_id in memories][:request.top_k]
    hits = [SearchHit.of(memories[r.memory_id], score=r.score, similarity=r.similarity,
                         explain={**r.explain, "searched": searched} if request.explain
                         else None) for r in ranked]
    watch.lap("hydrate")
    if "context" in request.include:
        around = await _exchanges(session, caller, [memories[r.memory_id] for r in ranked],
                                  seen)
        hits = [hit.model_copy(update={"context": around.get(hit.id, [])}) for hit in hits]
        watch.lap("context")
    relations = None
    if "relations" in request.include:
        relations = await _relations_among(graph, asked, seen, [
            m for r in ranked for m in (r.memory_id, *r.folds)])
        watch.lap("relations")
    return SearchResponse(results=hits, relations=relations)


async def _hydrate(session: AsyncSession, caller: Caller, ranked: list[Ranked], top_k: int,
                   tree: Filter | None, seen: Timeline,
                   known: dict[uuid.UUID, Memory]) -> dict[uuid.UUID, Memory]:
    """The rows of the best ``top_k`` of ``ranked`` that still match in Postgres (the truth:
    one changed since the index saw it is passed over), reading further down as needed;
    rows the candidate source already read (``known``) are taken as they are."""
    rows: dict[uuid.UUID, Memory] = {}
    start = 0
    while len(rows) < top_k and start < len(ranked):
        ids = [r.memory_id for r in ranked[start:start + top_k - len(rows)]]
        start += len(ids)
        rows.update((m, known[m]) for m in ids if m in known)
        missing = [m for m in ids if m not in known]
        if missing:
            rows.update(await repository.matching(session, caller.project_id, missing, tree,
                                                  seen))
    return rows


def _fold(tree: Filter | None, asked: ProjectScope
          ) -> tuple[ProjectScope, tuple[MemoryKind, ...] | None, Filter | None]:
    """When the filter only says ``eq`` on scope ids (Mem0 clients put ``user_id`` there) and
    ``eq``/``in`` on ``kind``, those join the scope and the kinds, and no filter is left:
    the index holds them per memory. Otherwise the filter stays as it is."""
    if tree is None:
        return asked, None, None
    parts = tree.parts if isinstance(tree, All) else (tree,)
    folded = {name: getattr(asked, name) for name in SCOPE_FIELDS}
    kinds: set[MemoryKind] | None = None
    for part in parts:
        if not isinstance(part, Condition):
            return asked, None, tree
        if part.field == "kind" and part.op in ("eq", "in"):
            named = {part.value} if part.op == "eq" else set(part.value)
            kinds = named if kinds is None else kinds & named
        elif part.field in SCOPE_FIELDS and part.op == "eq" and isinstance(part.value, str) \
                and folded[part.field] in (None, part.value):
            folded[part.field] = part.value
        else:
            return asked, None, tree
    ordered = None if kinds is None else tuple(kind for kind in KINDS if kind in kinds)
    return Scope(**folded).within(asked.project_id), ordered, None


# Turns on each side of a message hit that ``include: ["context"]`` returns with it.
CONTEXT_TURNS = 1


async def _exchanges(session: AsyncSession, caller: Caller, hits: list[Memory],
                     seen: Timeline) -> dict[uuid.UUID, list[MemoryRead]]:
    """Per hit, the messages around it: a message's neighbouring turns in its conversation,
    a fact's source messages; each as visible at ``seen``, in the order said."""
    places = {m.id: (m.conversation_id, m.turn) for m in hits
              if m.conversation_id is not None and m.turn is not None}
    turns = await repository.turns_around(session, caller.project_id,
                                          list(places.values()), CONTEXT_TURNS, seen)
    around: dict[uuid.UUID, list[MemoryRead]] = {}
    for hit, (conversation, turn) in places.items():
        around[hit] = [MemoryRead.of(m) for m in turns
                       if m.id != hit and m.conversation_id == conversation
                       and m.turn is not None and abs(m.turn - turn) <= CONTEXT_TURNS]
    facts = [m.id for m in hits if m.kind == "fact"]
    cited = await episodes.cited_messages(session, caller.project_id, facts)
    sources = await repository.matching(
        session, caller.project_id, list({m for ids in cited.values() for m in ids}), None,
        seen)
    for fact in facts:
        said = sorted((sources[m] for m in cited.get(fact, ()) if m in sources),
                      key=lambda m: (m.valid_at or m.created_at, m.turn or 0, m.id))
        around[fact] = [MemoryRead.of(m) for m in said]
    return around


async def _relations_among(graph: GraphStore, scope: ProjectScope, seen: Timeline,
                           memory_ids: list[uuid.UUID]) -> list[RelationRead]:
    mentioned = await graph.entities_of(scope.project_id, memory_ids)
    entities = list(dict.fromkeys(e for ids in mentioned.values() for e in ids))
    if not entities:
        return []
    found = await graph.find_relations(scope, touching=entities, moment=seen)
    return [RelationRead.of(relation) for relation in found]
