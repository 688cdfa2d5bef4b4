"""``celery -A workers.celery_app worker``: the Celery app with the consolidation tasks.

Configured from the environment (``ANAMNESIS_*``) when imported; opens no connection until
the worker starts. The worker logs as the rest of the service does (``app.logs``).
"""

from __future__ import annotations

from typing import Any

from celery.signals import setup_logging

from app.config import Settings
from app.jobs.celery import make_celery
from app.logs import configure_logging

settings = Settings()
app = make_celery(settings)
app.conf.include = ["workers.tasks"]


@setup_logging.connect
def _configure_logging(**_: Any) -> None:
    """With a receiver here Celery installs no handler of its own (nor redirects stdout):
    every line, Celery's included, is written in ``ANAMNESIS_LOG_FORMAT`` at
    ``ANAMNESIS_LOG_LEVEL`` (Celery's ``--loglevel`` aside), with the job's id."""
    configure_logging(settings)
