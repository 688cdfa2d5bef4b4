"""The in-process queue of the embedded default: jobs run on the API's own event loop, a few
at a time, with the same retries and the same periodic sweep as Celery workers."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence

from app.jobs import runner
from app.resources import Resources

logger = logging.getLogger(__name__)


class InProcessQueue:
    """Runs jobs on this event loop: ``concurrency`` at a time, each id queued once."""

    def __init__(self, resources: Resources) -> None:
        self.resources = resources
        self.config = resources.settings.consolidation
        self._queue: asyncio.Queue[uuid.UUID] = asyncio.Queue()
        self._queued: set[uuid.UUID] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._timers: set[asyncio.TimerHandle] = set()

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._work(), name=f"consolidate-{number}")
                       for number in range(self.config.concurrency)]
        self._tasks.append(asyncio.create_task(self._sweep(), name="consolidate-sweep"))

    async def enqueue(self, job_ids: Sequence[uuid.UUID]) -> None:
        for job_id in job_ids:
            self._put(job_id)

    def _put(self, job_id: uuid.UUID) -> None:
        if job_id not in self._queued:
            self._queued.add(job_id)
            self._queue.put_nowait(job_id)

    def _enqueue_later(self, job_id: uuid.UUID, delay_s: float) -> None:
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._timers.discard(handle)
            self._put(job_id)

        handle = loop.call_later(delay_s, fire)
        self._timers.add(handle)

    async def _work(self) -> None:
        while True:
            job_id = await self._queue.get()
            self._queued.discard(job_id)
            try:
                await runner.run_job(self.resources, job_id)
            except runner.TransientJobError as retry:
                self._enqueue_later(job_id, retry.delay_s)
            except Exception:  # run_job settles the job's own failures; this is the rest
                logger.exception("in-process consolidation of job %s crashed", job_id)
            finally:
                self._queue.task_done()

    async def _sweep(self) -> None:
        while True:
            try:
                await runner.sweep(self.resources, self.enqueue)
            except Exception as exc:
                logger.warning("job sweep failed: %s", exc)
            await asyncio.sleep(self.config.sweep_interval_s)

    async def drain(self) -> None:
        """Drops scheduled retries and waits until every queued job has run."""
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        await self._queue.join()

    async def aclose(self) -> None:
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
