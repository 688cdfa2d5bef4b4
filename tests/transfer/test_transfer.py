"""Export and import of a project (``app.transfer``) on the real Postgres, the real embedder and
the graph in Postgres: the round trip through an erase, an import interrupted and resumed,
bad lines, and projects that never meet."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.store.repositories import bulk_insert
from app.transfer.import_ import Loader, Target, load, space_of
from app.transfer.records import encode_vector
from app.transfer.survey import Survey, survey
from tests.conftest import KeyFactory
from tests.consolidate.scripted_brain import Brain
from tests.graph.conftest import neo4j_url  # noqa: F401 - fixtures the round trip uses
from tests.graph.test_graph_pipeline import (  # noqa: F401
    graph_client,
    neo4j_app,
    snapshot,
    three_sessions,
)
from tests.test_keys import keyed, make_key

NDJSON = {"Content-Type": "application/x-ndjson"}
QUESTIONS = [("u1", "Where does Melanie live?"), ("u1", "Who is the user's sister?"),
             ("u2", "where is the boat moored?"), ("u2", "what did the uncle leave?")]


async def export_of(client: httpx.AsyncClient) -> bytes:
    response = await client.get("/v1/export")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    return response.content


def records(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def body(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


async def import_into(client: httpx.AsyncClient, data: bytes) -> httpx.Response:
    return await client.post("/v1/import", content=data, headers=NDJSON)


async def every_memory(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await client.get("/v1/memories", params={"limit": 1000,
                                                        "include_superseded": "true"})
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["results"]
    return found


async def state(client: httpx.AsyncClient) -> dict[str, Any]:
    """Everything the API shows of the project: memories with their sources and lineage,
    their history, search results (ranked ids), the graph."""
    memories = await every_memory(client)
    details = [(await client.get(f"/v1/memories/{m['id']}")).json() for m in memories]
    history = {m["id"]: (await client.get(f"/v1/memories/{m['id']}/history")).json()
               for m in memories}
    searches = []
    for user, question in QUESTIONS:
        found = await client.post("/v1/memories/search", json={
            "query": question, "user_id": user, "top_k": 5, "graph": True,
            "include": ["relations"]})
        assert found.status_code == 200, found.text
        searches.append([(hit["id"], hit["memory"]) for hit in found.json()["results"]])
    return {"memories": details, "history": history, "searches": searches,
            "graph": await snapshot(client)}


async def add_conversation(client: httpx.AsyncClient) -> None:
    """Messages of a second user stored verbatim, one of them changed since (history)."""
    added = await client.post("/v1/memories", json={
        "user_id": "u2", "infer": False, "metadata": {"topic": "boats"},
        "observed_at": "2024-06-01T09:00:00Z", "messages": [
            {"role": "user", "content": "The boat is moored at pier seven.", "name": "Ana"},
            {"role": "assistant", "content": "Which boat is it?"},
            {"role": "user", "content": "The blue sloop my uncle left me.", "name": "Ana"}]})
    assert added.status_code == 201, added.text
    first = added.json()["results"][0]["id"]
    changed = await client.patch(f"/v1/memories/{first}",
                                 json={"text": "The boat is moored at pier eight."})
    assert changed.status_code == 200, changed.text


def without_header(data: bytes) -> list[bytes]:
    return data.splitlines()[1:]


async def test_export_erase_import_gives_back_the_same_project(
        graph_client: httpx.AsyncClient, brain: Brain) -> None:  # noqa: F811
    """With the graph in Postgres tables and in Neo4j."""
    client = graph_client
    jobs = await three_sessions(client, brain)
    assert all(job["status"] == "SUCCEEDED" for job in jobs)
    await add_conversation(client)
    before = await state(client)
    assert any(m["superseded_by"] for m in before["memories"])  # a supersession travels
    assert any(d["aliases"] for d in before["graph"]["details"])  # and a merge ("Mel")
    data = await export_of(client)
    kinds = Counter(line["record"] for line in records(data))
    assert kinds["memory"] == len(before["memories"])
    # Whether a fact is a state travels (messages have none), as the re-export below shows.
    assert {line["lasting"] for line in records(data) if line["record"] == "memory"} == {
        True, None}
    assert kinds["entity"] == len(before["graph"]["entities"]) > 0

    for user in ("u1", "u2"):
        assert (await client.delete(f"/v1/users/{user}")).status_code == 200
    assert await every_memory(client) == []
    assert (await client.get("/v1/entities")).json()["results"] == []

    imported = await import_into(client, data)
    assert imported.status_code == 200, imported.text
    receipt = imported.json()
    for kind, count in kinds.items():
        if kind != "header":
            assert receipt["records"][kind] == {"inserted": count, "present": 0,
                                                "skipped": 0}, kind
    assert receipt["vectors_given"] == kinds["memory"]
    assert receipt["vectors_embedded"] == 0
    assert receipt["unresolved_supersessions"] == 0
    assert await state(client) == before
    assert without_header(await export_of(client)) == without_header(data)

    again = (await import_into(client, data)).json()  # idempotent: nothing twice
    assert again["records"]["memory"] == {"inserted": 0, "present": kinds["memory"],
                                          "skipped": 0}
    assert await state(client) == before

    # The connections that copied vectors in binary write them as before.
    boat = next(m for m in before["memories"] if m["memory"].startswith("The blue sloop"))
    for _ in range(3):  # more than one pooled connection
        changed = await client.patch(f"/v1/memories/{boat['id']}",
                                     json={"text": "The red sloop my uncle left me."})
        assert changed.status_code == 200, changed.text
        read = (await client.post("/v1/memories/search", json={
            "query": "red sloop", "user_id": "u2", "top_k": 1})).json()["results"]
        assert read[0]["memory"] == "The red sloop my uncle left me."


async def messages_of(client: httpx.AsyncClient, adds: int = 3, size: int = 8) -> None:
    for add in range(adds):
        response = await client.post("/v1/memories", json={
            "user_id": f"u{add % 2}", "infer": False, "messages": [
                {"role": "user", "content": f"Note {add}-{turn}: the parcel number {turn} "
                                            f"went to depot {add}."} for turn in range(size)]})
        assert response.status_code == 201, response.text


@pytest.fixture
async def second(app: FastAPI, api_key_factory: KeyFactory) -> AsyncIterator[httpx.AsyncClient]:
    """A client of another project."""
    async with keyed(app, await api_key_factory()) as other:
        yield other


async def project_id(client: httpx.AsyncClient) -> uuid.UUID:
    return uuid.UUID((await client.get("/v1/project")).json()["id"])


async def lines_of(data: bytes) -> AsyncIterator[bytes]:
    for line in data.splitlines(keepends=True):
        yield line


class Interrupted(Exception):
    pass


async def test_an_interrupted_import_resumes_without_duplicates(
        app: FastAPI, client: httpx.AsyncClient, second: httpx.AsyncClient,
        monkeypatch: pytest.MonkeyPatch) -> None:
    await messages_of(client)
    data = await export_of(client)
    resources = app.state.resources
    target = Target(resources.database, resources.graph, resources.embedder,
                    await project_id(second))
    found = survey(data.splitlines(keepends=True), await space_of(resources.database))
    assert found.ok, found.problems
    assert found.records["memory"] == 24

    # Stopped after its second batch (the process killed, Ctrl-C): whole batches stay.
    async def stop(line: int, loader: Loader) -> None:
        if loader.counts["memory"].inserted == 10:
            raise Interrupted
    with pytest.raises(Interrupted):
        await load(target, found, lines_of(data), batch=5, on_batch=stop)
    assert len(await every_memory(second)) == 10

    # A line that fails in the middle of a batch: its batch is rolled back whole.
    poison = "Note 1-4: the parcel number 4 went to depot 1."
    real_insert = bulk_insert.insert

    async def failing(session: Any, stage: bulk_insert.Stage, project: uuid.UUID,
                      rows: Any) -> set[Any]:
        if stage is bulk_insert.MEMORIES and any(row[5] == poison for row in rows):
            raise ConnectionResetError("the connection dropped")
        return await real_insert(session, stage, project, rows)
    monkeypatch.setattr(bulk_insert, "insert", failing)
    with pytest.raises(ConnectionResetError):
        await load(target, found, lines_of(data), batch=5)
    stored = await every_memory(second)
    assert poison not in {m["memory"] for m in stored}
    assert len(stored) == 10  # the poisoned batch (memories 11 to 15) left nothing
    monkeypatch.undo()

    resumed = await import_into(second, data)
    assert resumed.status_code == 200, resumed.text
    receipt = resumed.json()
    assert receipt["records"]["memory"] == {"inserted": 14, "present": 10, "skipped": 0}
    assert receipt["records"]["episode"] == {"inserted": 0, "present": 3, "skipped": 0}
    assert receipt["vectors_given"] == 14  # what was stored is not embedded again
    copies = await every_memory(second)
    originals = await every_memory(client)
    assert Counter((m["memory"], m["user_id"]) for m in copies) == Counter(
        (m["memory"], m["user_id"]) for m in originals)
    for memory in copies:
        history = (await second.get(f"/v1/memories/{memory['id']}/history")).json()
        assert [event["event"] for event in history["results"]] == ["ADD"]
        [source] = (await second.get(f"/v1/memories/{memory['id']}")).json()["sources"]
        assert source["messages"][0]["content"] == memory["memory"]


async def test_bad_lines_are_named_by_number_and_change_nothing(
        client: httpx.AsyncClient, database: Any) -> None:
    await messages_of(client, adds=1, size=2)
    data = records(await export_of(client))
    before = await state(client)
    header = data[0]
    memory = next(line for line in data if line["record"] == "memory")
    fresh = {**memory, "id": str(uuid.uuid4()), "text": "A new memory that must not land."}
    lines = [
        json.dumps(header).encode(),
        json.dumps(fresh).encode(),  # 2: valid, yet not written: the file has bad lines
        b"{not json",  # 3
        json.dumps({**fresh, "id": str(uuid.uuid4()), "text": "nul \u0000 inside"}).encode(),
        json.dumps({**fresh, "id": str(uuid.uuid4()), "user_id": None}).encode(),  # 5
        json.dumps({**fresh, "id": str(uuid.uuid4()),  # 6: the database's model, wrong size
                    "embedding": encode_vector([0.1, 0.2, 0.3])}).encode(),
        b"",  # 7: blank lines are fine
        json.dumps({**fresh, "id": str(uuid.uuid4()), "kind": "opinion"}).encode(),  # 8
        json.dumps(header).encode(),  # 9: a second header
        json.dumps({"record": "memory"}).encode(),  # 10
    ]
    response = await import_into(client, b"\n".join(lines) + b"\n")
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "validation_error"
    detail = response.json()["detail"]
    assert detail.startswith("7 bad line(s), nothing was imported")
    for number in (3, 4, 5, 6, 8, 9, 10):
        assert f"line {number}:" in detail, detail
    for number in (1, 2, 7):
        assert f"line {number}:" not in detail, detail
    assert "NUL" in detail
    assert "384" in detail
    assert "user_id" in detail
    assert await state(client) == before

    headless = await import_into(client, json.dumps(fresh).encode() + b"\n")
    assert headless.status_code == 422
    assert "line 1: the first line must be the header" in headless.json()["detail"]
    assert await state(client) == before


async def test_vectors_of_another_model_are_embedded_here(client: httpx.AsyncClient) -> None:
    header = {"record": "header", "format": "anamnesis.export", "version": 1,
              "embedding": {"model": "some-other-model", "dimension": 3}}
    lines = [header] + [
        {"record": "memory", "id": str(uuid.uuid4()), "user_id": "u1", "kind": "message",
         "text": text, "embedding": encode_vector([1.0, 0.0, 0.0])}
        for text in ("Ravi keeps bees on the roof.", "The invoice is due on Friday.")]
    lines.append({"record": "memory", "id": str(uuid.uuid4()), "user_id": "u1",
                  "text": "Sara plays the cello in an orchestra."})  # no vector at all
    response = await import_into(client, body(lines))
    assert response.status_code == 200, response.text
    assert response.json()["vectors_embedded"] == 3
    assert response.json()["vectors_given"] == 0
    found = (await client.post("/v1/memories/search", json={
        "query": "who is a beekeeper?", "user_id": "u1", "ranking": "dense"})).json()
    assert found["results"][0]["memory"] == "Ravi keeps bees on the roof."


async def test_projects_never_meet(app: FastAPI, client: httpx.AsyncClient,
                                   second: httpx.AsyncClient, brain: Brain) -> None:
    await three_sessions(client, brain)
    await add_conversation(client)
    added = await second.post("/v1/memories", json={
        "user_id": "u1", "infer": False,
        "messages": [{"role": "user", "content": "Project B keeps its own notes."}]})
    assert added.status_code == 201
    mine, theirs = await export_of(client), await export_of(second)
    assert b"Project B keeps" not in mine
    assert b"pier eight" not in theirs
    assert b"Melanie" not in theirs
    a_ids = {m["id"] for m in await every_memory(client)}
    assert {line["id"] for line in records(mine) if line["record"] == "memory"} == a_ids
    assert records(theirs)[0]["project"]["id"] == str(await project_id(second))
    a_before = await state(client)

    # B imports A's file: copies under ids of its own; A's rows stay A's.
    imported = await import_into(second, mine)
    assert imported.status_code == 200, imported.text
    assert imported.json()["records"]["memory"]["inserted"] == len(a_ids)
    copies = await every_memory(second)
    assert len(copies) == len(a_ids) + 1
    assert not {m["id"] for m in copies} & a_ids
    copied = await state(second)
    assert len(copied["graph"]["entities"]) == len(a_before["graph"]["entities"])
    assert not {e["id"] for e in copied["graph"]["entities"]} & {
        e["id"] for e in a_before["graph"]["entities"]}
    relations = {r["id"] for r in copied["graph"]["relations"]}
    assert relations
    assert not relations & {r["id"] for r in a_before["graph"]["relations"]}
    assert await state(client) == a_before

    # A file claiming to be B's own, with A's ids, still finds only B's copies.
    forged = records(mine)
    forged[0]["project"]["id"] = str(await project_id(second))
    again = await import_into(second, body(forged))
    assert again.status_code == 200, again.text
    assert again.json()["records"]["memory"] == {"inserted": 0, "present": len(a_ids),
                                                 "skipped": 0}
    assert await state(client) == a_before
    assert len(await every_memory(second)) == len(a_ids) + 1

    # Neither a reading nor a writing key may dump or load a project.
    async with keyed(app, await make_key(client, "read", "write")) as limited:
        assert (await limited.get("/v1/export")).status_code == 403
        assert (await import_into(limited, mine)).status_code == 403


def test_a_survey_counts_what_it_will_embed() -> None:
    from app.transfer.survey import Space

    header = {"record": "header", "format": "anamnesis.export", "version": 1,
              "embedding": {"model": "m", "dimension": 2}}
    memory = {"record": "memory", "user_id": "u", "text": "hello"}
    lines = [json.dumps(line).encode() for line in (
        header, {**memory, "id": str(uuid.uuid4()), "embedding": [0.6, 0.8]},
        {**memory, "id": str(uuid.uuid4())},
        {**memory, "id": str(uuid.uuid4()), "embedding": [1.0, 0.0], "embedding_model": "x"})]
    found: Survey = survey(lines, Space("m", 2))
    assert found.ok, found.problems
    assert found.to_embed == 2
    assert found.records == Counter(memory=3)


async def test_an_import_body_may_pass_the_request_limit(client: httpx.AsyncClient,
                                                        settings: Any) -> None:
    """POST /v1/import has its own body limit (``api.max_import_bytes``), far above the
    1 MiB of every other request."""
    header = {"record": "header", "format": "anamnesis.export", "version": 1,
              "embedding": {"model": "all-MiniLM-L6-v2", "dimension": 384}}
    vector = encode_vector([1 / 384 ** 0.5] * 384)
    lines = [header] + [{"record": "memory", "id": str(uuid.uuid4()), "user_id": "u1",
                         "text": f"Bulk line {index}", "embedding": vector}
                        for index in range(600)]
    data = body(lines)
    assert settings.api.max_body_bytes < len(data) < settings.api.max_import_bytes
    response = await import_into(client, data)
    assert response.status_code == 200, response.text
    assert response.json()["records"]["memory"]["inserted"] == 600
    assert response.json()["vectors_given"] == 600


async def test_the_import_limit_holds_for_the_import_only() -> None:
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse

    from app.http import RequestContextMiddleware

    async def echo(scope: Any, receive: Any, send: Any) -> None:
        size = len(await Request(scope, receive).body())
        await PlainTextResponse(str(size))(scope, receive, send)

    guarded = RequestContextMiddleware(echo, max_body_bytes=1024, large_bodies={"/up": 4096})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=guarded),
                                 base_url="http://test") as http:
        assert (await http.post("/up", content=b"x" * 3000)).text == "3000"
        assert (await http.post("/up", content=b"x" * 5000)).status_code == 413
        assert (await http.post("/other", content=b"x" * 3000)).status_code == 413
