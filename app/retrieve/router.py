from __future__ import annotations

from fastapi import APIRouter

from app.deps import CallerDep, EmbedderDep, GraphDep, SessionDep
from app.retrieve import service
from app.retrieve.schemas import SearchRequest, SearchResponse

router = APIRouter(prefix="/v1/memories", tags=["search"])


@router.post("/search", response_model=SearchResponse)
async def search_memories(body: SearchRequest, session: SessionDep, embedder: EmbedderDep,
                          graph: GraphDep, caller: CallerDep) -> SearchResponse:
    """The ``top_k`` memories closest to ``query`` among those matching the filters."""
    return await service.search(session, embedder, graph, caller, body)
