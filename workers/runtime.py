"""One event loop and one ``Consolidator`` (engine, embedder, LLM client) per worker process.

Built in ``worker_process_init`` for prefork children, or on first use in a solo worker
(which sends no such signal), and closed at process shutdown. Tasks hand their coroutine to
``run``; every task of the process shares the loop, so the engine's pooled connections and
the embedder's batcher stay valid between tasks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

from celery.signals import worker_process_init, worker_process_shutdown, worker_shutdown

from app.config import Settings
from app.consolidate.runtime import Consolidator

logger = logging.getLogger(__name__)
T = TypeVar("T")

_loop: asyncio.AbstractEventLoop | None = None
_consolidator: Consolidator | None = None


def consolidator() -> Consolidator:
    if _consolidator is None:
        start()
    assert _consolidator is not None
    return _consolidator


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Runs a task's coroutine on the process's loop."""
    if _loop is None:
        start()
    assert _loop is not None
    return _loop.run_until_complete(coroutine)


def start(settings: Settings | None = None) -> None:
    global _loop, _consolidator
    if _consolidator is not None:
        return
    _loop = asyncio.new_event_loop()
    asyncio.set_event_loop(_loop)
    _consolidator = _loop.run_until_complete(Consolidator.open(settings or Settings()))
    logger.info("worker process ready: database %s, embedder %s",
                _consolidator.database.engine.url.render_as_string(hide_password=True),
                _consolidator.embedder.model_name)


def stop() -> None:
    global _loop, _consolidator
    if _loop is None:
        return
    if _consolidator is not None:
        _loop.run_until_complete(_consolidator.aclose())
    _loop.close()
    _loop, _consolidator = None, None


@worker_process_init.connect
def _on_process_init(**_: Any) -> None:
    start()


@worker_process_shutdown.connect
def _on_process_shutdown(**_: Any) -> None:
    stop()


@worker_shutdown.connect
def _on_worker_shutdown(**_: Any) -> None:
    stop()  # a solo worker runs tasks in the main process
