"""Consolidation feeds the graph: a three-session conversation, scripted LLM replies, read
back through the API, with the graph in Postgres (the session app) and in a real Neo4j (an
app of its own, on a database of its own, so the session app's job sweeper never runs its
jobs against the other store)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from app.config import Neo4jSettings, Settings
from app.consolidate.graph import entity_id
from app.consolidate.replay import rebuild_graph
from app.domain import ProjectScope
from app.embeddings import SentenceTransformerEmbedder
from app.jobs import runner
from app.main import create_app
from app.store.db import Database, migrate
from tests.conftest import project_key
from tests.consolidate.scripted_brain import Brain, FactSpec, ends
from tests.consolidate.test_consolidation_api import consolidate
from tests.neo4j_server import Neo4jEndpoint


@pytest.fixture(scope="module")
async def neo4j_app(database_factory: Callable[[str], Awaitable[str]], settings: Settings,
                    embedder: SentenceTransformerEmbedder,
                    neo4j_url: Neo4jEndpoint) -> AsyncIterator[FastAPI]:
    url = await database_factory("anamnesis_test_neo4j_graph")
    await asyncio.to_thread(migrate, url, embedder.dimension)
    url_, user, password = neo4j_url
    configured = settings.model_copy(update={
        "db": settings.db.model_copy(update={"url": url}),
        "neo4j": Neo4jSettings(url=url_, user=user, password=SecretStr(password)),
    })
    application = create_app(configured, embedder=embedder)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(params=["postgres", "neo4j"])
async def graph_client(request: pytest.FixtureRequest, client: httpx.AsyncClient,
                       neo4j_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An API client whose graph lives in the store named by the parameter."""
    if request.param == "postgres":
        yield client
        return
    app = neo4j_app
    database: Database = app.state.resources.database
    async with database.engine.begin() as connection:
        await connection.exec_driver_sql("TRUNCATE projects CASCADE")
    key, _ = await project_key(database, f"neo4j-{time.monotonic_ns()}")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test",
                                 headers={"Authorization": f"Bearer {key}"}) as http:
        yield http

GRAPH: dict[str, dict[str, Any]] = {
    "User's sister is Melanie": {
        "entities": [{"name": "User", "type": "person", "summary": "the user"},
                     {"name": "Melanie", "type": "person", "summary": "the user's sister"}],
        "relations": [{"source": "Melanie", "relation": "sister of", "target": "User",
                       "exclusive": False}]},
    "Melanie lives in Paris": {
        "entities": [{"name": "Melanie", "type": "person", "summary": "the user's sister"},
                     {"name": "Paris", "type": "place", "summary": "a city"}],
        "relations": [{"source": "Melanie", "relation": "lives_in", "target": "Paris",
                       "exclusive": True}]},
    "Melanie lives in Berlin": {
        "entities": [{"name": "Mel", "type": "person", "summary": "the user's sister"},
                     {"name": "Berlin", "type": "place", "summary": "a city"}],
        "relations": [{"source": "Mel", "relation": "lives_in", "target": "Berlin",
                       "exclusive": False}]},
    "Melanie works at Siemens": {
        "entities": [{"name": "Mel", "type": "person", "summary": "the user's sister"},
                     {"name": "Siemens", "type": "organization", "summary": "a company"}],
        "relations": [{"source": "Mel", "relation": "works_at", "target": "Siemens",
                       "exclusive": True}]},
    "User likes the bakeries of Paris": {
        "entities": [{"name": "User", "type": "person", "summary": "the user"},
                     {"name": "paris", "type": "place", "summary": "the French capital"}],
        "relations": [{"source": "User", "relation": "likes", "target": "paris",
                       "exclusive": False}]},
}


