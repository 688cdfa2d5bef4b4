"""A second OpenAPI document for routes kept out of the native one (``/openapi.json``, what
the SDKs are typed from and the fuzz test drives): the Mem0-compatible routes
(``app.compat.mem0``) are described at ``/openapi/mem0.json``.

Apart because Mem0's shapes reuse the native names (``SearchRequest``, ``MemoryList`` …): in
one document FastAPI would rename the native components after their modules, and every SDK
type generated from them would change name. The document comes from an app that is never
served, holding only those routers, so FastAPI builds it the way it builds its own.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI

from app.http import ERROR_RESPONSES


def serve_schema(app: FastAPI, path: str, title: str, *routers: APIRouter) -> None:
    """``GET path``: the OpenAPI document of ``routers`` alone (include them in ``app``
    with ``include_in_schema=False``)."""
    described = FastAPI(title=f"{app.title}: {title}", version=app.version,
                        summary=app.summary, openapi_url=None, docs_url=None, redoc_url=None)
    for router in routers:
        described.include_router(router, responses=ERROR_RESPONSES)

    @app.get(path, include_in_schema=False)
    async def schema() -> dict[str, Any]:
        return described.openapi()
