from __future__ import annotations

from fastapi import APIRouter

from app.deps import CallerDep, GraphDep, IndexDep, QueriesDep, SessionDep, SettingsDep
from app.retrieve import service
from app.retrieve.schemas import SearchRequest, SearchResponse

router = APIRouter(prefix="/v1/memories", tags=["search"])


@router.post("/search", response_model=SearchResponse)
async def search_memories(body: SearchRequest, session: SessionDep, queries: QueriesDep,
                          index: IndexDep, graph: GraphDep, settings: SettingsDep,
                          caller: CallerDep) -> SearchResponse:
    """The ``top_k`` best memories for ``query`` among those matching the filters."""
    return await service.search(session, queries, index, graph, settings.search, caller, body)
