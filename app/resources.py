"""What a process runs on, opened and closed in one place: the database (the bundled server
or a configured one), the embedding model, the graph store, the LLM endpoint and, in the API,
the in-process search index.

``open_resources`` is used by the API's lifespan, by the CLI's commands and by each Celery
worker process; whatever it opened is closed, in reverse order, when its block ends, also
when a later resource fails to open.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Literal

from app.config import Settings
from app.embeddings import Embedder, SentenceTransformerEmbedder, model_identity
from app.errors import LLMError
from app.index.candidates import CandidateSource, PostgresCandidates
from app.index.memory_index import MemoryIndex, open_memory_index
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
                raise LLMError(f"the bundled LLM could not start: {exc}; set "
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
    index: MemoryIndex | None = None  # the API's in-process search index

    @property
    def candidates(self) -> CandidateSource:
        """Where searches take their candidates: the in-process index, else Postgres."""
        return self.index if self.index is not None else PostgresCandidates()


IndexMode = Literal["none", "serve", "rebuild"]


@asynccontextmanager
async def open_resources(settings: Settings, *, migrate: bool = False,
                         embedder: Embedder | None = None,
                         index: IndexMode = "none") -> AsyncIterator[Resources]:
    """Opens every resource, yields them, closes them. ``embedder`` shares a model the
    caller already holds (it is not closed here); ``index``: ``serve`` loads the
    search index and keeps it current, ``rebuild`` makes it again from Postgres (and saves
    it on close)."""
    async with AsyncExitStack() as stack:
        database = await open_database(settings, migrate_schema=migrate)
        stack.push_async_callback(database.aclose)
        if embedder is not None and embedder.model_name != model_identity(
                settings.embedding.model):
            raise ValueError(f"the embedder given is {embedder.model_name}, the settings name "
                             f"{model_identity(settings.embedding.model)}")
        if embedder is None:
            embedder = await asyncio.to_thread(SentenceTransformerEmbedder.load,
                                               settings.embedding, settings.data_dir / "models")
            stack.push_async_callback(embedder.aclose)
        await check_embedding_space(database, embedder.model_name, embedder.dimension)
        graph = await open_graph_store(settings, database)
        stack.push_async_callback(graph.aclose)
        endpoint = LLMEndpoint(settings)
        stack.push_async_callback(endpoint.aclose)
        memory_index = None
        if index != "none":
            memory_index = await open_memory_index(settings, database, embedder,
                                                   rebuild=index == "rebuild")
            if memory_index is not None:
                stack.push_async_callback(memory_index.aclose)
        yield Resources(settings=settings, database=database, embedder=embedder, graph=graph,
                        llm=endpoint, index=memory_index)
