"""Search: embed the query, take the nearest memories that match the filters exactly; with
``graph``, fuse in the memories one relation away from the entities the query names."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import Caller
from app.embeddings import Embedder
from app.graph.schemas import RelationRead
from app.memories.service import timeline
from app.retrieve.filters import Condition, conjoin, parse_filters
from app.retrieve.graph_expansion import hop_memories
from app.retrieve.schemas import SearchHit, SearchRequest, SearchResponse
from app.store.graph.base import GraphScope, GraphStore, Moment
from app.store.models import Memory
from app.store.repositories import memories as repository

RRF_K = 60  # reciprocal rank fusion's damping constant (Cormack et al.)


async def search(session: AsyncSession, embedder: Embedder, graph: GraphStore, caller: Caller,
                 request: SearchRequest) -> SearchResponse:
    scope_filters = [Condition(field, "eq", value) for field, value in (
        ("user_id", request.user_id), ("agent_id", request.agent_id), ("run_id", request.run_id)
    ) if value is not None]
    tree = conjoin(parse_filters(request.filters), *scope_filters)
    seen = timeline(request.as_of, request.include_superseded)
    (vector,) = await embedder.embed([request.query])
    rows = await repository.nearest(session, caller.project_id, vector, tree, request.top_k,
                                    request.threshold, timeline=seen)
    scope = GraphScope(caller.project_id, request.user_id, request.agent_id, request.run_id)
    moment = Moment(as_of=seen.as_of, include_invalid=seen.include_superseded)
    if request.graph:
        ids = await hop_memories(graph, scope, request.query, moment)
        # The same filters, scope and time as the vector side: the graph adds candidates,
        # it never lets one through that the search would refuse.
        linked = await repository.nearest(session, caller.project_id, vector, tree,
                                          request.top_k, request.threshold, timeline=seen,
                                          among=ids)
        rows = fuse([rows, linked], request.top_k)
    hits = [SearchHit.of(memory, score=score) for memory, score in rows]
    relations = None
    if "relations" in request.include:
        relations = await _relations_among(graph, scope, moment, [m.id for m, _ in rows])
    return SearchResponse(results=hits, relations=relations)


def fuse(rankings: list[list[tuple[Memory, float]]],
         top_k: int) -> list[tuple[Memory, float]]:
    """Reciprocal rank fusion; each memory keeps its own similarity as its score."""
    fused: dict[uuid.UUID, float] = {}
    rows: dict[uuid.UUID, tuple[Memory, float]] = {}
    for ranking in rankings:
        for rank, (memory, score) in enumerate(ranking, start=1):
            fused[memory.id] = fused.get(memory.id, 0.0) + 1.0 / (RRF_K + rank)
            rows.setdefault(memory.id, (memory, score))
    order = sorted(fused, key=lambda memory_id: (-fused[memory_id], -rows[memory_id][1]))
    return [rows[memory_id] for memory_id in order[:top_k]]


async def _relations_among(graph: GraphStore, scope: GraphScope, moment: Moment,
                           memory_ids: list[uuid.UUID]) -> list[RelationRead]:
    mentioned = await graph.entities_of(scope.project_id, memory_ids)
    entities = list(dict.fromkeys(e for ids in mentioned.values() for e in ids))
    if not entities:
        return []
    found = await graph.find_relations(scope, touching=entities, moment=moment)
    return [RelationRead.of(relation) for relation in found]
