"""One event loop and one set of ``Resources`` (engine, embedder, graph store, LLM endpoint)
per worker process.

Opened (``open_resources``) in ``worker_process_init`` for prefork children, or on first
use in a solo worker (which sends no such signal), and closed at process shutdown. Tasks hand
their coroutine to ``run``; every task of the process shares the loop, so the engine's pooled
connections and the embedder's batcher stay valid between tasks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from contextlib import AsyncExitStack
from typing import Any, TypeVar

from celery.signals import worker_process_init, worker_process_shutdown, worker_shutdown

from app.config import Settings
from app.resources import Resources, open_resources

logger = logging.getLogger(__name__)
T = TypeVar("T")

_loop: asyncio.AbstractEventLoop | None = None
_stack: AsyncExitStack | None = None
_resources: Resources | None = None


def resources() -> Resources:
    if _resources is None:
        start()
    assert _resources is not None
    return _resources


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Runs a task's coroutine on the process's loop."""
    if _loop is None:
        start()
    assert _loop is not None
    return _loop.run_until_complete(coroutine)


def start(settings: Settings | None = None) -> None:
    global _loop, _stack, _resources
    if _resources is not None:
        return
    _loop = asyncio.new_event_loop()
    asyncio.set_event_loop(_loop)
    _stack = AsyncExitStack()
    _resources = _loop.run_until_complete(
        _stack.enter_async_context(open_resources(settings or Settings())))
    logger.info("worker process ready: database %s, embedder %s",
                _resources.database.engine.url.render_as_string(hide_password=True),
                _resources.embedder.model_name)


def stop() -> None:
    global _loop, _stack, _resources
    if _loop is None:
        return
    if _stack is not None:
        _loop.run_until_complete(_stack.aclose())
    _loop.close()
    _loop, _stack, _resources = None, None, None


@worker_process_init.connect
def _on_process_init(**_: Any) -> None:
    start()


@worker_process_shutdown.connect
def _on_process_shutdown(**_: Any) -> None:
    stop()


@worker_shutdown.connect
def _on_worker_shutdown(**_: Any) -> None:
    stop()  # a solo worker runs tasks in the main process
