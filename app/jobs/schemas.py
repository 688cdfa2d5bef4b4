"""API shapes of consolidation jobs."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from app.store.models import Job

JobStatus = Literal["PENDING", "RUNNING", "SUCCEEDED", "FAILED"]


class JobAccepted(BaseModel):
    job_id: uuid.UUID
    status: JobStatus = "PENDING"


class JobResult(BaseModel):
    id: uuid.UUID = Field(description="The memory added, changed or confirmed.")
    memory: str
    event: Literal["ADD", "UPDATE", "SUPERSEDE", "NOOP"]
    previous_memory: str | None = Field(
        default=None, description="UPDATE: the text before; SUPERSEDE: the retired memory's.")
    previous_id: uuid.UUID | None = Field(
        default=None, description="SUPERSEDE: the memory that stopped being true.")


class JobError(BaseModel):
    code: str
    detail: str


class JobUsage(BaseModel):
    model: str | None
    llm_calls: int
    prompt_tokens: int
    completion_tokens: int
    truncated_replies: int = Field(
        default=0, description="Replies cut at their token limit (a model that ran away); "
        "each is asked again once, shorter.")


class JobRead(BaseModel):
    id: uuid.UUID
    episode_id: uuid.UUID
    status: JobStatus
    results: list[JobResult]
    error: JobError | None = Field(
        description="Why the job failed; while PENDING, why the last attempt did.")
    attempts: int
    usage: JobUsage
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None

    @classmethod
    def of(cls, job: Job) -> JobRead:
        results: list[dict[str, Any]] = job.results or []
        error = (JobError(code=job.error_code or "error", detail=job.error)
                 if job.error else None)
        return cls(
            id=job.id, episode_id=job.episode_id, status=job.status,
            results=[JobResult.model_validate(item) for item in results], error=error,
            attempts=job.attempts,
            usage=JobUsage(model=job.model, llm_calls=job.llm_calls,
                           prompt_tokens=job.prompt_tokens,
                           completion_tokens=job.completion_tokens,
                           truncated_replies=job.truncated_replies),
            created_at=job.created_at, started_at=job.started_at, completed_at=job.completed_at)


class JobPage(BaseModel):
    results: list[JobRead]
    next_cursor: uuid.UUID | None = Field(
        description="Pass as `cursor` for the next page; null at the end.")
