"""The Celery application's configuration: the one module of ``app`` importing celery.

The API uses it only to send task messages by name; ``workers/`` registers the tasks on
the same configuration and runs them. Jobs go to the ``consolidation`` queue, the periodic
sweep to a queue of its own; a worker consumes both (``QUEUES``).
"""

from __future__ import annotations

from datetime import timedelta

from celery import Celery
from kombu.entity import Queue

from app.config import Settings

CONSOLIDATE_TASK = "consolidate.episode"
SWEEP_TASK = "consolidate.sweep"
QUEUE = "consolidation"
SWEEP_QUEUE = "consolidation.sweep"
QUEUES = (QUEUE, SWEEP_QUEUE)


def make_celery(settings: Settings) -> Celery:
    """A Celery app on ``ANAMNESIS_REDIS__URL`` (broker and result backend)."""
    url = settings.redis.url
    if not url:
        raise ValueError("Celery needs ANAMNESIS_REDIS__URL (a redis:// URL)")
    celery = Celery("anamnesis", broker=url, backend=url, set_as_current=False)
    celery.conf.update(
        task_serializer="json", accept_content=["json"], result_serializer="json",
        task_default_queue=QUEUE,
        # The sweep does not queue behind the jobs: with more than a sweep interval of work
        # waiting it would expire there every time, and the jobs it exists to hand back (their
        # message lost, their worker dead) would wait for a quiet moment that steady load
        # never brings. A worker takes from both queues in turn.
        task_queues=[Queue(name) for name in QUEUES],  # type: ignore[no-untyped-call]
        task_routes={SWEEP_TASK: {"queue": SWEEP_QUEUE}},
        # A job is acknowledged once it ran, so a worker that dies mid-job leaves the message
        # to be delivered again (by Redis only after its one-hour visibility timeout; the
        # sweep re-enqueues the job once its lease lapses); the claim makes repeats harmless.
        task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1,
        # A pool process loads torch and the embedding model in worker_process_init before
        # it reports up (tens of seconds on a busy machine). Celery's default of 4 s kills
        # every replacement of a crashed pool process before it is ready, forever.
        worker_proc_alive_timeout=300.0,
        # Job state lives in Postgres; Redis keeps no result it would have to expire.
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        beat_schedule={"sweep": {
            "task": SWEEP_TASK,
            "schedule": timedelta(seconds=settings.consolidation.sweep_interval_s),
            "options": {"expires": settings.consolidation.sweep_interval_s},
        }},
    )
    return celery
