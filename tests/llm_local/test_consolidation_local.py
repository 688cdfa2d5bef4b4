"""Consolidation end to end on the bundled model: no scripted replies, the real llama.cpp server
the API starts itself on the first job. Asserts what a memory service must get right on a
plain conversation (the facts are found by the questions that ask for them, cited to their
messages, and the people and places are in the graph), never the model's wording."""

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
DANA = [
    {"role": "user", "content": "Hi! I'm Dana. I just moved from Lisbon to Oslo for a job at "
                                "Equinor."},
    {"role": "assistant", "content": "Welcome to Oslo, Dana! How is the new job?"},
    {"role": "user", "content": "Great so far. My sister Ines still lives in Lisbon. I'm "
                                "allergic to peanuts, by the way."},
]
# (question, words one of the top facts must hold: any wording of the fact will do)
DANA_QUESTIONS = [
    ("Where does Dana live now?", ("oslo",)),
    ("Where does Dana work?", ("equinor",)),
    ("Where does Dana's sister Ines live?", ("ines", "lisbon")),
    ("What is Dana allergic to?", ("peanut",)),
]
DANA_ENTITIES = {"dana", "oslo", "lisbon", "equinor", "ines"}
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
        # The bundled model, started on the first job, as configured by default.
        llm=LLMSettings(base_url=None),
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
            "wait": True,
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


async def dana_client(app: FastAPI) -> httpx.AsyncClient:
    key = await new_key(app.state.resources.database)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test",
                             headers={"Authorization": f"Bearer {key}"},
                             timeout=JOB_DEADLINE_S + 30)


async def test_dana_is_remembered(local_app: FastAPI) -> None:
    """The README's own path on the default model: three messages in, the facts they state
    out, each found by the question that asks for it, and the graph of who and where."""
    async with await dana_client(local_app) as client:
        response = await client.post("/v1/memories", json={
            "messages": DANA, "user_id": "dana", "observed_at": OBSERVED_AT, "wait": True})
        job = await finished_job(client, response)
        assert job["status"] == "SUCCEEDED", job["error"]
        assert job["usage"]["llm_calls"] <= 3
        assert job["usage"]["truncated_replies"] == 0
        facts = [result for result in job["results"] if result["event"] == "ADD"]
        assert facts, job["results"]

        for question, words in DANA_QUESTIONS:
            found = await client.post("/v1/memories/search", json={
                "query": question, "user_id": "dana", "top_k": 3,
                "filters": {"kind": "fact"}})
            assert found.status_code == 200, found.text
            texts = [hit["memory"].lower() for hit in found.json()["results"]]
            assert any(all(word in text for word in words) for text in texts), (question,
                                                                                 texts)
        for result in facts:  # each fact cites the message(s) it came from
            detail = (await client.get(f"/v1/memories/{result['id']}")).json()
            [source] = detail["sources"]
            cited = " ".join(m["content"].lower() for m in source["messages"])
            assert source["message_indices"], detail
            assert set(source["message_indices"]) <= {0, 1, 2}
            assert any(word in cited for word in _words(result["memory"])), (result, cited)

        entities = (await client.get("/v1/entities", params={"user_id": "dana",
                                                             "limit": 100})).json()["results"]
        names = {entity["name"].lower() for entity in entities}
        assert names >= DANA_ENTITIES, names
        relations = (await client.get("/v1/relations", params={"user_id": "dana"})).json()
        assert relations["results"], "the graph has no relation"


async def test_a_runaway_is_cut_asked_once_more_and_the_episode_stays(
        local_app: FastAPI, database_factory: Callable[[str], Awaitable[str]],
        embedder: SentenceTransformerEmbedder, llm_data_dir: Path) -> None:
    """A model cut at its token limit is asked again once, shorter, not three times; when
    that fails too the window is split and its first half asked alone (once more, and once
    again); when the one message left runs away as well the job fails, and the conversation
    is still searchable by its messages and can be retried (here by an API with a sane
    limit, on the same database)."""
    settings = local_app.state.resources.settings
    cramped = create_app(settings.model_copy(update={
        "llm": LLMSettings(base_url=None, max_tokens=24)}), embedder=embedder)
    async with cramped.router.lifespan_context(cramped), await dana_client(cramped) as client:
        response = await client.post("/v1/memories", json={
            "messages": DANA, "user_id": "dana", "observed_at": OBSERVED_AT, "wait": True})
        job = await finished_job(client, response)
        assert job["status"] == "FAILED"
        assert job["error"]["code"] == "llm_bad_output"
        # The three messages and their re-ask, then the first message alone and its re-ask.
        assert job["usage"]["truncated_replies"] == 4
        assert job["usage"]["llm_calls"] == 4

        found = await client.post("/v1/memories/search", json={
            "query": "What is Dana allergic to?", "user_id": "dana", "top_k": 3})
        hits = found.json()["results"]
        assert hits[0]["kind"] == "message"
        assert "peanuts" in hits[0]["memory"]
        headers = client.headers
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=local_app),
                                 base_url="http://test", headers=headers,
                                 timeout=JOB_DEADLINE_S + 30) as client:
        retried = await client.post(f"/v1/jobs/{job['id']}/retry")
        assert retried.status_code == 202, retried.text
        job = await finished_job(client, retried)
        assert job["status"] == "SUCCEEDED", job["error"]
        assert job["results"]


def _words(text: str) -> list[str]:
    return [word for word in text.lower().replace(".", " ").replace("'s", " ").split()
            if len(word) > 3]