def graph_of(facts: list[str]) -> dict[str, Any]:
    """Entities and relations of the numbered facts, as a model would list them."""
    entities: dict[str, dict[str, Any]] = {}
    relations: list[dict[str, Any]] = []
    for index, fact in enumerate(facts):
        known = GRAPH.get(fact, {"entities": [], "relations": []})
        for entity in known["entities"]:
            entities.setdefault(entity["name"], entity)
        relations += [{**relation, "fact": index, "valid_from": None}
                      for relation in known["relations"]]
    return {"entities": list(entities.values()), "relations": relations}


async def three_sessions(client: httpx.AsyncClient,
                         brain: Brain) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    brain.facts = {
        "My sister Melanie lives in Paris since June 2023.": [
            FactSpec("User's sister is Melanie"),
            FactSpec("Melanie lives in Paris", "since June 2023")],
        "Mel moved to Berlin on 20 February, she works at Siemens now.": [
            FactSpec("Melanie lives in Berlin", "on 20 February"),
            FactSpec("Melanie works at Siemens")],
        "I miss the bakeries of Paris.": [FactSpec("User likes the bakeries of Paris")],
    }
    brain.still_true = ends(("Melanie lives in Berlin", "Melanie lives in Paris"))
    brain.graph = graph_of
    first = await consolidate(client, "My sister Melanie lives in Paris since June 2023.",
                              observed_at="2024-01-10T10:00:00Z")
    second = await consolidate(client,
                               "Mel moved to Berlin on 20 February, she works at Siemens now.",
                               observed_at="2024-03-01T10:00:00Z")
    third = await consolidate(client, "I miss the bakeries of Paris.",
                              observed_at="2024-05-01T10:00:00Z")
    return first, second, third


