"""The enqueue side of consolidation: the ``JobQueue`` seam and its Celery implementation.

``CeleryQueue`` sends a task message per job to Redis; Celery workers (``workers/``) run
it. ``InProcessQueue`` (``app.jobs.inprocess``) runs the very same ``runner.run_job`` on the
API's own event loop, so a single ``anamnesis serve`` consolidates with no other service.

Either way a job id may be delivered more than once (a retry, the sweeper, a redelivery):
``run_job`` claims the job first, so duplicates are no-ops. This module imports nothing of
the pipeline: the API's routers depend on the seam only.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from typing import Protocol

from app.config import Settings

logger = logging.getLogger(__name__)


class JobQueue(Protocol):
    async def enqueue(self, job_ids: Sequence[uuid.UUID]) -> None:
        """Deliver these jobs to whoever runs them (at least once)."""
        ...

    async def aclose(self) -> None: ...


class CeleryQueue:
    """Publishes ``consolidate.episode`` messages; never runs jobs itself."""

    def __init__(self, settings: Settings) -> None:
        from app.jobs.celery import CONSOLIDATE_TASK, make_celery

        self._celery = make_celery(settings)
        self._task = CONSOLIDATE_TASK

    async def enqueue(self, job_ids: Sequence[uuid.UUID]) -> None:
        # kombu publishes synchronously (and retries a lost connection): keep it off the loop.
        await asyncio.to_thread(self._publish, [str(job_id) for job_id in job_ids])

    def _publish(self, job_ids: list[str]) -> None:
        with self._celery.producer_or_acquire() as producer:
            for job_id in job_ids:
                self._celery.send_task(self._task, args=[job_id], producer=producer)

    async def aclose(self) -> None:
        await asyncio.to_thread(self._celery.close)
