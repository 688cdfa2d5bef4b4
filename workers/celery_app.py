"""``celery -A workers.celery_app worker``: the Celery app with the consolidation tasks.

Configured from the environment (``ANAMNESIS_*``) when imported; opens no connection until
the worker starts.
"""

from __future__ import annotations

from app.config import Settings
from app.jobs.celery import make_celery

app = make_celery(Settings())
app.conf.include = ["workers.tasks"]