async def test_three_sessions_become_a_time_aware_graph(graph_client: httpx.AsyncClient,
                                                        brain: Brain) -> None:
    client = graph_client
    first, second, third = await three_sessions(client, brain)
    for job in (first, second, third):
        assert job["status"] == "SUCCEEDED", job
    assert brain.graph_calls == 3

    listed = (await client.get("/v1/entities", params={"user_id": "u1"})).json()
    by_name = {e["name"]: e for e in listed["results"]}
    assert set(by_name) == {"User", "Melanie", "Paris", "Berlin", "Siemens"}
    assert by_name["Siemens"]["type"] == "organization"
    melanie = by_name["Melanie"]["id"]

    def triples(relations: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
        names = {e["id"]: e["name"] for e in listed["results"]}
        return {(names[r["source_id"]], r["type"], names[r["target_id"]]) for r in relations}

    current = (await client.get("/v1/relations", params={"user_id": "u1"})).json()["results"]
    assert triples(current) == {("Melanie", "sister_of", "User"),
                                ("Melanie", "lives_in", "Berlin"),
                                ("Melanie", "works_at", "Siemens"), ("User", "likes", "Paris")}
    then = (await client.get("/v1/relations", params={
        "user_id": "u1", "as_of": "2024-01-15T00:00:00Z"})).json()["results"]
    assert ("Melanie", "lives_in", "Paris") in triples(then)
    assert ("Melanie", "lives_in", "Berlin") not in triples(then)
    everything = (await client.get("/v1/relations", params={
        "user_id": "u1", "include_invalid": "true"})).json()["results"]
    [paris] = [r for r in everything if r["type"] == "lives_in" and r["target_name"] == "Paris"]
    assert paris["invalid_at"] == "2024-02-20T00:00:00Z"  # when Berlin became true

    detail = (await client.get(f"/v1/entities/{melanie}")).json()
    assert [a["alias"] for a in detail["aliases"]] == ["Mel"]
    assert {m["memory"] for m in detail["memories"]} == {
        "User's sister is Melanie", "Melanie lives in Berlin", "Melanie works at Siemens"}
    assert {r["type"] for r in detail["relations"]} == {"sister_of", "lives_in", "works_at"}
    berlin_fact = next(r for r in detail["relations"] if r["type"] == "lives_in")
    assert berlin_fact["source_name"] == "Mel"  # as the second session named her
    assert berlin_fact["episode_id"] == second["episode_id"]

    hops = (await client.get(f"/v1/entities/{by_name['Siemens']['id']}/neighbors",
                             params={"depth": 2})).json()["results"]
    assert {(n["entity"]["name"], n["distance"]) for n in hops} == {
        ("Melanie", 1), ("User", 2), ("Berlin", 2)}

    # Deleting a memory detaches it; deleting an entity keeps the memories.
    works = next(r for r in second["results"] if r["memory"] == "Melanie works at Siemens")
    assert (await client.delete(f"/v1/memories/{works['id']}")).status_code == 200
    current = (await client.get("/v1/relations", params={"user_id": "u1"})).json()["results"]
    assert ("Melanie", "works_at", "Siemens") not in triples(current)
    berlin = by_name["Berlin"]["id"]
    assert (await client.delete(f"/v1/entities/{berlin}")).status_code == 200
    assert (await client.get(f"/v1/entities/{berlin}")).status_code == 404
    assert (await client.delete(f"/v1/entities/{berlin}")).status_code == 404
    memories = (await client.get("/v1/memories", params={"user_id": "u1"})).json()["results"]
    assert "Melanie lives in Berlin" in {m["memory"] for m in memories}

    # Deleting the scope removes its graph.
    assert (await client.delete("/v1/memories", params={"user_id": "u1"})).status_code == 200
    assert (await client.get("/v1/entities", params={"user_id": "u1"})).json()["results"] == []


async def test_graph_failure_keeps_the_memories(client: httpx.AsyncClient,
                                                brain: Brain) -> None:
    brain.facts = {"I knit scarves.": ["User knits scarves"]}
    brain.graph = lambda facts: {"entities": "not a list"}  # type: ignore[assignment,misc]
    job = await consolidate(client, "I knit scarves.")
    assert job["status"] == "SUCCEEDED"
    assert [r["memory"] for r in job["results"]] == ["User knits scarves"]
    assert (await client.get("/v1/entities")).json()["results"] == []


async def test_entities_of_another_project_are_not_found(client: httpx.AsyncClient,
                                                         brain: Brain,
                                                         api_key_factory: Any,
                                                         app: Any) -> None:
    brain.facts = {"Ana is my friend.": ["Ana is User's friend"]}
    brain.graph = lambda facts: {"entities": [{"name": "Ana", "type": "person", "summary": ""}],
                                 "relations": []}
    job = await consolidate(client, "Ana is my friend.")
    listed = (await client.get("/v1/entities")).json()["results"]
    assert len(listed) == 1, (job, listed, brain.graph_calls)
    [ana] = listed
    stranger = await api_key_factory()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test",
                                 headers={"Authorization": f"Bearer {stranger}"}) as other:
        assert (await other.get("/v1/entities")).json()["results"] == []
        for response in (await other.get(f"/v1/entities/{ana['id']}"),
                         await other.get(f"/v1/entities/{ana['id']}/neighbors"),
                         await other.delete(f"/v1/entities/{ana['id']}")):
            assert response.status_code == 404
    assert (await client.get(f"/v1/entities/{ana['id']}")).status_code == 200


