from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from app.auth import Caller
from app.deps import CallerDep, QueueDep, SessionDep, WriterDep
from app.jobs import service
from app.jobs.schemas import JobPage, JobRead, JobStatus
from app.limits import MAX_PAGE_SIZE
from app.store.db import Database

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.get("", response_model=JobPage)
async def list_jobs(
    session: SessionDep, caller: CallerDep,
    status: Annotated[JobStatus | None, Query(description="Only jobs in this state.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
    cursor: uuid.UUID | None = None,
) -> JobPage:
    """The project's consolidation jobs, newest first, one page at a time."""
    rows, next_cursor = await service.recent(session, caller, status, limit, cursor)
    return JobPage(results=[JobRead.of(job) for job in rows], next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobRead)
async def get_job(job_id: uuid.UUID, session: SessionDep, caller: CallerDep) -> JobRead:
    """A consolidation job: its status, the memories it wrote, its error, what it cost."""
    return JobRead.of(await service.get(session, caller, job_id))


@router.post("/{job_id}/retry", response_model=JobRead, status_code=202)
async def retry_job(job_id: uuid.UUID, session: SessionDep, queue: QueueDep,
                    caller: WriterDep) -> JobRead:
    """Run a FAILED job again from its stored episode (409 for any other status)."""
    return JobRead.of(await service.retry(session, queue, caller, job_id))


class FinishedJobResponse(Response):
    """The job once it finished (200), or as it stands when ``timeout_s`` ran out (202).

    A route returns it and the request's session dependency then commits (and enqueues the
    job) before the response is sent; only then does this wait, so a route waits for a job
    without committing anything itself."""

    media_type = "application/json"

    def __init__(self, database: Database, caller: Caller, job_id: uuid.UUID,
                 timeout_s: float) -> None:
        super().__init__(status_code=202)
        self.database, self.caller = database, caller
        self.job_id, self.timeout_s = job_id, timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        job = await service.wait(self.database, self.caller, self.job_id, self.timeout_s)
        self.status_code = 200 if job.status in service.FINISHED else 202
        self.body = self.render(JobRead.of(job).model_dump_json())
        self.init_headers()
        await super().__call__(scope, receive, send)
