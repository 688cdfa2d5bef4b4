"""A running process follows its database's embedding space (migration 0010).

``anamnesis reindex --model`` (``app.index.reembed``) first names the next model: each
process loads it ahead, beside the one it serves with. When the switch commits, each process
moves within a poll interval: its embedder (``SwitchingEmbedder``, which everything holds)
now embeds with the new model, its database connections name it (the vector trigger refuses
writes of the old one), and its search index is built again for it while searches take their
candidates from Postgres. Searches are answered throughout; a write racing the switch is
refused with a retryable 503 and succeeds once the process has moved.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from app.embeddings import Embedder, model_identity
from app.store.db import Database
from app.store.repositories import embedding_space

logger = logging.getLogger(__name__)


@dataclass
class SwitchingEmbedder:
    """The process's embedder: the current model's, replaced in place by a switch."""

    current: Embedder
    owned: list[Embedder] = field(default_factory=list)  # loaded here, closed here

    @property
    def model_name(self) -> str:
        return self.current.model_name

    @property
    def dimension(self) -> int:
        return self.current.dimension

    @property
    def backend(self) -> str:
        return self.current.backend

    async def embed(self, texts: list[str]) -> list[list[float]]:
        return await self.current.embed(texts)

    async def aclose(self) -> None:
        for embedder in self.owned:
            await embedder.aclose()
        self.owned.clear()


Load = Callable[[str], Awaitable[Embedder]]


class EmbeddingWatch:
    """Polls the space every ``interval`` seconds; ``check`` also runs on demand (a search
    that met vectors of another size)."""

    def __init__(self, database: Database, embedder: SwitchingEmbedder, load: Load,
                 on_switch: Callable[[], Awaitable[None]], interval: float):
        self.database = database
        self.embedder = embedder
        self.load = load
        self.on_switch = on_switch
        self.interval = interval
        self.generation: int | None = None
        self._ahead: Embedder | None = None
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._poll(), name="embedding-watch")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception:  # the database away a moment: the next poll tries again
                logger.warning("embedding space check failed", exc_info=True)

    async def check(self) -> None:
        async with self._lock:
            async with self.database.session_scope() as session:
                space = await embedding_space.current(session)
            if space.model != self.embedder.model_name:
                await self._switch(space.model, space.next_model)
            elif space.next_model and model_identity(space.next_model) != space.model and (
                    self._ahead is None
                    or self._ahead.model_name != model_identity(space.next_model)):
                logger.info("embedding model switch announced: loading %s ahead",
                            model_identity(space.next_model))
                self._ahead = await self.load(space.next_model)
                self.embedder.owned.append(self._ahead)
            self.generation = space.generation

    async def _switch(self, model: str, source: str | None) -> None:
        ahead = self._ahead
        if ahead is None or ahead.model_name != model:
            ahead = await self.load(source if source and model_identity(source) == model
                                    else model)
            self.embedder.owned.append(ahead)
        self._ahead = None
        previous = self.embedder.current
        self.embedder.current = ahead
        await self.database.name_embedding_model(model)
        logger.info("embedding model switched from %s to %s", previous.model_name, model)
        if previous in self.embedder.owned:
            self.embedder.owned.remove(previous)
            await previous.aclose()
        await self.on_switch()
