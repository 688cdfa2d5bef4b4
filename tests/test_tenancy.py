"""Two projects, the same user id in both: no endpoint ever lets one see or touch the other."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from app.config import Settings
from app.embeddings import SentenceTransformerEmbedder
from app.main import create_app
from app.store.db import Database

KeyFactory = Callable[..., Awaitable[str]]


@dataclass
class Tenant:
    client: httpx.AsyncClient
    ids: list[str]  # alice's memories, oldest first
    texts: list[str]


async def _add(client: httpx.AsyncClient, text: str, **fields: Any) -> str:
    response = await client.post("/v1/memories", json={
        "messages": [{"role": "user", "content": text}], "infer": False, **fields})
    assert response.status_code == 201, response.text
    result = response.json()["results"][0]
    assert result["event"] == "ADD"
    return str(result["id"])


@pytest.fixture
async def tenants(app: FastAPI, api_key_factory: KeyFactory) -> AsyncIterator[
        tuple[Tenant, Tenant]]:
    """Project A and project B, each with its own "alice" (same agent and run ids too)."""
    key_a, key_b = await api_key_factory("tenant-a"), await api_key_factory("tenant-b")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test",
                                 headers={"Authorization": f"Bearer {key_a}"}) as a, \
            httpx.AsyncClient(transport=transport, base_url="http://test",
                              headers={"Authorization": f"Bearer {key_b}"}) as b:
        texts_a = ["Alice's cat is named Luna.", "Alice works as an airline pilot."]
        texts_b = ["Alice's dog is named Rex.", "Alice works as a pastry chef."]
        ids_a = [await _add(a, text, user_id="alice", agent_id="helper", run_id="run-1",
                            metadata={"tag": "a-only"}) for text in texts_a]
        ids_b = [await _add(b, text, user_id="alice", agent_id="helper", run_id="run-1",
                            metadata={"tag": "b-only"}) for text in texts_b]
        yield Tenant(a, ids_a, texts_a), Tenant(b, ids_b, texts_b)


async def listed(client: httpx.AsyncClient, **params: Any) -> list[str]:
    response = await client.get("/v1/memories", params={"limit": 1000, **params})
    assert response.status_code == 200, response.text
    return [m["id"] for m in response.json()["results"]]


async def searched(client: httpx.AsyncClient, query: str, **fields: Any) -> list[str]:
    response = await client.post("/v1/memories/search",
                                 json={"query": query, "top_k": 1000, **fields})
    assert response.status_code == 200, response.text
    return [hit["id"] for hit in response.json()["results"]]


def assert_not_found(response: httpx.Response) -> None:
    assert response.status_code == 404, response.text
    body = response.json()
    assert set(body) == {"error", "detail", "request_id"}
    assert body["error"] == "not_found"


async def snapshot(tenant: Tenant) -> dict[str, Any]:
    """What the owner sees of its memories: records and histories."""
    state: dict[str, Any] = {}
    for memory_id in tenant.ids:
        record = await tenant.client.get(f"/v1/memories/{memory_id}")
        events = await tenant.client.get(f"/v1/memories/{memory_id}/history")
        state[memory_id] = (record.status_code, record.json(), events.json())
    return state


async def test_list_returns_only_own_memories(tenants: tuple[Tenant, Tenant]) -> None:
    for tenant in tenants:
        own = list(reversed(tenant.ids))
        assert await listed(tenant.client) == own
        assert await listed(tenant.client, user_id="alice") == own
        assert await listed(tenant.client, agent_id="helper") == own
        assert await listed(tenant.client, run_id="run-1") == own
        assert await listed(tenant.client, user_id="alice", agent_id="helper",
                            run_id="run-1") == own


@pytest.mark.parametrize("fields", [
    {},
    {"user_id": "alice"},
    {"agent_id": "helper", "run_id": "run-1"},
    {"filters": {"user_id": "alice"}},
    {"filters": {"user_id": {"in": ["alice", "bob"]}}},
    {"filters": {"OR": [{"metadata.tag": "a-only"}, {"metadata.tag": "b-only"}]}},
    {"filters": {"metadata": {"role": "user"}}},
    {"filters": {"NOT": {"user_id": "nobody"}}},
    {"threshold": -1.0},
])
async def test_search_returns_only_own_memories(tenants: tuple[Tenant, Tenant],
                                                fields: dict[str, Any]) -> None:
    for tenant in tenants:
        for query in ("What is Alice's pet called?", "What is Alice's job?"):
            assert sorted(await searched(tenant.client, query, **fields)) == sorted(tenant.ids)


async def test_search_naming_the_other_projects_data_finds_nothing(
        tenants: tuple[Tenant, Tenant]) -> None:
    a, b = tenants
    assert await searched(a.client, "Alice's dog Rex", filters={"metadata.tag": "b-only"}) == []
    assert await searched(b.client, "Alice's cat Luna", filters={"metadata.tag": "a-only"}) == []
    assert await searched(a.client, "pastry chef",
                          filters={"metadata.tag": {"in": ["b-only"]}}) == []
    # The other project's exact text is no way in either.
    top = await searched(a.client, b.texts[0], user_id="alice")
    assert top[0] == a.ids[0]
    assert set(top) == set(a.ids)
    assert await searched(a.client, b.texts[0], threshold=0.99) == []


async def test_other_projects_memory_is_not_found_on_every_endpoint(
        tenants: tuple[Tenant, Tenant]) -> None:
    a, b = tenants
    before = await snapshot(b), await snapshot(a)
    for theirs in b.ids:
        assert_not_found(await a.client.get(f"/v1/memories/{theirs}"))
        assert_not_found(await a.client.get(f"/v1/memories/{theirs}/history"))
        assert_not_found(await a.client.patch(f"/v1/memories/{theirs}",
                                              json={"text": "hijacked"}))
        assert_not_found(await a.client.patch(f"/v1/memories/{theirs}",
                                              json={"metadata": {"owner": "a"}}))
        assert_not_found(await a.client.delete(f"/v1/memories/{theirs}"))
    for theirs in a.ids:
        assert_not_found(await b.client.delete(f"/v1/memories/{theirs}"))
        assert_not_found(await b.client.patch(f"/v1/memories/{theirs}",
                                              json={"text": b.texts[0]}))
    assert (await snapshot(b), await snapshot(a)) == before
    assert "hijacked" not in str(await searched(b.client, "hijacked"))


async def test_deleted_memory_of_other_project_stays_hidden(
        tenants: tuple[Tenant, Tenant]) -> None:
    a, b = tenants
    assert (await b.client.delete(f"/v1/memories/{b.ids[0]}")).status_code == 200
    assert_not_found(await a.client.get(f"/v1/memories/{b.ids[0]}/history"))
    assert_not_found(await a.client.get(f"/v1/memories/{b.ids[0]}"))
    assert_not_found(await b.client.get(f"/v1/memories/{b.ids[0]}/history"))


async def test_delete_scope_stays_in_its_project(tenants: tuple[Tenant, Tenant]) -> None:
    a, b = tenants
    b_before = await snapshot(b)
    response = await a.client.delete("/v1/memories", params={"user_id": "alice"})
    assert response.status_code == 200, response.text
    assert response.json()["deleted"] == len(a.ids)
    assert await listed(a.client) == []
    assert await listed(b.client, user_id="alice") == list(reversed(b.ids))
    assert await snapshot(b) == b_before
    assert sorted(await searched(b.client, "Alice", user_id="alice")) == sorted(b.ids)

    for params in ({"agent_id": "helper"}, {"run_id": "run-1"}):
        assert (await a.client.delete("/v1/memories", params=params)).json()["deleted"] == 0
    assert await snapshot(b) == b_before


async def test_same_text_in_both_projects_is_two_memories(
        tenants: tuple[Tenant, Tenant]) -> None:
    a, b = tenants
    shared = "Alice is allergic to shellfish."
    mine = await _add(a.client, shared, user_id="alice")
    theirs = await _add(b.client, shared, user_id="alice")
    assert mine != theirs
    assert (await b.client.delete(f"/v1/memories/{theirs}")).status_code == 200
    assert (await a.client.get(f"/v1/memories/{mine}")).json()["memory"] == shared
    # A PATCH to text that exists only in the other project is no conflict.
    patched = await a.client.patch(f"/v1/memories/{a.ids[0]}", json={"text": b.texts[1]})
    assert patched.status_code == 200, patched.text
    assert (await b.client.get(f"/v1/memories/{b.ids[1]}")).json()["memory"] == b.texts[1]


async def test_idempotency_keys_are_per_project(tenants: tuple[Tenant, Tenant]) -> None:
    a, b = tenants
    responses = []
    for tenant, text in ((a, "Alice runs on weekends."), (b, "Alice swims on weekends.")):
        response = await tenant.client.post("/v1/memories", json={
            "messages": [{"role": "user", "content": text}], "user_id": "alice",
            "infer": False, "idempotency_key": "shared-key"})
        assert response.status_code == 201, response.text
        assert response.json()["results"][0]["event"] == "ADD"
        responses.append(response.json())
    assert responses[0]["results"][0]["id"] != responses[1]["results"][0]["id"]
    replay = await a.client.post("/v1/memories", json={
        "messages": [{"role": "user", "content": "Alice runs on weekends."}],
        "user_id": "alice", "infer": False, "idempotency_key": "shared-key"})
    assert replay.json() == responses[0]


async def project_ids(database: Database) -> list[str]:
    async with database.engine.connect() as connection:
        result = await connection.exec_driver_sql("SELECT id FROM projects ORDER BY name")
        return [str(row[0]) for row in result]


@pytest.mark.parametrize("field", ["project_id", "project", "project_name", "tenant_id"])
async def test_body_cannot_choose_the_project(tenants: tuple[Tenant, Tenant],
                                              database: Database, field: str) -> None:
    a, b = tenants
    other_project = (await project_ids(database))[1]  # tenant-b
    before = await snapshot(b), await listed(a.client)

    add = await a.client.post("/v1/memories", json={
        "messages": [{"role": "user", "content": "Planted into B?"}], "user_id": "alice",
        "infer": False, field: other_project})
    search = await a.client.post("/v1/memories/search",
                                 json={"query": "Alice", field: other_project})
    patch = await a.client.patch(f"/v1/memories/{a.ids[0]}",
                                 json={"text": "moved", field: other_project})
    patch_theirs = await a.client.patch(f"/v1/memories/{b.ids[0]}",
                                        json={"text": "moved", field: other_project})
    for response in (add, search, patch, patch_theirs):
        assert response.status_code == 422, response.text
        assert response.json()["error"] == "validation_error"
        assert field in response.json()["detail"]
    assert (await snapshot(b), await listed(a.client)) == before


async def test_filters_and_query_cannot_choose_the_project(
        tenants: tuple[Tenant, Tenant], database: Database) -> None:
    a, b = tenants
    other_project = (await project_ids(database))[1]
    response = await a.client.post("/v1/memories/search", json={
        "query": "Alice", "filters": {"project_id": other_project}})
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_filter"
    assert "project_id" in response.json()["detail"]
    # Unknown query parameters are ignored; the key alone picks the project.
    assert await listed(a.client, project_id=other_project) == list(reversed(a.ids))
    deleted = await a.client.delete("/v1/memories",
                                    params={"user_id": "alice", "project_id": other_project})
    assert deleted.json()["deleted"] == len(a.ids)
    assert await listed(b.client) == list(reversed(b.ids))


async def test_a_second_key_of_a_project_sees_that_project_only(
        tenants: tuple[Tenant, Tenant], app: FastAPI, api_key_factory: KeyFactory) -> None:
    a, b = tenants
    second_key_a = await api_key_factory("tenant-a")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://test",
                                 headers={"X-API-Key": second_key_a}) as again:
        assert await listed(again) == list(reversed(a.ids))
        assert_not_found(await again.get(f"/v1/memories/{b.ids[0]}"))


async def test_one_project_cannot_tell_what_another_searched(
        tenants: tuple[Tenant, Tenant], app: FastAPI) -> None:
    """The query-embedding cache is per project: B's first search of the words A just searched
    is embedded afresh (as slow as any new question), so its timing says nothing of A."""
    a, b = tenants
    queries = app.state.resources.queries
    words = f"what does alice keep in the shed {id(queries)}"
    for client, hit in ((a.client, False), (a.client, True), (b.client, False),
                        (b.client, True)):
        hits, misses = queries.hits, queries.misses
        response = await client.post("/v1/memories/search",
                                     json={"query": words, "user_id": "alice"})
        assert response.status_code == 200, response.text
        assert (queries.hits - hits, queries.misses - misses) == ((1, 0) if hit else (0, 1))


async def test_graph_searches_cannot_exhaust_the_pool(
        settings: Settings, embedder: SentenceTransformerEmbedder,
        api_key_factory: KeyFactory) -> None:
    """Each graph search holds a connection of the main pool and reads the graph through
    another. From one pool, a burst of them held every connection while each waited for a
    second: all stalled until the pool's timeout and answered 500, and every other project's
    requests with them. The graph store has a pool of its own, so the burst goes through."""
    tight = settings.model_copy(update={
        "db": settings.db.model_copy(update={"pool_size": 2, "max_overflow": 0,
                                             "pool_timeout_s": 20.0, "graph_pool_size": 2}),
        "data_dir": settings.data_dir / "tight-pool"})
    application = create_app(tight, embedder=embedder)
    key_a, key_b = await api_key_factory("burst-a"), await api_key_factory("burst-b")
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://test",
                                     headers={"Authorization": f"Bearer {key_a}"}) as a, \
                httpx.AsyncClient(transport=transport, base_url="http://test",
                                  headers={"Authorization": f"Bearer {key_b}"}) as b:
            await _add(a, "Melanie works at Siemens.", user_id="alice")
            burst = [a.post("/v1/memories/search", json={
                "query": f"Where does Melanie work? {i}", "user_id": "alice", "graph": True})
                for i in range(6)]
            answers = await asyncio.gather(*burst, b.get("/v1/memories"))
    assert [r.status_code for r in answers] == [200] * 7


async def test_no_connection_free_within_the_pool_timeout_is_503(
        settings: Settings, embedder: SentenceTransformerEmbedder,
        api_key_factory: KeyFactory) -> None:
    """Overload, not a bug: a request that finds every connection busy for the pool's
    timeout answers 503 with Retry-After in the one envelope (it was a bare 500, re-raised
    to the server, which then closed the connection under the client's next request), and
    the next one goes through once a connection is free."""
    tight = settings.model_copy(update={
        "db": settings.db.model_copy(update={"pool_size": 1, "max_overflow": 0,
                                             "pool_timeout_s": 0.5}),
        "data_dir": settings.data_dir / "one-connection"})
    application = create_app(tight, embedder=embedder)
    key = await api_key_factory("busy")
    async with application.router.lifespan_context(application):
        database: Database = application.state.resources.database
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=application),
                                     base_url="http://test",
                                     headers={"Authorization": f"Bearer {key}"}) as client:
            async with database.engine.connect() as held:  # the pool's only connection
                await held.exec_driver_sql("SELECT 1")
                busy = await client.get("/v1/memories", params={"user_id": "alice"})
            free = await client.get("/v1/memories", params={"user_id": "alice"})
    assert busy.status_code == 503, busy.text
    body = busy.json()
    assert body["error"] == "unavailable"
    assert busy.headers["retry-after"] == "1"
    assert busy.headers["x-request-id"] == body["request_id"]
    assert free.status_code == 200, free.text


async def test_a_busy_project_waits_for_its_own_slots_not_another_project(
        settings: Settings, embedder: SentenceTransformerEmbedder,
        api_key_factory: KeyFactory) -> None:
    """A project has ``api.project_concurrency`` requests served at once; its next one waits
    holding nothing, so another project's request is served meanwhile. Here A's update waits
    on a row lock, its one slot taken; A's list waits for that slot, B's list does not."""
    narrow = settings.model_copy(update={
        "api": settings.api.model_copy(update={"project_concurrency": 1}),
        "data_dir": settings.data_dir / "one-slot"})
    application = create_app(narrow, embedder=embedder)
    key_a, key_b = await api_key_factory("slots-a"), await api_key_factory("slots-b")
    async with application.router.lifespan_context(application):
        database: Database = application.state.resources.database
        slots = application.state.resources.gate.slots
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://test",
                                     headers={"Authorization": f"Bearer {key_a}"}) as a, \
                httpx.AsyncClient(transport=transport, base_url="http://test",
                                  headers={"Authorization": f"Bearer {key_b}"}) as b:
            project_a = uuid.UUID((await a.get("/v1/project")).json()["id"])
            memory_id = await _add(a, "Plays the cello.", user_id="alice")
            async with database.engine.connect() as holder:
                await holder.execute(sa.text("SELECT id FROM memories WHERE id = :id "
                                             "FOR UPDATE"), {"id": uuid.UUID(memory_id)})
                update = asyncio.create_task(a.patch(f"/v1/memories/{memory_id}",
                                                     json={"metadata": {"bow": "new"}}))
                await until(lambda: slots.busy(project_a) == 1)
                listing = asyncio.create_task(a.get("/v1/memories"))
                await until(lambda: slots.busy(project_a) == 2)
                other = await b.get("/v1/memories")
                assert other.status_code == 200, other.text
                await asyncio.sleep(0.2)
                assert not update.done()  # on the row lock, in A's only slot
                assert not listing.done()  # behind it
                await holder.rollback()
            assert (await update).status_code == 200
            assert (await listing).status_code == 200
    assert slots.busy(project_a) == 0


async def until(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    """Polls ``condition`` (a state of the server's, which offers nothing to wait on)."""
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 - nothing to await but the state itself
            await asyncio.sleep(0.01)