async def test_graph_expansion_answers_a_multi_hop_question(graph_client: httpx.AsyncClient,
                                                            brain: Brain) -> None:
    """The answer mentions Siemens, the question names Melanie: one relation apart."""
    client = graph_client
    facts = {
        "Melanie works at Siemens": [("Melanie", "person"), ("Siemens", "organization")],
        "Siemens builds trains and turbines": [("Siemens", "organization")],
        "Melanie likes painting landscapes": [("Melanie", "person")],
        "Melanie has a cat called Miso": [("Melanie", "person")],
        "Melanie runs every morning": [("Melanie", "person")],
    }
    brain.facts = {f"{text}.": [text] for text in facts}

    def graph(numbered: list[str]) -> dict[str, Any]:
        names = {name: {"name": name, "type": kind, "summary": ""}
                 for fact in numbered for name, kind in facts[fact]}
        relations = [{"source": "Melanie", "relation": "works_at", "target": "Siemens",
                      "fact": i, "valid_from": None, "exclusive": True}
                     for i, fact in enumerate(numbered) if fact == "Melanie works at Siemens"]
        return {"entities": list(names.values()), "relations": relations}

    brain.graph = graph
    for text in facts:
        assert (await consolidate(client, f"{text}."))["status"] == "SUCCEEDED"

    question = {"query": "What does Melanie's employer make?", "user_id": "u1", "top_k": 3}
    plain = (await client.post("/v1/memories/search", json=question)).json()
    assert "Siemens builds trains and turbines" not in {h["memory"] for h in plain["results"]}
    expanded = (await client.post("/v1/memories/search", json={**question, "graph": True,
                                                                "include": ["relations"]})).json()
    memories = [h["memory"] for h in expanded["results"]]
    assert "Siemens builds trains and turbines" in memories
    assert len(memories) == 3
    assert [(r["source_name"], r["type"], r["target_name"]) for r in expanded["relations"]] == [
        ("Melanie", "works_at", "Siemens")]
    # The graph never lets through what the filters refuse.
    elsewhere = (await client.post("/v1/memories/search", json={
        **question, "user_id": "u2", "graph": True})).json()
    assert elsewhere["results"] == []


async def snapshot(client: httpx.AsyncClient) -> dict[str, Any]:
    """The whole graph as the API shows it."""
    entities = (await client.get("/v1/entities")).json()["results"]
    details = [(await client.get(f"/v1/entities/{e['id']}")).json() for e in entities]
    relations = (await client.get("/v1/relations", params={"include_invalid": "true"})).json()
    return {"entities": entities, "details": [
        {**d, "aliases": [(a["alias"], a["reason"], a["score"]) for a in d["aliases"]]}
        for d in details], "relations": relations["results"]}


async def test_rebuild_equals_the_original(graph_client: httpx.AsyncClient,
                                           brain: Brain) -> None:
    """The graph is a projection: made again from Postgres it is the same graph, deletions
    through the API included."""
    client = graph_client
    _, second, _ = await three_sessions(client, brain)
    works = next(r for r in second["results"] if r["memory"] == "Melanie works at Siemens")
    assert (await client.delete(f"/v1/memories/{works['id']}")).status_code == 200
    berlin = next(e for e in (await client.get("/v1/entities")).json()["results"]
                  if e["name"] == "Berlin")
    assert (await client.delete(f"/v1/entities/{berlin['id']}")).status_code == 200
    before = await snapshot(client)
    # User, Melanie, Paris; Siemens went with the only fact that named it.
    assert len(before["entities"]) == 3
    assert before["relations"]

    app: FastAPI = client._transport.app  # type: ignore[attr-defined]
    resources = app.state.resources
    project_id = uuid.UUID((await client.get("/v1/project")).json()["id"])
    await resources.graph.clear_project(project_id)
    assert (await client.get("/v1/entities")).json()["results"] == []
    counts = await rebuild_graph(resources.database, resources.graph, resources.embedder,
                                 project_id)
    assert counts["extractions"] == 3  # one per episode
    assert counts["entities_deleted"] == 1
    assert await snapshot(client) == before


