"""Switching the embedding model while the service runs (``anamnesis reindex --model``): two
API processes on one database (in-process index, Postgres search) answer every search
throughout, move to the new model by themselves, and at the end no vector of the old model is
left in the memories or the graph. A process that has not moved yet has its write refused
with a retryable 503, and moves as soon as one of its searches meets the new vectors."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from fastapi import FastAPI

from app.cli import _switch_model
from app.config import DatabaseSettings, SearchSettings, Settings
from app.embeddings import MPNET, SentenceTransformerEmbedder
from app.main import create_app
from app.store.graph.base import EntityRecord
from tests.conftest import plain_dsn, project_key

SAID = ["My dog Rex loves swimming in the lake.", "I work as a nurse at the city hospital.",
        "My sister Ines lives in Lisbon.", "I am allergic to peanuts.",
        "We are planning a trip to Japan in April.", "I play the cello in a quartet."]
ASKED = {"which pet likes water?": SAID[0], "what is my job?": SAID[1],
         "where does my sister live?": SAID[2], "food allergy": SAID[3]}


async def client_for(stack: AsyncExitStack, app: FastAPI, key: str) -> httpx.AsyncClient:
    if not hasattr(app.state, "resources"):
        await stack.enter_async_context(app.router.lifespan_context(app))
    return await stack.enter_async_context(httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test",
        headers={"Authorization": f"Bearer {key}"}, timeout=120))


async def top(client: httpx.AsyncClient, query: str) -> tuple[int, str | None]:
    response = await client.post("/v1/memories/search",
                                 json={"query": query, "user_id": "u1", "top_k": 1})
    hits = response.json().get("results") if response.status_code == 200 else None
    return response.status_code, hits[0]["memory"] if hits else None


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.2)


async def test_switching_the_model_serves_searches_throughout(
        database_factory: Callable[[str], Awaitable[str]], tmp_path: Path,
        embedder: SentenceTransformerEmbedder) -> None:
    url = await database_factory("anamnesis_reembed")
    base = Settings(data_dir=tmp_path, db=DatabaseSettings(url=url))
    indexed = base.model_copy(update={"search": SearchSettings(index="memory")})
    direct = base.model_copy(update={"search": SearchSettings(index="postgres")})
    async with AsyncExitStack() as stack:
        apps = {name: create_app(config, embedder=embedder)
                for name, config in (("indexed", indexed), ("direct", direct), ("lazy", direct))}
        await stack.enter_async_context(apps["indexed"].router.lifespan_context(apps["indexed"]))
        first = apps["indexed"].state.resources
        key, project = await project_key(first.database, "switch")
        clients = {name: await client_for(stack, app, key) for name, app in apps.items()}
        # This one does not poll: it moves only when a search of its own meets new vectors.
        await apps["lazy"].state.resources.watch.aclose()
        added = await clients["indexed"].post("/v1/memories", json={
            "messages": [{"role": "user", "content": text} for text in SAID],
            "user_id": "u1", "infer": False})
        assert added.status_code == 201, added.text
        await first.graph.put_entities([EntityRecord(
            id=uuid.uuid4(), project_id=project, user_id="u1", agent_id=None, run_id=None,
            name="Ines", type="person", summary="", embedding=(await embedder.embed(["Ines"]))[0],
            created_at=datetime.now(UTC), updated_at=datetime.now(UTC),
            embedding_model=embedder.model_name)])
        for client in clients.values():
            for query, expected in ASKED.items():
                assert await top(client, query) == (200, expected)

        answers: list[tuple[str, int, str | None, str | None]] = []
        switching = True

        async def keep_searching() -> None:
            while switching:
                for name in ("indexed", "direct"):
                    for query, expected in ASKED.items():
                        status, memory = await top(clients[name], query)
                        answers.append((name, status, memory, expected))
                await asyncio.sleep(0.05)

        searching = asyncio.create_task(keep_searching())
        assert await _switch_model(indexed, MPNET) == 0
        await eventually(lambda: ready_model(clients["indexed"], MPNET))
        await eventually(lambda: ready_model(clients["direct"], MPNET))
        switching = False
        await searching

        assert len(answers) >= 2 * len(ASKED)
        assert [a for a in answers if a[1] != 200] == []
        assert [a for a in answers if a[2] != a[3]] == []
        for name in ("indexed", "direct"):
            for query, expected in ASKED.items():
                assert await top(clients[name], query) == (200, expected)

        # The lazy process still embeds with the old model: its write is refused...
        refused = await clients["lazy"].post("/v1/memories", json={
            "messages": [{"role": "user", "content": "I moved to Oslo."}], "user_id": "u1",
            "infer": False})
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"] == "embedding_model_switching"
        assert refused.headers["Retry-After"] == "1"
        # ...its search meets the new vectors, moves it, and is answered...
        assert await top(clients["lazy"], "which pet likes water?") == (200, SAID[0])
        assert await ready_model(clients["lazy"], MPNET)
        # ...and the write then goes through, with a vector of the new model.
        again = await clients["lazy"].post("/v1/memories", json={
            "messages": [{"role": "user", "content": "I moved to Oslo."}], "user_id": "u1",
            "infer": False})
        assert again.status_code == 201, again.text

    connection = await asyncpg.connect(plain_dsn(url))
    try:
        models = await connection.fetch(
            "SELECT embedding_model, vector_dims(embedding) AS size, count(*) FROM memories "
            "GROUP BY 1, 2")
        assert [(m["embedding_model"], m["size"]) for m in models] == [(MPNET, 768)]
        assert sum(m["count"] for m in models) == len(SAID) + 1
        assert await connection.fetchval("SELECT count(*) FROM memory_vectors_next") == 0
        assert await connection.fetch(
            "SELECT embedding_model, vector_dims(embedding) FROM entities") == [(MPNET, 768)]
        assert await connection.fetchrow(
            "SELECT model, dimension, generation FROM embedding_space") == (MPNET, 768, 1)
    finally:
        await connection.close()


async def ready_model(client: httpx.AsyncClient, model: str) -> bool:
    ready: dict[str, Any] = (await client.get("/ready")).json()
    return ready.get("embedding_model") == model

