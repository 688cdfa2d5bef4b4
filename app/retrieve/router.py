from __future__ import annotations

from fastapi import APIRouter, Response

from app.deps import CallerDep, GraphDep, QueriesDep, SearchSourceDep, SessionDep, SettingsDep
from app.retrieve import service
from app.retrieve.schemas import SearchRequest, SearchResponse

router = APIRouter(prefix="/v1/memories", tags=["search"])


@router.post("/search", response_model=SearchResponse)
async def search_memories(body: SearchRequest, response: Response, session: SessionDep,
                          queries: QueriesDep, source: SearchSourceDep, graph: GraphDep,
                          settings: SettingsDep, caller: CallerDep) -> SearchResponse:
    """The ``top_k`` best memories for ``query`` among those matching the filters. The
    ``Server-Timing`` header gives the milliseconds of each step (embed, catch_up,
    candidates, graph, hydrate, fuse)."""
    watch = service.Stopwatch()
    found = await service.search(session, queries, source, graph, settings.search, caller,
                                 body, watch)
    response.headers["Server-Timing"] = watch.header()
    return found
