from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse

from app.deps import (
    CallerDep,
    DatabaseDep,
    EmbedderDep,
    QueueDep,
    SessionDep,
    SettingsDep,
)
from app.ingest import service
from app.ingest.schemas import AddResponse, MemoryCreate
from app.jobs import service as jobs
from app.jobs.schemas import JobAccepted, JobRead
from app.store.db import commit
from app.validation import OptionalStorableStr

router = APIRouter(prefix="/v1/memories", tags=["memories"])


@router.post("", status_code=201, response_model=AddResponse,
             responses={201: {"model": AddResponse}, 202: {"model": JobAccepted | JobRead},
                        200: {"model": JobRead}})
async def add_memories(
    body: MemoryCreate, session: SessionDep, embedder: EmbedderDep, queue: QueueDep,
    database: DatabaseDep, settings: SettingsDep, caller: CallerDep,
    idempotency_key: Annotated[OptionalStorableStr, Header(max_length=255)] = None,
) -> Any:
    """Store messages. ``infer=true`` (default): kept as an episode and consolidated by the
    LLM in the background (202 with a job id; with ``wait``, 200 and the finished job).
    ``infer=false``: each non-empty message becomes one memory as it stands (201)."""
    status, payload = await service.add(session, embedder, queue, caller, body,
                                        idempotency_key)
    if body.wait and status == 202:
        # The job must be committed and enqueued before anyone can run it: the edge commits
        # here, earlier than its dependency would.
        await commit(session)
        job = await jobs.wait(database, caller, uuid.UUID(payload["job_id"]),
                              settings.consolidation.max_wait_s)
        finished = job.status in ("SUCCEEDED", "FAILED")
        return JSONResponse(JobRead.of(job).model_dump(mode="json"),
                            status_code=200 if finished else 202)
    return JSONResponse(payload, status_code=status)
