"""What a consolidation needs: a database, an embedder, an LLM client, the settings.

The API builds one from its own database and embedder (the in-process queue); a Celery
worker process builds its own in ``worker_process_init``. The LLM client is made on first
use, so a process that never consolidates never starts the bundled model.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from app.config import Settings
from app.embeddings import Embedder, SentenceTransformerEmbedder
from app.errors import LLMError
from app.llm import LLMClient, OpenAICompatibleClient
from app.local_llm import LocalLLM, LocalLLMError
from app.store.db import Database, check_embedding_dimension, open_database
from app.store.graph import open_graph_store
from app.store.graph.base import GraphStore

logger = logging.getLogger(__name__)
LOCAL_TIMEOUT_S = 600.0


@dataclass
class Consolidator:
    settings: Settings
    database: Database
    embedder: Embedder
    graph: GraphStore
    owns_database: bool = False
    owns_embedder: bool = False
    owns_graph: bool = False
    _llm: LLMClient | None = None
    _local: LocalLLM | None = None
    _llm_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @classmethod
    async def open(cls, settings: Settings, *, database: Database | None = None,
                   embedder: Embedder | None = None, graph: GraphStore | None = None,
                   llm: LLMClient | None = None) -> Consolidator:
        """Builds what was not given; what it builds, ``aclose`` closes."""
        own_database = database is None
        if database is None:
            database = await open_database(settings, migrate_schema=False)
        own_embedder = embedder is None
        try:
            if embedder is None:
                embedder = await asyncio.to_thread(SentenceTransformerEmbedder.load,
                                                   settings.embedding)
            await check_embedding_dimension(database, embedder.dimension)
            own_graph = graph is None
            if graph is None:
                graph = await open_graph_store(settings, database)
        except BaseException:
            if own_database:
                await database.aclose()
            raise
        return cls(settings, database, embedder, graph, owns_database=own_database,
                   owns_embedder=own_embedder, owns_graph=own_graph, _llm=llm)

    async def llm(self) -> LLMClient:
        """The configured endpoint's client, or the bundled model's, started now if need be."""
        async with self._llm_lock:
            if self._llm is None:
                base_url = self.settings.llm.base_url
                if not base_url:
                    self._local = LocalLLM(self.settings.data_dir, self.settings.llm)
                    try:
                        base_url = await asyncio.to_thread(self._local.start)
                    except LocalLLMError as exc:
                        self._local = None
                        raise LLMError(f"the bundled LLM could not start: {exc}; set "
                                       "ANAMNESIS_LLM__BASE_URL to use another") from exc
                    # One local server answers one request at a time on a few cores: a
                    # call may wait behind another job's before it starts.
                    llm_settings = self.settings.llm.model_copy(update={
                        "timeout_s": max(self.settings.llm.timeout_s, LOCAL_TIMEOUT_S)})
                else:
                    llm_settings = self.settings.llm
                self._llm = OpenAICompatibleClient.from_settings(llm_settings,
                                                                 base_url=base_url)
            return self._llm

    async def aclose(self) -> None:
        if self._llm is not None:
            await self._llm.aclose()
            self._llm = None
        if self._local is not None:
            await asyncio.to_thread(self._local.stop)
            self._local = None
        if self.owns_graph:
            await self.graph.aclose()
        if self.owns_embedder:
            await self.embedder.aclose()
        if self.owns_database:
            await self.database.aclose()
