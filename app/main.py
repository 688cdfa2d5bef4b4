"""``create_app()``: the lifespan opens every resource (``open_resources``) and the job
queue; routers and error handlers mount."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.routing import Route

from app.auth import Gatekeeper, KeyCache, KeyTouches, ProjectSlots
from app.compat.mem0.oss.router import router as mem0_oss_router
from app.compat.mem0.router import router as mem0_router
from app.config import Settings
from app.deps import ApiResources, ResourcesDep
from app.embeddings import Embedder
from app.graph.router import router as graph_router
from app.http import (
    ERROR_RESPONSES,
    MCP_PATH,
    RequestContextMiddleware,
    install_database_error_handler,
    install_error_handlers,
)
from app.ingest.router import router as ingest_router
from app.jobs.inprocess import InProcessQueue
from app.jobs.queue import CeleryQueue, JobQueue
from app.jobs.router import router as jobs_router
from app.mcp.http import McpEndpoint
from app.memories.router import router as memories_router
from app.memories.router import scopes as scopes_router
from app.memories.router import users as users_router
from app.metrics import Metrics, MetricsMiddleware
from app.openapi import serve_schema
from app.projects.router import keys as keys_router
from app.projects.router import router as projects_router
from app.resources import Resources, open_resources
from app.retrieve.query_embeddings import QueryEmbeddings
from app.retrieve.router import router as retrieve_router
from app.throttle import Throttle
from app.transfer.router import router as transfer_router
from app.ui.console import mount_console

logger = logging.getLogger(__name__)


def build_queue(resources: Resources) -> JobQueue:
    """Celery on Redis when configured; otherwise jobs run in this process."""
    settings = resources.settings
    if settings.redis.url:
        logger.info("consolidation jobs go to Celery workers on Redis")
        return CeleryQueue(settings)
    queue = InProcessQueue(resources)
    queue.start()
    logger.info("consolidation runs in-process (%d at a time); set ANAMNESIS_REDIS__URL to use "
                "Celery workers", settings.consolidation.concurrency)
    return queue


def create_app(settings: Settings | None = None, *, embedder: Embedder | None = None) -> FastAPI:
    """The API. ``embedder`` lets a caller share an already loaded model (it is not closed)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            core = await stack.enter_async_context(open_resources(
                settings, migrate=settings.db.migrate_on_start, embedder=embedder,
                index="serve"))
            queue = build_queue(core)
            stack.push_async_callback(queue.aclose)
            throttle = Throttle(settings.limits, settings.redis.url)
            stack.push_async_callback(throttle.aclose)
            gate = Gatekeeper(core.database, KeyTouches(settings.api.key_touch_interval_s),
                              throttle, ProjectSlots(settings.api.project_concurrency),
                              KeyCache(settings.api.key_cache_s))
            await stack.enter_async_context(mcp_endpoint.running())
            app.state.resources = ApiResources.of(
                core, gate=gate, queue=queue,
                queries=QueryEmbeddings(core.embedder, settings.search.query_cache_size,
                                        settings.search.embed_window_ms / 1000))
            yield

    app = FastAPI(
        title="Anamnesis",
        version="0.1.0",
        summary="Long-term memory for AI agents",
        lifespan=lifespan,
    )
    app.add_middleware(RequestContextMiddleware, max_body_bytes=settings.api.max_body_bytes,
                       large_bodies={"/v1/import": settings.api.max_import_bytes})
    metrics = Metrics()
    if settings.api.metrics:
        app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: times everything
    install_error_handlers(app)
    install_database_error_handler(app)
    app.include_router(ingest_router, responses=ERROR_RESPONSES)
    app.include_router(retrieve_router, responses=ERROR_RESPONSES)
    app.include_router(memories_router, responses=ERROR_RESPONSES)
    app.include_router(users_router, responses=ERROR_RESPONSES)
    app.include_router(scopes_router, responses=ERROR_RESPONSES)
    app.include_router(jobs_router, responses=ERROR_RESPONSES)
    app.include_router(projects_router, responses=ERROR_RESPONSES)
    app.include_router(keys_router, responses=ERROR_RESPONSES)
    app.include_router(graph_router, responses=ERROR_RESPONSES)
    app.include_router(transfer_router, responses=ERROR_RESPONSES)
    for mem0 in (mem0_router, mem0_oss_router):
        app.include_router(mem0, responses=ERROR_RESPONSES, include_in_schema=False)
    serve_schema(app, "/openapi/mem0.json", "Mem0-compatible API", mem0_router, mem0_oss_router)
    mcp_endpoint = McpEndpoint(app)
    app.router.routes.append(Route(MCP_PATH, mcp_endpoint, methods=["GET", "POST", "DELETE"],
                                   include_in_schema=False))
    mount_console(app)

    @app.get("/health", tags=["ops"])
    async def health() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    if settings.api.metrics:
        @app.get("/metrics", tags=["ops"], include_in_schema=False)
        async def prometheus(resources: ResourcesDep) -> Response:
            """Prometheus text format (``app.metrics``); aggregates of every project."""
            return Response(await metrics.render(resources), media_type=CONTENT_TYPE_LATEST)

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
                "embedding_dimension": resources.embedder.dimension,
                "embedding_backend": resources.embedder.backend}

    return app