async def test_a_merge_can_be_undone(graph_client: httpx.AsyncClient, brain: Brain) -> None:
    """"Mel" was merged into Melanie; a user says they are two people. Mel becomes an entity
    with the relations that named her, Melanie keeps hers (her move to Berlin was Mel's, so
    she lives in Paris again), and a rebuild keeps them apart."""
    client = graph_client
    await three_sessions(client, brain)
    entities = {e["name"]: e for e in (await client.get("/v1/entities")).json()["results"]}
    melanie = entities["Melanie"]["id"]
    url = f"/v1/entities/{melanie}/unmerge"
    for body, status in (({"alias": "Melly"}, 404), ({"alias": ""}, 422),
                         ({"alias": "Mel", "x": 1}, 422)):
        response = await client.post(url, json=body)
        assert response.status_code == status, response.text
        assert "error" in response.json()

    response = await client.post(url, json={"alias": "mel"})  # any spelling of the name key
    assert response.status_code == 200, response.text
    undone = response.json()
    assert undone["undone"] == 1
    assert undone["entity"]["id"] == melanie
    assert undone["split"]["name"] == "Mel"
    mel = undone["split"]["id"]

    def triples(relations: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
        return {(r["source_name"], r["type"], r["target_name"]) for r in relations}

    melanie_now = (await client.get(f"/v1/entities/{melanie}")).json()
    assert melanie_now["aliases"] == []
    assert triples(melanie_now["relations"]) == {("Melanie", "sister_of", "User"),
                                                 ("Melanie", "lives_in", "Paris")}
    mel_now = (await client.get(f"/v1/entities/{mel}")).json()
    assert triples(mel_now["relations"]) == {("Mel", "lives_in", "Berlin"),
                                             ("Mel", "works_at", "Siemens")}
    assert {"Melanie lives in Berlin", "Melanie works at Siemens"} <= {
        m["memory"] for m in mel_now["memories"]}
    assert (await client.post(url, json={"alias": "Mel"})).status_code == 404  # done already

    before = await snapshot(client)
    app: FastAPI = client._transport.app  # type: ignore[attr-defined]
    resources = app.state.resources
    project_id = uuid.UUID((await client.get("/v1/project")).json()["id"])
    await rebuild_graph(resources.database, resources.graph, resources.embedder, project_id)
    assert await snapshot(client) == before


async def test_the_sweep_applies_an_extraction_left_unapplied(client: httpx.AsyncClient,
                                                              brain: Brain) -> None:
    """The process died between writing an episode's memories and projecting its graph: the
    extraction is in Postgres, unapplied; the sweep applies it, once."""
    brain.facts = {"Ana is my friend.": ["Ana is User's friend"]}
    brain.graph = lambda facts: {"entities": [{"name": "Ana", "type": "person", "summary": ""}],
                                 "relations": []}
    assert (await consolidate(client, "Ana is my friend."))["status"] == "SUCCEEDED"
    app: FastAPI = client._transport.app  # type: ignore[attr-defined]
    resources = app.state.resources
    project_id = uuid.UUID((await client.get("/v1/project")).json()["id"])
    await resources.graph.clear_project(project_id)
    async with resources.database.engine.begin() as connection:
        await connection.exec_driver_sql(
            "UPDATE graph_extractions SET applied_at = NULL, "
            "created_at = now() - interval '1 hour' WHERE project_id = $1", (project_id,))
    assert (await client.get("/v1/entities")).json()["results"] == []

    sent: list[uuid.UUID] = []

    async def enqueue(job_ids: Any) -> None:
        sent.extend(job_ids)

    await runner.sweep(resources, enqueue)
    assert sent == []
    assert [e["name"] for e in (await client.get("/v1/entities")).json()["results"]] == ["Ana"]
    async with resources.database.engine.begin() as connection:
        pending = await connection.exec_driver_sql(
            "SELECT count(*) FROM graph_extractions WHERE project_id = $1 "
            "AND applied_at IS NULL", (project_id,))
        assert pending.scalar_one() == 0
    await runner.sweep(resources, enqueue)
    assert len((await client.get("/v1/entities")).json()["results"]) == 1


def test_scope_ids_with_a_separator_in_them_stay_two_scopes() -> None:
    """Entity ids hash the scope's ids and the name; joined with a separator, ids holding it
    made two scopes one."""
    project = uuid.uuid4()
    one = ProjectScope(project, user_id="a\x1fb", agent_id="c")
    other = ProjectScope(project, user_id="a", agent_id="b\x1fc")
    assert entity_id(one, "ines") != entity_id(other, "ines")
    assert entity_id(one, "ines") == entity_id(
        ProjectScope(project, user_id="a\x1fb", agent_id="c"), "ines")
