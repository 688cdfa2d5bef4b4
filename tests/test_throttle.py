"""Rate limits and quotas: off by default; configured, a key or a project past its rate gets
429 with Retry-After before its body is read, and a project past its daily LLM tokens cannot
start consolidations (``app.throttle``). Counting across replicas in Redis:
``tests/workers/test_rate_limits.py``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from app.config import LimitSettings, Settings
from app.embeddings import SentenceTransformerEmbedder
from app.main import create_app
from app.store.db import Database
from app.store.models import Job
from tests.conftest import project_key

ADD = {"messages": [{"role": "user", "content": "Likes green tea."}], "user_id": "u1",
       "infer": False}


@pytest.fixture
async def limited(settings: Settings, embedder: SentenceTransformerEmbedder,
                  clean: None) -> AsyncIterator[FastAPI]:
    configured = settings.model_copy(update={"limits": LimitSettings(
        key_requests=3, project_requests=5, window_s=60,
        project_llm_tokens_per_day=1000)})
    application = create_app(configured, embedder=embedder)
    async with application.router.lifespan_context(application):
        yield application


def keyed(app: FastAPI, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test",
                             headers={"Authorization": f"Bearer {key}"})


async def test_no_limits_unless_configured(client: httpx.AsyncClient) -> None:
    statuses = {(await client.get("/v1/memories?user_id=u1")).status_code for _ in range(30)}
    assert statuses == {200}


async def test_a_key_past_its_rate_waits_and_others_do_not(limited: FastAPI,
                                                           database: Database) -> None:
    first, _ = await project_key(database, "rated")
    second, _ = await project_key(database, "rated")
    other, _ = await project_key(database, "elsewhere")
    async with keyed(limited, first) as a, keyed(limited, second) as b, \
            keyed(limited, other) as c:
        assert [(await a.get("/v1/memories?user_id=u1")).status_code
                for _ in range(3)] == [200] * 3
        refused = await a.post("/v1/memories", content=b"{not json")  # never parsed
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"] == "rate_limited"
        assert "3 requests in 60 s for this key" in refused.json()["detail"]
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert refused.headers["x-request-id"] == refused.json()["request_id"]
        # The project's other key has its own rate, within the project's five (a refused
        # request counts against neither).
        assert [(await b.get("/v1/memories?user_id=u1")).status_code
                for _ in range(3)] == [200, 200, 429]
        assert "for this project" in (await b.get("/v1/memories?user_id=u1")).json()["detail"]
        assert (await c.get("/v1/memories?user_id=u1")).status_code == 200
    async with database.session_scope() as session:
        assert await session.scalar(sa.text("SELECT count(*) FROM memories")) == 0


async def test_a_project_past_its_llm_tokens_cannot_start_consolidations(
        limited: FastAPI, database: Database) -> None:
    key, project = await project_key(database, "thrifty")
    async with keyed(limited, key) as http:
        accepted = await http.post("/v1/memories", json={**ADD, "infer": True})
        assert accepted.status_code == 202, accepted.text
        async with database.session_scope() as session:  # what its LLM calls spent
            await session.execute(sa.update(Job).where(Job.project_id == project)
                                  .values(prompt_tokens=900, completion_tokens=100))
        refused = await http.post("/v1/memories", json={**ADD, "infer": True})
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"] == "quota_exceeded"
        assert "1000 of 1000" in refused.json()["detail"]
        assert 86000 < int(refused.headers["retry-after"]) <= 86400
        assert (await http.post("/v1/memories", json=ADD)).status_code == 201
    async with database.session_scope() as session:
        assert await session.scalar(sa.select(sa.func.count()).select_from(Job)) == 1


async def test_a_bad_key_is_refused_before_its_body_is_read(anonymous: httpx.AsyncClient) -> None:
    response = await anonymous.post("/v1/memories", content=b"{not json",
                                    headers={"Authorization": "Bearer anm_x_y"})
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "unauthorized"
