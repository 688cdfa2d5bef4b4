"""Every /v1/memories endpoint end to end: real app, real Postgres+pgvector, real embeddings."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from app.domain import Scope, content_hash
from app.embeddings import SentenceTransformerEmbedder
from app.store.db import Database
from app.store.repositories import memories as memory_rows
from app.store.repositories.memories import NewMemory

NOWHERE = "00000000-0000-7000-8000-000000000000"


def message(content: str, role: str = "user", **extra: Any) -> dict[str, Any]:
    return {"role": role, "content": content, **extra}


async def add(client: httpx.AsyncClient, *contents: str, user_id: str | None = "u1",
              expect: int = 201, headers: dict[str, str] | None = None,
              **fields: Any) -> httpx.Response:
    body: dict[str, Any] = {"messages": [message(c) for c in contents], "infer": False, **fields}
    if user_id is not None:
        body["user_id"] = user_id
    response = await client.post("/v1/memories", json=body, headers=headers)
    assert response.status_code == expect, response.text
    return response


async def add_one(client: httpx.AsyncClient, content: str, **fields: Any) -> str:
    response = await add(client, content, **fields)
    result = response.json()["results"][0]
    assert result["event"] == "ADD", response.text
    return str(result["id"])


async def list_all(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    response = await client.get("/v1/memories", params={"limit": 1000, **params})
    assert response.status_code == 200, response.text
    assert response.json()["next_cursor"] is None
    results: list[dict[str, Any]] = response.json()["results"]
    return results


async def search(client: httpx.AsyncClient, query: str, **fields: Any) -> list[dict[str, Any]]:
    response = await client.post("/v1/memories/search", json={"query": query, **fields})
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    return results


async def history(client: httpx.AsyncClient, memory_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/memories/{memory_id}/history")
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    return results


async def row_counts(database: Database) -> dict[str, int]:
    """Every row the service writes, counted straight from the database."""
    counts = {}
    async with database.engine.connect() as connection:
        for table in ("memories", "memory_events", "idempotency_keys"):
            result = await connection.exec_driver_sql(f"SELECT count(*) FROM {table}")
            counts[table] = int(result.scalar_one())
    return counts


def timestamp(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"error", "detail", "request_id"}, body
    assert body["error"] == code, body
    assert body["request_id"] in response.headers.get_list("x-request-id")
    return body


# --- POST /v1/memories ------------------------------------------------------------------


async def test_add_verbatim_stores_each_message_with_role_and_index(
        client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/memories", json={
        "messages": [message("I adopted a cat named Miso last spring."),
                     message("Miso sounds lovely!", role="assistant", name="helper"),
                     message("Please remember I am vegetarian.", role="system")],
        "user_id": "u1", "agent_id": "a1", "run_id": "r1",
        "metadata": {"source": "chat", "mood": 3}, "infer": False})
    assert response.status_code == 201, response.text
    results = response.json()["results"]
    assert [r["event"] for r in results] == ["ADD", "ADD", "ADD"]
    assert [r["memory"] for r in results] == ["I adopted a cat named Miso last spring.",
                                              "Miso sounds lovely!",
                                              "Please remember I am vegetarian."]
    assert len({r["id"] for r in results}) == 3

    stored = [(await client.get(f"/v1/memories/{r['id']}")).json() for r in results]
    assert [m["metadata"] for m in stored] == [
        {"source": "chat", "mood": 3, "role": "user", "message_index": 0},
        {"source": "chat", "mood": 3, "role": "assistant", "message_index": 1, "name": "helper"},
        {"source": "chat", "mood": 3, "role": "system", "message_index": 2},
    ]
    for memory, result in zip(stored, results, strict=True):
        assert memory["id"] == result["id"]
        assert memory["memory"] == result["memory"]
        assert (memory["user_id"], memory["agent_id"], memory["run_id"]) == ("u1", "a1", "r1")
        assert memory["expires_at"] is None


async def test_add_skips_empty_and_whitespace_messages(client: httpx.AsyncClient) -> None:
    response = await add(client, "", "   \n\t ", "  I   play   chess  ", "")
    results = response.json()["results"]
    assert len(results) == 1
    assert results[0]["event"] == "ADD"
    assert results[0]["memory"] == "I play chess"  # whitespace collapsed
    memory = (await client.get(f"/v1/memories/{results[0]['id']}")).json()
    assert memory["metadata"]["message_index"] == 2  # position in the request
    assert len(await list_all(client)) == 1


async def test_add_with_only_empty_messages_is_rejected(client: httpx.AsyncClient,
                                                        database: Database) -> None:
    before = await row_counts(database)
    response = await add(client, "", "  ", "\n", expect=422)
    assert_error(response, 422, "validation_error")
    assert "messages" in response.json()["detail"]
    assert await row_counts(database) == before


async def test_each_message_is_a_memory_of_its_own_place(client: httpx.AsyncClient) -> None:
    """A message is an event: the same words twice in one conversation are two messages,
    each linked to its own place in the episode."""
    sent = ["I live in Lisbon.", "Something else entirely.", "I  live in Lisbon. "]
    results = (await add(client, *sent)).json()["results"]
    assert [r["event"] for r in results] == ["ADD", "ADD", "ADD"]
    assert len({r["id"] for r in results}) == 3
    assert results[2]["memory"] == "I live in Lisbon."
    listed = await list_all(client)
    assert {m["kind"] for m in listed} == {"message"}
    assert len(listed) == 3
    for index, result in enumerate(results):
        detail = (await client.get(f"/v1/memories/{result['id']}")).json()
        assert detail["kind"] == "message"
        assert detail["metadata"]["message_index"] == index
        [source] = detail["sources"]
        assert source["message_indices"] == [index]
        assert source["messages"][0]["content"] == sent[index]
    assert len(await history(client, results[0]["id"])) == 1


async def test_words_said_again_are_another_message(client: httpx.AsyncClient) -> None:
    """Posting the same text again (another session, another day) keeps both, each with its
    own time and metadata; only distilled facts are de-duplicated by content."""
    first = await add_one(client, "My sister's name is Ana.", metadata={"session": 1},
                          observed_at="2025-01-02T10:00:00Z")
    again = (await add(client, "My sister's name is Ana.", metadata={"session": 2},
                       observed_at="2025-03-04T10:00:00Z")).json()["results"]
    assert [r["event"] for r in again] == ["ADD"]
    assert again[0]["id"] != first
    listed = {m["id"]: m for m in await list_all(client)}
    assert set(listed) == {first, again[0]["id"]}
    assert listed[first]["metadata"]["session"] == 1
    assert listed[again[0]["id"]]["metadata"]["session"] == 2
    assert listed[first]["valid_at"].startswith("2025-01-02")
    assert listed[again[0]["id"]]["valid_at"].startswith("2025-03-04")
    assert [e["event"] for e in await history(client, first)] == ["ADD"]


async def test_same_text_in_another_scope_is_a_separate_memory(
        client: httpx.AsyncClient) -> None:
    mine = await add_one(client, "Prefers tea over coffee.", user_id="u1")
    theirs = await add_one(client, "Prefers tea over coffee.", user_id="u2")
    agents = await add_one(client, "Prefers tea over coffee.", user_id="u1", agent_id="a1")
    assert len({mine, theirs, agents}) == 3


# --- GET /v1/memories/{id} --------------------------------------------------------------


async def test_get_memory(client: httpx.AsyncClient) -> None:
    memory_id = await add_one(client, "Allergic to peanuts.", user_id="u9", agent_id="doc",
                              metadata={"severity": "high"})
    response = await client.get(f"/v1/memories/{memory_id}")
    assert response.status_code == 200, response.text
    memory = response.json()
    assert set(memory) == {"id", "memory", "kind", "user_id", "agent_id", "run_id",
                           "metadata", "created_at", "updated_at", "expires_at", "valid_at",
                           "invalid_at", "superseded_by", "supersedes", "sources"}
    assert memory["kind"] == "message"
    [source] = memory["sources"]  # the message's own place in its episode
    assert source["message_indices"] == [0]
    assert source["messages"] == [{"index": 0, "role": "user",
                                   "content": "Allergic to peanuts."}]
    assert memory["id"] == memory_id
    assert memory["memory"] == "Allergic to peanuts."
    assert (memory["user_id"], memory["agent_id"], memory["run_id"]) == ("u9", "doc", None)
    assert memory["metadata"] == {"severity": "high", "role": "user", "message_index": 0}
    assert memory["created_at"] == memory["updated_at"]


async def test_get_unknown_memory_is_404(client: httpx.AsyncClient) -> None:
    await add_one(client, "Something stored.")
    for unknown in (NOWHERE, str(uuid.uuid4())):
        assert_error(await client.get(f"/v1/memories/{unknown}"), 404, "not_found")


# --- GET /v1/memories ------------------------------------------------------------------


async def test_list_filters_by_scope_ids(client: httpx.AsyncClient) -> None:
    a = await add_one(client, "alpha", user_id="alice", agent_id="planner", run_id="r1")
    b = await add_one(client, "beta", user_id="alice", agent_id="coder", run_id="r2")
    c = await add_one(client, "gamma", user_id="bob", agent_id="planner", run_id="r1")
    d = await add_one(client, "delta", user_id=None, agent_id="planner")

    async def ids(**params: str) -> list[str]:
        return [m["id"] for m in await list_all(client, **params)]

    assert await ids() == [d, c, b, a]
    assert await ids(user_id="alice") == [b, a]
    assert await ids(user_id="bob") == [c]
    assert await ids(agent_id="planner") == [d, c, a]
    assert await ids(run_id="r1") == [c, a]
    assert await ids(user_id="alice", agent_id="planner") == [a]
    assert await ids(user_id="alice", run_id="r2") == [b]
    assert await ids(user_id="alice", agent_id="planner", run_id="r2") == []
    assert await ids(user_id="carol") == []


async def test_list_paginates_newest_first(client: httpx.AsyncClient) -> None:
    created = [await add_one(client, f"fact number {i} about the garden") for i in range(7)]
    await add_one(client, "belongs to someone else", user_id="u2")

    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"user_id": "u1", "limit": 3}
        if cursor is not None:
            params["cursor"] = cursor
        response = await client.get("/v1/memories", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        pages.append([m["id"] for m in page["results"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert len(pages) < 10, "pagination does not end"

    assert [len(p) for p in pages] == [3, 3, 1]
    seen = [memory_id for page in pages for memory_id in page]
    assert seen == list(reversed(created))  # newest first, no gaps, no duplicates


async def test_list_exact_multiple_of_limit_ends_cleanly(client: httpx.AsyncClient) -> None:
    created = [await add_one(client, f"note {i}") for i in range(4)]
    first = (await client.get("/v1/memories", params={"limit": 2})).json()
    assert [m["id"] for m in first["results"]] == created[:1:-1]
    second = (await client.get("/v1/memories",
                               params={"limit": 2, "cursor": first["next_cursor"]})).json()
    assert [m["id"] for m in second["results"]] == created[1::-1]
    assert second["next_cursor"] is None


@pytest.mark.parametrize("cursor", ["not-a-cursor", "!!!!", "AAAA", "ünïcode", "x" * 65])
async def test_list_rejects_bad_cursor(client: httpx.AsyncClient, cursor: str) -> None:
    await add_one(client, "anything")
    response = await client.get("/v1/memories", params={"cursor": cursor})
    body = assert_error(response, 422, "validation_error")
    assert "cursor" in body["detail"]


@pytest.mark.parametrize("limit", [0, -1, 1001, "ten"])
async def test_list_rejects_bad_limit(client: httpx.AsyncClient, limit: object) -> None:
    body = assert_error(await client.get("/v1/memories", params={"limit": limit}), 422,
                        "validation_error")
    assert "limit" in body["detail"]


# --- PATCH /v1/memories/{id} -----------------------------------------------------------


async def test_patch_text_reembeds(client: httpx.AsyncClient) -> None:
    memory_id = await add_one(client, "I go hiking in the Alps every summer.")
    other = await add_one(client, "My favourite food is sushi.")
    before = (await client.get(f"/v1/memories/{memory_id}")).json()

    response = await client.patch(f"/v1/memories/{memory_id}",
                                  json={"text": "  I play the   violin in an orchestra. "})
    assert response.status_code == 200, response.text
    patched = response.json()
    assert patched["id"] == memory_id
    assert patched["memory"] == "I play the violin in an orchestra."
    assert patched["metadata"] == before["metadata"]  # untouched when not given
    assert patched["created_at"] == before["created_at"]
    assert timestamp(patched["updated_at"]) > timestamp(before["updated_at"])
    assert (await client.get(f"/v1/memories/{memory_id}")).json() == patched

    hits = await search(client, "which musical instrument do I play?", user_id="u1")
    assert hits[0]["id"] == memory_id
    assert hits[0]["memory"] == "I play the violin in an orchestra."
    mountains = await search(client, "hiking in the mountains", user_id="u1", top_k=2)
    assert all("Alps" not in hit["memory"] for hit in mountains)
    assert {hit["id"] for hit in mountains} == {memory_id, other}


async def test_patch_metadata_replaces_it(client: httpx.AsyncClient) -> None:
    memory_id = await add_one(client, "Owns a red bicycle.", metadata={"a": 1, "b": [1, 2]})
    response = await client.patch(f"/v1/memories/{memory_id}",
                                  json={"metadata": {"c": {"nested": True}}})
    assert response.status_code == 200, response.text
    assert response.json()["metadata"] == {"c": {"nested": True}}
    assert response.json()["memory"] == "Owns a red bicycle."
    stored = (await client.get(f"/v1/memories/{memory_id}")).json()
    assert stored["metadata"] == {"c": {"nested": True}}

    both = await client.patch(f"/v1/memories/{memory_id}",
                              json={"text": "Owns a blue bicycle.", "metadata": {}})
    assert both.status_code == 200, both.text
    assert (both.json()["memory"], both.json()["metadata"]) == ("Owns a blue bicycle.", {})


async def test_patch_without_change_records_nothing(client: httpx.AsyncClient) -> None:
    memory_id = await add_one(client, "Lives near the sea.", metadata={"k": "v"})
    stored = (await client.get(f"/v1/memories/{memory_id}")).json()
    response = await client.patch(f"/v1/memories/{memory_id}",
                                  json={"text": " Lives  near the sea.",
                                        "metadata": stored["metadata"]})
    assert response.status_code == 200, response.text
    assert response.json() == stored
    assert [e["event"] for e in await history(client, memory_id)] == ["ADD"]


async def add_fact(client: httpx.AsyncClient, database: Database,
                   embedder: SentenceTransformerEmbedder, text: str) -> str:
    """A fact of user u1, as consolidation stores one (facts are unique per scope)."""
    project_id = uuid.UUID((await client.get("/v1/project")).json()["id"])
    (vector,) = await embedder.embed([text])
    async with database.session_scope() as session:
        inserted = await memory_rows.insert_new(session, project_id, Scope(user_id="u1"), [
            NewMemory(text, content_hash(text), {}, vector)])
    return str(inserted[content_hash(text)])


async def test_patch_to_text_of_another_live_fact_conflicts(
        client: httpx.AsyncClient, database: Database,
        embedder: SentenceTransformerEmbedder) -> None:
    await add_fact(client, database, embedder, "Drives a green van.")
    second = await add_fact(client, database, embedder, "Works night shifts.")
    before = {m["id"]: m for m in await list_all(client)}
    counts = await row_counts(database)

    response = await client.patch(f"/v1/memories/{second}",
                                  json={"text": "Drives a  green van.", "metadata": {"x": 1}})
    assert_error(response, 409, "conflict")

    assert {m["id"]: m for m in await list_all(client)} == before
    assert await row_counts(database) == counts
    assert [e["event"] for e in await history(client, second)] == []
    hits = await search(client, "night shift work", user_id="u1", top_k=1)
    assert hits[0]["id"] == second
    assert hits[0]["memory"] == "Works night shifts."


async def test_patch_to_text_of_another_message_is_allowed(client: httpx.AsyncClient) -> None:
    """Messages are events, not unique facts: two may say the same."""
    first = await add_one(client, "Drives a green van.")
    second = await add_one(client, "Works night shifts.")
    response = await client.patch(f"/v1/memories/{second}", json={"text": "Drives a green van."})
    assert response.status_code == 200, response.text
    assert {m["id"]: m["memory"] for m in await list_all(client)} == {
        first: "Drives a green van.", second: "Drives a green van."}
    assert first != second


async def test_patch_to_text_in_another_scope_is_allowed(client: httpx.AsyncClient) -> None:
    await add_one(client, "Speaks Portuguese.", user_id="u1")
    other = await add_one(client, "Speaks Spanish.", user_id="u2")
    response = await client.patch(f"/v1/memories/{other}", json={"text": "Speaks Portuguese."})
    assert response.status_code == 200, response.text


async def test_patch_to_text_of_a_deleted_memory_is_allowed(client: httpx.AsyncClient) -> None:
    gone = await add_one(client, "Has a pet rabbit.")
    kept = await add_one(client, "Has a pet hamster.")
    assert (await client.delete(f"/v1/memories/{gone}")).status_code == 200
    response = await client.patch(f"/v1/memories/{kept}", json={"text": "Has a pet rabbit."})
    assert response.status_code == 200, response.text


async def test_patch_to_text_of_an_expired_memory_is_allowed(client: httpx.AsyncClient) -> None:
    """An expired memory is gone everywhere; it must not block another memory's new text."""
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    await add_one(client, "Studies Japanese.", expires_at=past)
    kept = await add_one(client, "Studies Korean.")
    response = await client.patch(f"/v1/memories/{kept}", json={"text": "Studies Japanese."})
    assert response.status_code == 200, response.text
    assert response.json()["memory"] == "Studies Japanese."


