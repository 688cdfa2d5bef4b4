"""Consolidation end to end on the bundled model: no scripted replies, the real llama.cpp server
the API starts itself on the first job. Asserts structure, never the small model's wording."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.config import (
    ConsolidationSettings,
    DatabaseSettings,
    LLMSettings,
    Settings,
)
from app.embeddings import SentenceTransformerEmbedder
from app.main import create_app
from app.store.db import Database, migrate
from tests.conftest import project_key

# A database of its own: the session's scripted-LLM app (other test folders) sweeps stale
# jobs of its database with second-long leases and would take this slow job over.
DATABASE = "anamnesis_llm_local"
CONVERSATION = [
    {"role": "user", "content": "Hi! Can you help me plan meals for next week?"},
    {"role": "assistant", "content": "Of course. Tell me a little about yourself first."},
    {"role": "user", "content": "I am a vegetarian and I live in Lisbon."},
    {"role": "assistant", "content": "Great, I will suggest vegetarian dishes from Lisbon."},
]
# Without it the 0.5B model tends to repeat one sentence inside a JSON string until
# max_tokens; per-call instructions are part of the API, so the test uses them.
INSTRUCTIONS = "Write each fact once, as one short sentence of at most 12 words."
OBSERVED_AT = "2025-03-14T18:30:00+00:00"
JOB_DEADLINE_S = 240.0


@pytest.fixture(scope="module")
async def local_app(
    database_factory: Callable[[str], Awaitable[str]],
    embedder: SentenceTransformerEmbedder,
    llm_data_dir: Path,
) -> AsyncIterator[FastAPI]:
    url = await database_factory(DATABASE)
    await asyncio.to_thread(migrate, url, embedder.dimension)
    settings = Settings(
        data_dir=llm_data_dir,
        db=DatabaseSettings(url=url, migrate_on_start=False),
        # The bundled model, started on the first job. Should it still run away, a reply cut
        # at 256 tokens costs ~25 s on two cores instead of two minutes at the default 1024.
        llm=LLMSettings(base_url=None, max_tokens=256),
        # Hold the request as long as a slow, busy two-core machine may need.
        consolidation=ConsolidationSettings(max_wait_s=JOB_DEADLINE_S),
    )
    application = create_app(settings, embedder=embedder)
    async with application.router.lifespan_context(application):
        yield application


async def new_key(database: Database) -> str:
    return (await project_key(database, f"llm-local-{uuid.uuid4().hex[:8]}"))[0]


async def finished_job(client: httpx.AsyncClient, response: httpx.Response) -> dict[str, Any]:
    """The job of an add with ``wait``; polled further if the wait ran out first."""
    assert response.status_code in (200, 202), response.text
    job: dict[str, Any] = response.json()
    job_id = job.get("id") or job["job_id"]
    deadline = time.monotonic() + JOB_DEADLINE_S
    while job.get("status") not in ("SUCCEEDED", "FAILED"):
        assert time.monotonic() < deadline, f"job {job_id} still {job.get('status')}"
        await asyncio.sleep(1)
        polled = await client.get(f"/v1/jobs/{job_id}")
        assert polled.status_code == 200, polled.text
        job = polled.json()
    return job


async def test_conversation_consolidates_into_sourced_memories(local_app: FastAPI) -> None:
    key = await new_key(local_app.state.resources.database)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=local_app), base_url="http://test",
        headers={"Authorization": f"Bearer {key}"}, timeout=JOB_DEADLINE_S + 30,
    ) as client:
        response = await client.post("/v1/memories", json={
            "messages": CONVERSATION, "user_id": "ana", "observed_at": OBSERVED_AT,
            "instructions": INSTRUCTIONS, "wait": True,
        })
        job = await finished_job(client, response)

        assert job["status"] == "SUCCEEDED", job["error"]
        assert job["error"] is None
        usage = job["usage"]
        assert usage["prompt_tokens"] > 0
        assert usage["completion_tokens"] > 0
        assert usage["llm_calls"] >= 1
        assert usage["model"]
        # A fresh user has no memories to update, confirm or supersede: every fact is new.
        added = [result for result in job["results"] if result["event"] == "ADD"]
        assert added, job["results"]
        assert {result["event"] for result in job["results"]} == {"ADD"}

        for result in added:
            assert result["memory"].strip()
            detail = await client.get(f"/v1/memories/{result['id']}")
            assert detail.status_code == 200, detail.text
            memory = detail.json()
            assert memory["memory"] == result["memory"]
            assert memory["user_id"] == "ana"
            sources = memory["sources"]
            assert [source["episode_id"] for source in sources] == [job["episode_id"]]
            source = sources[0]
            assert source["observed_at"].startswith("2025-03-14T18:30:00")
            indices = source["message_indices"]
            assert indices
            assert indices == sorted(set(indices))
            assert all(0 <= index < len(CONVERSATION) for index in indices)
            assert [message["index"] for message in source["messages"]] == indices
            for message in source["messages"]:
                posted = CONVERSATION[message["index"]]
                assert (message["role"], message["content"]) == (posted["role"],
                                                                 posted["content"])

        # Consolidated memories are searchable as soon as the job says so.
        found = await client.post("/v1/memories/search", json={
            "query": added[0]["memory"], "user_id": "ana", "top_k": 10})
        assert found.status_code == 200, found.text
        assert added[0]["id"] in [hit["id"] for hit in found.json()["results"]]
