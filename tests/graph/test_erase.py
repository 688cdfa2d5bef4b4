"""Deleted means erased: after an erase, every store is searched for the erased words and ids
— each Postgres table, the graph (Postgres tables or a real Neo4j), the search index in
memory and its snapshot on disk — and none holds them. Only the change log keeps the bare ids
(no words), which is how every server's index learns to drop them, until the sweep prunes it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from neo4j import AsyncGraphDatabase

from app.index.lexical import tokenize
from app.index.memory_index import MemoryIndex
from app.store.db import Database
from tests.conftest import project_key
from tests.consolidate.scripted_brain import Brain
from tests.graph.test_graph_pipeline import neo4j_app, three_sessions
from tests.neo4j_server import Neo4jEndpoint

__all__ = ["neo4j_app"]  # a fixture of this module too

# Said in this user's conversation only: a word no other test (no other row the session's
# index may still hold, as TRUNCATE logs no changes) has.
SECRET = f"zebra{uuid.uuid4().hex[:10]}"
STEM = tokenize(SECRET)[0].encode()  # how the lexical index holds the word
SAID = f"My locker code is {SECRET}, please keep it safe."


@pytest.fixture(params=["postgres", "neo4j"])
async def target(request: pytest.FixtureRequest, app: FastAPI, client: httpx.AsyncClient,
                 neo4j_app: FastAPI) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    """A client and its app, the graph in the store named by the parameter."""
    if request.param == "postgres":
        yield client, app
        return
    database: Database = neo4j_app.state.resources.database
    async with database.engine.begin() as connection:
        await connection.exec_driver_sql("TRUNCATE projects CASCADE")
    key, _ = await project_key(database, f"erase-{time.monotonic_ns()}")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=neo4j_app),
                                 base_url="http://test",
                                 headers={"Authorization": f"Bearer {key}"}) as http:
        yield http, neo4j_app


async def postgres_text(database: Database) -> str:
    """Every row of every table but the change log, as text."""
    async with database.engine.connect() as connection:
        tables = (await connection.exec_driver_sql(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename <> 'memory_changes'")).scalars().all()
        rows = []
        for table in tables:
            rows += (await connection.exec_driver_sql(
                f'SELECT t::text FROM "{table}" t')).scalars().all()
    return "\n".join(rows)


async def neo4j_text(endpoint: Neo4jEndpoint, project_id: str) -> str:
    """Every node and relationship of the project in Neo4j, as text."""
    url, user, password = endpoint
    async with AsyncGraphDatabase.driver(url, auth=(user, password)) as driver:
        nodes, _, _ = await driver.execute_query(
            "MATCH (n) WHERE n.project_id = $p RETURN properties(n) AS p", {"p": project_id})
        edges, _, _ = await driver.execute_query(
            "MATCH ()-[r]->() WHERE r.project_id = $p RETURN properties(r) AS p",
            {"p": project_id})
    return "\n".join(str(record["p"]) for record in [*nodes, *edges])


def snapshot_bytes(index: MemoryIndex) -> bytes:
    assert index.snapshot_dir is not None
    return b"".join(path.read_bytes() for path in Path(index.snapshot_dir).rglob("*")
                    if path.is_file())


async def ids_of(client: httpx.AsyncClient, user_id: str) -> list[str]:
    response = await client.get("/v1/memories", params={
        "user_id": user_id, "include_superseded": "true", "limit": 1000})
    return [m["id"] for m in response.json()["results"]]


async def test_erasing_a_user_leaves_nothing_of_them_in_any_store(
        target: tuple[httpx.AsyncClient, FastAPI], brain: Brain,
        neo4j_url: Neo4jEndpoint) -> None:
    client, app = target
    resources = app.state.resources
    index: MemoryIndex = resources.search_index.current
    # Facts, superseded facts, entities, relations, merges ("Mel"), jobs and their results.
    jobs = await three_sessions(client, brain)
    assert all(job["status"] == "SUCCEEDED" for job in jobs)
    said = await client.post("/v1/memories", json={
        "messages": [{"role": "user", "content": SAID},
                     {"role": "assistant", "content": "Noted, I will remember it."}],
        "user_id": "u1", "agent_id": "keeper", "infer": False, "idempotency_key": "locker-1"})
    assert said.status_code == 201, said.text
    other = await client.post("/v1/memories", json={
        "messages": [{"role": "user", "content": "Keeps bees in the garden."}],
        "user_id": "u2", "infer": False})
    assert other.status_code == 201, other.text
    erased_ids = await ids_of(client, "u1")
    entities = (await client.get("/v1/entities", params={"user_id": "u1"})).json()["results"]
    assert {"Melanie", "Siemens"} <= {e["name"] for e in entities}
    episodes = [job["episode_id"] for job in jobs]
    every_id = [*erased_ids, *episodes, *(job["id"] for job in jobs),
                *(e["id"] for e in entities)]
    await index.catch_up_fully()
    index.save()  # the words are on disk before the erase
    assert STEM in snapshot_bytes(index)
    project = (await client.get("/v1/project")).json()["id"]

    response = await client.delete("/v1/users/u1")
    assert response.status_code == 200, response.text
    body = response.json()
    receipt = body["erased"]
    assert (body["user_id"], body["deleted"]) == ("u1", len(erased_ids))
    assert receipt["memories"] == len(erased_ids)
    assert receipt["episodes"] == 4
    assert receipt["jobs"] == 3
    assert receipt["history_events"] >= len(erased_ids)
    assert receipt["graph_extractions"] == 3
    assert receipt["entity_merges"] >= 1
    assert receipt["idempotency_records"] == 1
    assert receipt["graph_entities"] == len(entities)
    assert receipt["graph_relations"] >= 4
    assert receipt["search_index"] == len(erased_ids)

    # Postgres: no table holds a word or an id of theirs.
    text = await postgres_text(resources.database)
    for word in (SECRET, "Melanie", "Siemens", "bakeries", "locker-1"):
        assert word not in text
    for found in every_id:
        assert found not in text
    assert "Keeps bees in the garden." in text
    # The graph store.
    if resources.settings.neo4j.url:
        graph = await neo4j_text(neo4j_url, project)
        assert "Melanie" not in graph
        assert "Siemens" not in graph
        assert not [found for found in every_id if found in graph]
    # The search index, in memory and, once rewritten, on disk.
    assert index.holding([uuid.UUID(found) for found in erased_ids]) == []
    deadline = time.monotonic() + 60
    while STEM in snapshot_bytes(index):
        assert time.monotonic() < deadline, "the snapshot still holds erased words"
        await asyncio.sleep(0.2)
    on_disk = snapshot_bytes(index)
    for found in erased_ids:
        assert found.encode() not in on_disk
        assert uuid.UUID(found).bytes not in on_disk
    # Reads: nothing, and the other user untouched.
    for memory_id in erased_ids[:3]:
        assert (await client.get(f"/v1/memories/{memory_id}")).status_code == 404
        assert (await client.get(f"/v1/memories/{memory_id}/history")).status_code == 404
    for user_id, left in (("u1", []), ("u2", ["Keeps bees in the garden."])):
        hits = await client.post("/v1/memories/search", json={"query": "locker code Melanie",
                                                      "user_id": user_id, "top_k": 50})
        assert hits.status_code == 200, hits.text
        assert [h["memory"] for h in hits.json()["results"]] == left
    # The idempotency key is free again: the same request is a new one.
    again = await client.post("/v1/memories", json={
        "messages": [{"role": "user", "content": "A new start."}], "user_id": "u1",
        "infer": False, "idempotency_key": "locker-1"})
    assert again.status_code == 201, again.text


async def test_erasing_a_message_removes_it_from_its_conversation(
        client: httpx.AsyncClient, database: Database) -> None:
    said = await client.post("/v1/memories", json={
        "messages": [{"role": "user", "content": SAID},
                     {"role": "assistant", "content": "Noted, I will remember it."}],
        "user_id": "u1", "infer": False, "idempotency_key": "locker-2"})
    assert said.status_code == 201, said.text
    secret, reply = (r["id"] for r in said.json()["results"])
    assert SECRET in await postgres_text(database)

    response = await client.delete(f"/v1/memories/{secret}")
    assert response.status_code == 200, response.text
    receipt: dict[str, Any] = response.json()["erased"]
    assert receipt["messages_redacted"] == 1  # the conversation as sent
    assert receipt["contexts_rewritten"] == 1  # the reply's search context quoted it
    assert receipt["idempotency_records"] == 1  # the stored answer listed it
    assert SECRET not in await postgres_text(database)
    assert secret not in await postgres_text(database)
    assert (await client.get(f"/v1/memories/{reply}")).status_code == 200


async def test_erasing_a_fact_removes_it_from_jobs_and_the_graph_log(
        client: httpx.AsyncClient, database: Database, brain: Brain) -> None:
    _, second, _ = await three_sessions(client, brain)
    works = next(r for r in second["results"] if r["memory"] == "Melanie works at Siemens")

    response = await client.delete(f"/v1/memories/{works['id']}")
    assert response.status_code == 200, response.text
    receipt = response.json()["erased"]
    assert receipt["job_results_rewritten"] == 1
    assert receipt["graph_extractions"] == 1
    assert receipt["graph_relations"] == 1
    assert receipt["graph_entities"] == 1
    text = await postgres_text(database)
    assert "Melanie works at Siemens" not in text
    assert works["id"] not in text
    job = (await client.get(f"/v1/jobs/{second['id']}")).json()
    assert works["id"] not in {r["id"] for r in job["results"]}
    names = {e["name"] for e in (await client.get("/v1/entities",
                                                   params={"user_id": "u1"})).json()["results"]}
    assert "Siemens" not in names
    assert "Melanie" in names
