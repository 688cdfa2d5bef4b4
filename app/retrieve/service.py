"""Search: embed the query, take the nearest memories that match the filters exactly."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import Caller
from app.embeddings import Embedder
from app.memories.service import timeline
from app.retrieve.filters import Condition, conjoin, parse_filters
from app.retrieve.schemas import SearchHit, SearchRequest
from app.store.repositories import memories as repository


async def search(session: AsyncSession, embedder: Embedder, caller: Caller,
                 request: SearchRequest) -> list[SearchHit]:
    scope_filters = [Condition(field, "eq", value) for field, value in (
        ("user_id", request.user_id), ("agent_id", request.agent_id), ("run_id", request.run_id)
    ) if value is not None]
    tree = conjoin(parse_filters(request.filters), *scope_filters)
    seen = timeline(request.as_of, request.include_superseded)
    (vector,) = await embedder.embed([request.query])
    rows = await repository.nearest(session, caller.project_id, vector, tree, request.top_k,
                                    request.threshold, timeline=seen)
    return [SearchHit.of(memory, score=score) for memory, score in rows]
