"""Request limits counted in Redis: two API replicas on one Redis count one project's
requests together (``app.throttle``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from app.config import LimitSettings, Settings
from app.embeddings import SentenceTransformerEmbedder
from app.main import create_app
from app.store.db import Database
from tests.conftest import project_key


@pytest.fixture
async def replicas(redis_settings: Settings,
                   embedder: SentenceTransformerEmbedder) -> AsyncIterator[list[FastAPI]]:
    configured = redis_settings.model_copy(update={
        "limits": LimitSettings(project_requests=4, window_s=60),
        "search": redis_settings.search.model_copy(update={"index": "postgres"})})
    apps = [create_app(configured, embedder=embedder) for _ in range(2)]
    async with apps[0].router.lifespan_context(apps[0]), \
            apps[1].router.lifespan_context(apps[1]):
        yield apps


async def test_replicas_count_a_projects_requests_together(replicas: list[FastAPI],
                                                           workers_database: Database) -> None:
    key, _ = await project_key(workers_database, f"replicated-{id(replicas)}")
    assert all(app.state.resources.gate.throttle.shared for app in replicas)
    statuses = []
    for turn in range(6):
        app = replicas[turn % 2]
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://test",
                                     headers={"Authorization": f"Bearer {key}"}) as http:
            statuses.append((await http.get("/v1/memories?user_id=u1")).status_code)
    assert statuses == [200, 200, 200, 200, 429, 429]
