"""``create_app()``: the lifespan builds every resource; routers and error handlers mount."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from app.auth import KeyTouches
from app.config import Settings
from app.deps import Resources, ResourcesDep
from app.embeddings import Embedder, SentenceTransformerEmbedder
from app.http import (
    RequestContextMiddleware,
    install_database_error_handler,
    install_error_handlers,
)
from app.ingest.router import router as ingest_router
from app.memories.router import router as memories_router
from app.retrieve.router import router as retrieve_router
from app.store.db import check_embedding_dimension, open_database

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, *, embedder: Embedder | None = None) -> FastAPI:
    """The API. ``embedder`` lets a caller share an already loaded model (it is not closed)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database = await open_database(settings, migrate_schema=settings.db.migrate_on_start)
        own_embedder = embedder is None
        try:
            model: Embedder = (
                embedder if embedder is not None
                else await asyncio.to_thread(SentenceTransformerEmbedder.load, settings.embedding)
            )
            await check_embedding_dimension(database, model.dimension)
        except BaseException:
            await database.aclose()
            raise
        app.state.resources = Resources(settings, database, model,
                                        KeyTouches(settings.api.key_touch_interval_s))
        try:
            yield
        finally:
            if own_embedder:
                await model.aclose()
            await database.aclose()

    app = FastAPI(
        title="Anamnesis",
        version="0.1.0",
        summary="Long-term memory for AI agents",
        lifespan=lifespan,
    )
    app.add_middleware(RequestContextMiddleware, max_body_bytes=settings.api.max_body_bytes)
    install_error_handlers(app)
    install_database_error_handler(app)
    app.include_router(ingest_router)
    app.include_router(retrieve_router)
    app.include_router(memories_router)

    @app.get("/health", tags=["ops"])
    async def health() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/ready", tags=["ops"], response_model=None)
    async def ready(resources: ResourcesDep) -> Any:
        """The database answers and the embedding model is loaded."""
        try:
            await resources.database.ping()
        except Exception as exc:
            logger.warning("readiness: database unreachable: %s", exc.__class__.__name__)
            return JSONResponse({"status": "unavailable", "database": "down"}, status_code=503)
        return {"status": "ready", "database": "ok",
                "embedding_model": resources.embedder.model_name,
                "embedding_dimension": resources.embedder.dimension}

    return app
