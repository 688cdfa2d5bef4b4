"""Thin task shims: each calls one function of ``app.consolidate`` on the process's loop."""

from __future__ import annotations

import uuid
from typing import Any

from app.consolidate import pipeline
from app.jobs.celery import CONSOLIDATE_TASK, SWEEP_TASK
from workers import runtime
from workers.celery_app import app


@app.task(name=CONSOLIDATE_TASK, bind=True, acks_late=True, max_retries=None)
def consolidate_episode(self: Any, job_id: str) -> str | None:
    """Safe to run twice; transient failures come back after the pipeline's backoff."""
    try:
        return runtime.run(pipeline.run_job(runtime.consolidator(), uuid.UUID(job_id)))
    except pipeline.TransientJobError as retry:
        raise self.retry(countdown=retry.delay_s) from retry


@app.task(name=SWEEP_TASK, ignore_result=True)
def sweep() -> int:
    """Re-enqueues jobs that went quiet and re-applies failed graph projections (see
    ``pipeline.sweep``)."""
    return len(runtime.run(pipeline.sweep(runtime.consolidator(), _send)))


async def _send(job_ids: Any) -> None:
    for job_id in job_ids:
        consolidate_episode.delay(str(job_id))
