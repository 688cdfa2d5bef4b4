"""The Celery application's configuration: the one module of ``app`` importing celery.

The API uses it only to send task messages by name; ``workers/`` registers the tasks on
the same configuration and runs them.
"""

from __future__ import annotations

from datetime import timedelta

from celery import Celery

from app.config import Settings

CONSOLIDATE_TASK = "consolidate.episode"
SWEEP_TASK = "consolidate.sweep"
QUEUE = "consolidation"


def make_celery(settings: Settings) -> Celery:
    """A Celery app on ``ANAMNESIS_REDIS__URL`` (broker and result backend)."""
    url = settings.redis.url
    if not url:
        raise ValueError("Celery needs ANAMNESIS_REDIS__URL (a redis:// URL)")
    celery = Celery("anamnesis", broker=url, backend=url, set_as_current=False)
    celery.conf.update(
        task_serializer="json", accept_content=["json"], result_serializer="json",
        task_default_queue=QUEUE,
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
