"""What a process runs on, opened and closed in one place: the database (the bundled server
or a configured one), the embedding model, the graph store, the LLM endpoint and, in the API,
the in-process search index.

``open_resources`` is used by the API's lifespan, by the CLI's commands and by each Celery
worker process; whatever it opened is closed, in reverse order, when its block ends, also
when a later resource fails to open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal

from app.config import Settings
from app.embeddings import Embedder, SentenceTransformerEmbedder, model_identity
from app.errors import LLMError
from app.index.candidates import CandidateSource, PostgresCandidates
from app.index.memory_index import MemoryIndex, open_memory_index
from app.index.switch import EmbeddingWatch, SwitchingEmbedder
from app.llm import LLMClient, OpenAICompatibleClient
from app.local_llm import LocalLLM, LocalLLMError
from app.store.db import Database, check_embedding_space, open_database
from app.store.graph import open_graph_store
from app.store.graph.base import GraphStore

logger = logging.getLogger(__name__)
LOCAL_TIMEOUT_S = 600.0


class LLMEndpoint:
    """The LLM consolidation calls: the configured OpenAI-compatible endpoint, or the bundled
    model, started on first use (a process that never consolidates never starts it)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: LLMClient | None = None
        self._local: LocalLLM | None = None
        self._lock = asyncio.Lock()

    async def client(self) -> LLMClient:
        async with self._lock:
            if self._client is None:
                self._client = await self._connect()
            return self._client

    async def _connect(self) -> LLMClient:
        llm_settings = self.settings.llm
        base_url = llm_settings.base_url
        if not base_url:
            self._local = LocalLLM(self.settings.data_dir, llm_settings)
            try:
                base_url = await asyncio.to_thread(self._local.start)
            except LocalLLMError as exc:
                self._local = None
                logger.error("the bundled LLM could not start: %s", exc)
                raise LLMError("the bundled LLM could not start (the server log says why); set "
                               "ANAMNESIS_LLM__BASE_URL to use another") from exc
            # One local server answers one request at a time on a few cores: a call may
            # wait behind another job's before it starts.
            llm_settings = llm_settings.model_copy(update={
                "timeout_s": max(llm_settings.timeout_s, LOCAL_TIMEOUT_S)})
        return OpenAICompatibleClient.from_settings(llm_settings, base_url=base_url)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self._local is not None:
            await asyncio.to_thread(self._local.stop)
            self._local = None


@dataclass(kw_only=True)
class Resources:
    settings: Settings
    database: Database
    embedder: Embedder
    graph: GraphStore
    llm: LLMEndpoint
    # The API's in-process search index, replaced when the embedding model switches (shared
    # by every copy of these resources).
    search_index: SearchIndex = field(default_factory=lambda: SearchIndex())
    watch: EmbeddingWatch | None = None

    @property
    def index(self) -> MemoryIndex | None:
        return self.search_index.current

    @property
    def candidates(self) -> CandidateSource:
        """Where searches take their candidates: the in-process index, else Postgres (also
        while the index is built again for a new embedding model)."""
        index = self.index
        return index if index is not None else PostgresCandidates()


@dataclass
class SearchIndex:
    """The in-process index: None where search goes to Postgres, or while it is built."""

    current: MemoryIndex | None = None
    building: asyncio.Task[None] | None = None

    async def rebuild(self, settings: Settings, database: Database, embedder: Embedder) -> None:
        """Drops the index and builds it again, in the background, for ``embedder``'s model
        (its snapshot is of the old one: read from Postgres)."""
        old, self.current = self.current, None
        if old is None:
            return
        await old.aclose(save=False)
        if self.building is not None:
            self.building.cancel()

        async def build() -> None:
            self.current = await open_memory_index(settings, database, embedder)

        self.building = asyncio.create_task(build(), name="memory-index-rebuild")

    async def aclose(self) -> None:
        if self.building is not None:
            self.building.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.building
        if self.current is not None:
            await self.current.aclose()


IndexMode = Literal["none", "serve", "rebuild"]


@asynccontextmanager
async def open_resources(settings: Settings, *, migrate: bool = False,
                         embedder: Embedder | None = None,
                         index: IndexMode = "none",
                         follow: bool = True) -> AsyncIterator[Resources]:
    """Opens every resource, yields them, closes them. ``embedder`` shares a model the
    caller already holds (it is not closed here); ``index``: ``serve`` loads the
    search index and keeps it current, ``rebuild`` makes it again from Postgres (and saves
    it on close); ``follow``: switch to a new embedding model when the database does
    (``app.index.switch``)."""
    async with AsyncExitStack() as stack:
        # The API (the one process that serves its index) adopts a bundled Postgres whose
        # owner died, so a crash does not leave a server running until reboot.
        database = await open_database(settings, migrate_schema=migrate,
                                       adopt=index == "serve")
        stack.push_async_callback(database.aclose)
        if embedder is not None and embedder.model_name != model_identity(
                settings.embedding.model):
            raise ValueError(f"the embedder given is {embedder.model_name}, the settings name "
                             f"{model_identity(settings.embedding.model)}")
        switching = SwitchingEmbedder(embedder) if embedder is not None else None
        if switching is None:
            loaded = await load_embedder(settings, None)
            switching = SwitchingEmbedder(loaded, owned=[loaded])
        stack.push_async_callback(switching.aclose)
        await check_embedding_space(database, switching.model_name, switching.dimension)
        graph = await open_graph_store(settings, database)
        stack.push_async_callback(graph.aclose)
        endpoint = LLMEndpoint(settings)
        stack.push_async_callback(endpoint.aclose)
        search_index = SearchIndex()
        stack.push_async_callback(search_index.aclose)
        if index != "none":
            search_index.current = await open_memory_index(settings, database, switching,
                                                           rebuild=index == "rebuild")
        watch = None
        if follow:
            async def load(model: str) -> Embedder:
                return await load_embedder(settings, model)

            async def moved() -> None:
                await search_index.rebuild(settings, database, switching)

            watch = EmbeddingWatch(database, switching, load, moved,
                                   settings.search.poll_interval_s)
            await watch.start()
            stack.push_async_callback(watch.aclose)
        yield Resources(settings=settings, database=database, embedder=switching, graph=graph,
                        llm=endpoint, search_index=search_index, watch=watch)


async def load_embedder(settings: Settings, model: str | None) -> Embedder:
    """The embedding model ``model`` names (a bundled name or a folder), else the
    configured one, loaded in a thread."""
    chosen = settings.embedding if model is None else settings.embedding.model_copy(
        update={"model": model})
    return await asyncio.to_thread(SentenceTransformerEmbedder.load, chosen,
                                   settings.data_dir / "models")
