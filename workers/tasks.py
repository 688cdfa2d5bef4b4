"""Thin task shims: each calls one function of ``app.jobs.runner`` on the process's loop."""

from __future__ import annotations

import uuid
from typing import Any

from app.jobs import runner
from app.jobs.celery import CONSOLIDATE_TASK, SWEEP_TASK
from workers import runtime
from workers.celery_app import app


@app.task(name=CONSOLIDATE_TASK, bind=True, acks_late=True, max_retries=None)
def consolidate_episode(self: Any, job_id: str) -> str | None:
    """Safe to run twice; transient failures come back after the runner's backoff."""
    try:
        return runtime.run(runner.run_job(runtime.resources(), uuid.UUID(job_id)))
    except runner.TransientJobError as retry:
        raise self.retry(countdown=retry.delay_s) from retry


@app.task(name=SWEEP_TASK, ignore_result=True)
def sweep() -> int:
    """Re-enqueues jobs that went quiet, re-applies failed graph projections and prunes the
    change log (see ``runner.sweep``)."""
    return len(runtime.run(runner.sweep(runtime.resources(), _send)))


async def _send(job_ids: Any) -> None:
    for job_id in job_ids:
        consolidate_episode.delay(str(job_id))
