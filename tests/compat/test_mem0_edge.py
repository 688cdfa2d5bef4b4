"""The Mem0 routes behind the native edge: the same keys (``Token`` as ``Bearer``), the same
rates, the same project binding."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from fastapi import FastAPI

from app.config import LimitSettings, Settings
from app.embeddings import SentenceTransformerEmbedder
from app.main import create_app
from app.store.db import Database
from tests.conftest import project_key

KeyFactory = Callable[..., Awaitable[str]]
ADD = {"messages": [{"role": "user", "content": "Likes green tea."}], "user_id": "u1",
       "infer": False}


def keyed(app: FastAPI, key: str, scheme: str = "Token") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test",
                             headers={"Authorization": f"{scheme} {key}"})


@pytest.fixture
async def limited(settings: Settings, embedder: SentenceTransformerEmbedder,
                  clean: None) -> AsyncIterator[FastAPI]:
    configured = settings.model_copy(update={"limits": LimitSettings(
        key_requests=3, project_requests=100, window_s=60)})
    application = create_app(configured, embedder=embedder)
    async with application.router.lifespan_context(application):
        yield application


async def test_mem0_requests_count_against_the_keys_rate(limited: FastAPI,
                                                         database: Database) -> None:
    key, _ = await project_key(database, "rated")
    async with keyed(limited, key, "Bearer") as native, keyed(limited, key) as mem0:
        assert (await native.get("/v1/memories?user_id=u1")).status_code == 200
        assert (await mem0.get("/mem0/v1/ping/")).status_code == 200
        assert (await mem0.post("/mem0/v3/memories/", json={})).status_code == 200
        refused = await mem0.post("/mem0/v3/memories/add/", content=b"{not json")
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"] == "rate_limited"
        assert 1 <= int(refused.headers["retry-after"]) <= 60


async def test_another_projects_memory_is_not_found(app: FastAPI,
                                                    api_key_factory: KeyFactory) -> None:
    async with keyed(app, await api_key_factory()) as owner, \
            keyed(app, await api_key_factory()) as stranger:
        added = await owner.post("/mem0/v3/memories/add/", json=ADD)
        memory_id = added.json()["results"][0]["id"]
        path = f"/mem0/v1/memories/{memory_id}/"
        for response in (await stranger.get(path), await stranger.put(path, json={"text": "x"}),
                         await stranger.delete(path),
                         await stranger.get(f"{path}history/")):
            assert response.status_code == 404, response.text
            assert response.json()["error"] == "not_found"
        listed = await stranger.post("/mem0/v3/memories/", json={"filters": {"user_id": "u1"}})
        assert listed.json()["count"] == 0
        assert (await stranger.get("/mem0/v1/entities/")).json() == {"results": []}
        assert (await owner.get(path)).json()["memory"] == "Likes green tea."
