from __future__ import annotations

import uuid

from fastapi import APIRouter

from app.deps import CallerDep, QueueDep, SessionDep
from app.jobs import service
from app.jobs.schemas import JobRead

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.get("/{job_id}", response_model=JobRead)
async def get_job(job_id: uuid.UUID, session: SessionDep, caller: CallerDep) -> JobRead:
    """A consolidation job: its status, the memories it wrote, its error, what it cost."""
    return JobRead.of(await service.get(session, caller, job_id))


@router.post("/{job_id}/retry", response_model=JobRead, status_code=202)
async def retry_job(job_id: uuid.UUID, session: SessionDep, queue: QueueDep,
                    caller: CallerDep) -> JobRead:
    """Run a FAILED job again from its stored episode (409 for any other status)."""
    return JobRead.of(await service.retry(session, queue, caller, job_id))
