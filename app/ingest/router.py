from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse

from app.deps import (
    DatabaseDep,
    EmbedderDep,
    QueueDep,
    SessionDep,
    SettingsDep,
    ThrottleDep,
    WriterDep,
)
from app.ingest import service
from app.ingest.schemas import AddResponse, MemoryCreate
from app.jobs.router import FinishedJobResponse
from app.jobs.schemas import JobAccepted, JobRead
from app.validation import OptionalStorableStr

router = APIRouter(prefix="/v1/memories", tags=["memories"])


@router.post("", status_code=201, response_model=AddResponse,
             responses={201: {"model": AddResponse}, 202: {"model": JobAccepted | JobRead},
                        200: {"model": JobRead}})
async def add_memories(
    body: MemoryCreate, session: SessionDep, embedder: EmbedderDep, queue: QueueDep,
    database: DatabaseDep, settings: SettingsDep, throttle: ThrottleDep, caller: WriterDep,
    idempotency_key: Annotated[OptionalStorableStr, Header(max_length=255)] = None,
) -> Any:
    """Store messages. ``infer=true`` (default): kept as an episode and consolidated by the
    LLM in the background (202 with a job id; with ``wait``, 200 and the finished job).
    ``infer=false``: each non-empty message becomes one memory as it stands (201)."""
    outcome = await service.add(session, embedder, queue, throttle, caller, body,
                                idempotency_key)
    match outcome:
        case service.Stored(response):
            return JSONResponse(response.model_dump(mode="json"), status_code=201)
        case service.Accepted(job) if body.wait:
            return FinishedJobResponse(database, caller, job.job_id,
                                       settings.consolidation.max_wait_s)
        case service.Accepted(job):
            return JSONResponse(job.model_dump(mode="json"), status_code=202)
        case service.Replayed() if body.wait and outcome.job_id is not None:
            return FinishedJobResponse(database, caller, outcome.job_id,
                                       settings.consolidation.max_wait_s)
        case service.Replayed(status_code, answer):
            return JSONResponse(answer, status_code=status_code)
