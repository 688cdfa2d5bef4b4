from __future__ import annotations

from fastapi import APIRouter, Response
from sqlalchemy.exc import DBAPIError

from app.deps import CallerDep, GraphDep, QueriesDep, ResourcesDep, SessionDep, SettingsDep
from app.retrieve import service
from app.retrieve.schemas import SearchRequest, SearchResponse
from app.store.db import met_switched_vectors

router = APIRouter(prefix="/v1/memories", tags=["search"])


@router.post("/search", response_model=SearchResponse)
async def search_memories(body: SearchRequest, response: Response, session: SessionDep,
                          queries: QueriesDep, resources: ResourcesDep, graph: GraphDep,
                          settings: SettingsDep, caller: CallerDep) -> SearchResponse:
    """The ``top_k`` best memories for ``query`` among those matching the filters. The
    ``Server-Timing`` header gives the milliseconds of each step (embed, catch_up,
    candidates, graph, hydrate, fuse)."""
    watch = service.Stopwatch()
    try:
        found = await service.search(session, queries, resources.candidates, graph,
                                     settings.search, caller, body, watch)
    except DBAPIError as exc:
        # The database switched embedding model an instant ago and this process has not
        # moved yet: it moves now, and the search runs again with the new model.
        if resources.watch is None or not met_switched_vectors(exc):
            raise
        await session.rollback()
        await resources.watch.check()
        found = await service.search(session, queries, resources.candidates, graph,
                                     settings.search, caller, body, watch)
    response.headers["Server-Timing"] = watch.header()
    return found