@pytest.mark.parametrize(("body", "field"), [
    ({}, "body"), ({"text": None, "metadata": None}, "body"), ({"text": ""}, "text"),
    ({"text": "   \n "}, "text"), ({"text": "x" * 32_001}, "text"),
    ({"metadata": "not an object"}, "metadata"), ({"memory": "wrong field name"}, "memory"),
])
async def test_patch_rejects_bad_body(client: httpx.AsyncClient, database: Database,
                                      body: dict[str, Any], field: str) -> None:
    memory_id = await add_one(client, "Unchanging fact.")
    before = (await client.get(f"/v1/memories/{memory_id}")).json()
    counts = await row_counts(database)
    response = await client.patch(f"/v1/memories/{memory_id}", json=body)
    detail = assert_error(response, 422, "validation_error")["detail"]
    assert field in detail
    assert (await client.get(f"/v1/memories/{memory_id}")).json() == before
    assert await row_counts(database) == counts


async def test_patch_unknown_memory_is_404(client: httpx.AsyncClient) -> None:
    assert_error(await client.patch(f"/v1/memories/{NOWHERE}", json={"text": "new"}), 404,
                 "not_found")


# --- DELETE /v1/memories/{id} ----------------------------------------------------------


async def test_delete_memory(client: httpx.AsyncClient) -> None:
    doomed = await add_one(client, "Plays the bagpipes on Sundays.")
    kept = await add_one(client, "Collects vintage stamps.")
    assert (await search(client, "bagpipes", user_id="u1"))[0]["id"] == doomed

    response = await client.delete(f"/v1/memories/{doomed}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["id"], body["deleted"]) == (doomed, True)
    # The memory, its ADD event, its message in the conversation it came in and the search
    # context of the next message of that conversation (``kept``, posted right after).
    assert {k: v for k, v in body["erased"].items() if v} == {
        "memories": 1, "history_events": 1, "messages_redacted": 1, "contexts_rewritten": 1,
        "search_index": 1}

    assert_error(await client.get(f"/v1/memories/{doomed}"), 404, "not_found")
    assert [m["id"] for m in await list_all(client)] == [kept]
    assert doomed not in {h["id"] for h in await search(client, "bagpipes", top_k=100)}
    assert_error(await client.delete(f"/v1/memories/{doomed}"), 404, "not_found")
    assert_error(await client.patch(f"/v1/memories/{doomed}", json={"text": "x"}), 404,
                 "not_found")
    assert_error(await client.get(f"/v1/memories/{doomed}/history"), 404, "not_found")


async def test_readding_deleted_text_makes_a_new_memory(client: httpx.AsyncClient) -> None:
    old = await add_one(client, "Runs marathons.")
    assert (await client.delete(f"/v1/memories/{old}")).status_code == 200
    new = await add_one(client, "Runs marathons.")
    assert new != old
    assert [m["id"] for m in await list_all(client)] == [new]


async def test_delete_unknown_memory_is_404(client: httpx.AsyncClient) -> None:
    assert_error(await client.delete(f"/v1/memories/{NOWHERE}"), 404, "not_found")


# --- DELETE /v1/memories?scope ---------------------------------------------------------


async def test_delete_scope(client: httpx.AsyncClient) -> None:
    alice = [await add_one(client, f"alice fact {i}", user_id="alice", agent_id=f"a{i}")
             for i in range(3)]
    bob = [await add_one(client, f"bob fact {i}", user_id="bob") for i in range(2)]
    agent_only = await add_one(client, "agent fact", user_id=None, agent_id="a1")

    response = await client.delete("/v1/memories", params={"user_id": "alice"})
    assert response.status_code == 200, response.text
    assert response.json()["deleted"] == 3
    assert {k: v for k, v in response.json()["erased"].items() if v} == {
        "memories": 3, "history_events": 3, "episodes": 3, "search_index": 3}

    assert await list_all(client, user_id="alice") == []
    assert [m["id"] for m in await list_all(client)] == [agent_only, *reversed(bob)]
    for memory_id in alice:
        assert_error(await client.get(f"/v1/memories/{memory_id}"), 404, "not_found")
        assert_error(await client.get(f"/v1/memories/{memory_id}/history"), 404, "not_found")
    assert not {h["id"] for h in await search(client, "alice fact", top_k=50)} & set(alice)

    again = await client.delete("/v1/memories", params={"user_id": "alice"})
    assert again.json()["deleted"] == 0
    assert not any(again.json()["erased"].values())

    by_agent = await client.delete("/v1/memories", params={"agent_id": "a1"})
    assert by_agent.json()["deleted"] == 1
    assert [m["id"] for m in await list_all(client)] == list(reversed(bob))


async def test_deleting_a_large_scope_succeeds(client: httpx.AsyncClient) -> None:
    """2,000 memories: their ids and DELETE events bound one parameter each passed Postgres'
    32,767 parameters a statement (from about 1,930), so such a user could never be deleted."""
    for start in range(0, 2000, 200):
        response = await client.post("/v1/memories", json={
            "messages": [{"role": "user", "content": f"note {i}"}
                         for i in range(start, start + 200)],
            "user_id": "many", "infer": False})
        assert response.status_code == 201, response.text
    response = await client.delete("/v1/memories", params={"user_id": "many"})
    assert response.status_code == 200, response.text
    assert response.json()["deleted"] == 2000
    assert await list_all(client, user_id="many") == []


async def test_delete_scope_combines_scope_ids(client: httpx.AsyncClient) -> None:
    keep = await add_one(client, "one", user_id="alice", run_id="r1")
    await add_one(client, "two", user_id="alice", run_id="r2")
    response = await client.delete("/v1/memories", params={"user_id": "alice", "run_id": "r2"})
    assert response.json()["deleted"] == 1
    assert [m["id"] for m in await list_all(client)] == [keep]


@pytest.mark.parametrize("params", [{}, {"user_id": ""}, {"project_id": "x"}])
async def test_delete_scope_needs_a_scope(client: httpx.AsyncClient,
                                          params: dict[str, str]) -> None:
    await add_one(client, "must survive")
    response = await client.delete("/v1/memories", params=params)
    assert_error(response, 422, "validation_error")
    assert len(await list_all(client)) == 1


# --- GET /v1/memories/{id}/history ----------------------------------------------------


async def test_history_records_every_change(client: httpx.AsyncClient) -> None:
    added = await add(client, "Wants to learn to surf.", metadata={"topic": "hobby"})
    memory_id = added.json()["results"][0]["id"]
    add_request = added.headers["x-request-id"]

    patched = await client.patch(f"/v1/memories/{memory_id}",
                                 json={"text": "Learned to surf in Peniche.",
                                       "metadata": {"topic": "sport"}})
    assert patched.status_code == 200, patched.text
    patch_request = patched.headers["x-request-id"]

    events = await history(client, memory_id)
    assert [e["event"] for e in events] == ["ADD", "UPDATE"]
    added_metadata = {"topic": "hobby", "role": "user", "message_index": 0}
    assert [(e["old_memory"], e["new_memory"], e["old_metadata"], e["new_metadata"])
            for e in events] == [
        (None, "Wants to learn to surf.", None, added_metadata),
        ("Wants to learn to surf.", "Learned to surf in Peniche.", added_metadata,
         {"topic": "sport"}),
    ]
    assert [e["request_id"] for e in events] == [add_request, patch_request]
    assert len({add_request, patch_request}) == 2
    assert all(e["memory_id"] == memory_id for e in events)
    assert len({e["id"] for e in events}) == 2
    assert events[0]["actor_key_id"] is not None
    assert {e["actor_key_id"] for e in events} == {events[0]["actor_key_id"]}
    created = [timestamp(e["created_at"]) for e in events]
    assert created == sorted(created)


async def test_history_metadata_only_update(client: httpx.AsyncClient) -> None:
    memory_id = await add_one(client, "Reads science fiction.")
    await client.patch(f"/v1/memories/{memory_id}", json={"metadata": {"genre": "scifi"}})
    update = (await history(client, memory_id))[1]
    assert update["event"] == "UPDATE"
    assert update["old_memory"] == update["new_memory"] == "Reads science fiction."
    assert update["old_metadata"] == {"role": "user", "message_index": 0}
    assert update["new_metadata"] == {"genre": "scifi"}


async def test_an_erased_memory_has_no_history(client: httpx.AsyncClient) -> None:
    memory_id = await add_one(client, "Wants to learn to surf.")
    await client.patch(f"/v1/memories/{memory_id}", json={"text": "Surfs in Peniche."})
    deleted = await client.delete(f"/v1/memories/{memory_id}",
                                  headers={"X-Request-ID": "client-chosen.id:42"})
    assert deleted.status_code == 200, deleted.text
    assert deleted.headers["x-request-id"] == "client-chosen.id:42"
    assert deleted.json()["erased"]["history_events"] == 2
    assert_error(await client.get(f"/v1/memories/{memory_id}/history"), 404, "not_found")


async def test_history_of_unknown_memory_is_404(client: httpx.AsyncClient) -> None:
    assert_error(await client.get(f"/v1/memories/{NOWHERE}/history"), 404, "not_found")


# --- idempotency ----------------------------------------------------------------------


async def test_idempotency_key_in_body_replays_the_response(client: httpx.AsyncClient,
                                                            database: Database) -> None:
    body = {"messages": [message("Booked a trip to Kyoto."), message("Leaving in May.")],
            "user_id": "u1", "infer": False, "idempotency_key": "trip-1"}
    first = await client.post("/v1/memories", json=body)
    assert first.status_code == 201, first.text
    counts = await row_counts(database)
    assert counts["memories"] == 2
    assert counts["memory_events"] == 2

    for _ in range(2):
        again = await client.post("/v1/memories", json=body)
        assert again.status_code == 201, again.text
        assert again.json() == first.json()
        assert [r["event"] for r in again.json()["results"]] == ["ADD", "ADD"]
    assert await row_counts(database) == counts


async def test_idempotency_key_header_replays_the_response(client: httpx.AsyncClient,
                                                           database: Database) -> None:
    body = {"messages": [message("Bought a sourdough starter.")], "user_id": "u1",
            "infer": False}
    first = await client.post("/v1/memories", json=body, headers={"Idempotency-Key": "bread"})
    assert first.status_code == 201, first.text
    counts = await row_counts(database)

    again = await client.post("/v1/memories", json=body, headers={"Idempotency-Key": "bread"})
    assert (again.status_code, again.json()) == (201, first.json())
    # The header and the body field name the same key.
    in_body = await client.post("/v1/memories", json={**body, "idempotency_key": "bread"})
    assert (in_body.status_code, in_body.json()) == (201, first.json())
    both = await client.post("/v1/memories", json={**body, "idempotency_key": "bread"},
                             headers={"Idempotency-Key": "bread"})
    assert (both.status_code, both.json()) == (201, first.json())
    assert await row_counts(database) == counts


async def test_idempotency_key_reused_with_other_body_conflicts(client: httpx.AsyncClient,
                                                                database: Database) -> None:
    body = {"messages": [message("Plays padel on Tuesdays.")], "user_id": "u1",
            "infer": False, "idempotency_key": "k-1"}
    assert (await client.post("/v1/memories", json=body)).status_code == 201
    counts = await row_counts(database)
    listed = await list_all(client)

    for changed in ({**body, "messages": [message("Plays padel on Fridays.")]},
                    {**body, "user_id": "u2"},
                    {**body, "metadata": {"x": 1}}):
        response = await client.post("/v1/memories", json=changed)
        assert_error(response, 409, "idempotency_key_reused")
    header = await client.post("/v1/memories", headers={"Idempotency-Key": "k-1"},
                               json={**body, "idempotency_key": None, "user_id": "u3"})
    assert_error(header, 409, "idempotency_key_reused")
    assert await row_counts(database) == counts
    assert await list_all(client) == listed


async def test_idempotency_header_and_body_keys_must_agree(client: httpx.AsyncClient,
                                                           database: Database) -> None:
    response = await client.post("/v1/memories", headers={"Idempotency-Key": "one"}, json={
        "messages": [message("Anything.")], "user_id": "u1", "infer": False,
        "idempotency_key": "two"})
    assert_error(response, 422, "validation_error")
    assert (await row_counts(database))["memories"] == 0


async def test_failed_request_does_not_consume_its_idempotency_key(
        client: httpx.AsyncClient, database: Database) -> None:
    body = {"messages": [message("Keeps bees.")], "user_id": "u1", "idempotency_key": "bees",
            "infer": False}
    blank = {**body, "messages": [message("   ")]}  # refused after the key was claimed
    assert_error(await client.post("/v1/memories", json=blank), 422, "validation_error")
    assert await row_counts(database) == {"memories": 0, "memory_events": 0,
                                          "idempotency_keys": 0}
    retry = await client.post("/v1/memories", json=body)
    assert retry.status_code == 201, retry.text
    assert retry.json()["results"][0]["event"] == "ADD"


async def test_concurrent_idempotent_requests_write_once(client: httpx.AsyncClient,
                                                         database: Database) -> None:
    body = {"messages": [message("Moved to Porto in 2021."), message("Works remotely.")],
            "user_id": "u1", "infer": False, "idempotency_key": "move"}
    responses = await asyncio.gather(*(client.post("/v1/memories", json=body)
                                       for _ in range(8)))
    assert [r.status_code for r in responses] == [201] * 8, [r.text for r in responses]
    assert all(r.json() == responses[0].json() for r in responses)
    assert [r["event"] for r in responses[0].json()["results"]] == ["ADD", "ADD"]
    assert await row_counts(database) == {"memories": 2, "memory_events": 2,
                                          "idempotency_keys": 1}


async def test_concurrent_identical_adds_are_each_kept(client: httpx.AsyncClient,
                                                      database: Database) -> None:
    """Ten clients saying the same at once said it ten times: ten messages, none lost."""
    body = {"messages": [message("Is training for a triathlon.")], "user_id": "u1",
            "infer": False}
    responses = await asyncio.gather(*(client.post("/v1/memories", json=body)
                                       for _ in range(10)))
    assert [r.status_code for r in responses] == [201] * 10, [r.text for r in responses]
    results = [r.json()["results"][0] for r in responses]
    assert [r["event"] for r in results] == ["ADD"] * 10
    assert len({r["id"] for r in results}) == 10
    assert sorted(m["id"] for m in await list_all(client)) == sorted(r["id"] for r in results)
    assert await row_counts(database) == {"memories": 10, "memory_events": 10,
                                          "idempotency_keys": 0}


# --- expiry ---------------------------------------------------------------------------


@pytest.mark.parametrize("past", [
    (datetime.now(UTC) - timedelta(minutes=5)).isoformat(),
    "2001-01-01T00:00:00Z",
])
async def test_expired_memory_is_not_listed_or_searchable(client: httpx.AsyncClient,
                                                          past: str) -> None:
    live = await add_one(client, "Enjoys kayaking on rivers.")
    expired = await add_one(client, "Enjoys kayaking on lakes.", expires_at=past)

    assert [m["id"] for m in await list_all(client)] == [live]
    assert [m["id"] for m in await list_all(client, user_id="u1")] == [live]
    hits = await search(client, "kayaking", top_k=100)
    assert [h["id"] for h in hits] == [live]
    assert_error(await client.get(f"/v1/memories/{expired}"), 404, "not_found")
    assert_error(await client.patch(f"/v1/memories/{expired}", json={"text": "x"}), 404,
                 "not_found")
    # Its text is free again: adding it makes a fresh, live memory.
    again = await add_one(client, "Enjoys kayaking on lakes.")
    assert again != expired
    assert {m["id"] for m in await list_all(client)} == {live, again}
    # Erasing the scope erases the expired one too.
    assert (await client.delete("/v1/memories", params={"user_id": "u1"})).json()[
        "deleted"] == 3


async def test_future_expiry_is_visible_until_then(client: httpx.AsyncClient) -> None:
    later = datetime.now(UTC) + timedelta(days=3)
    memory_id = await add_one(client, "Has a dentist appointment on Friday.",
                              expires_at=later.isoformat())
    memory = (await client.get(f"/v1/memories/{memory_id}")).json()
    assert datetime.fromisoformat(memory["expires_at"]) == later
    assert [h["id"] for h in await search(client, "dentist appointment")] == [memory_id]
