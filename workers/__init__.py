"""Celery workers: they import ``app``; ``app`` never imports them."""
