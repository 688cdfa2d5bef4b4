"""The Mem0 OSS REST server's routes (``/mem0/oss``) over real HTTP against the live server,
with the payloads Mem0's docs show and its ``X-API-Key`` header."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from app.auth import generate_key
from app.store.db import Database
from app.store.repositories import keys as key_repository
from tests.consolidate.scripted_brain import Brain
from tests.scripted_llm import ScriptedLLM

KeyFactory = Callable[..., Awaitable[str]]


@pytest.fixture
def project() -> str:
    return f"oss-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def oss(live_server: Any, api_key_factory: KeyFactory,
              project: str) -> AsyncIterator[httpx.AsyncClient]:
    key = await api_key_factory(project)
    async with httpx.AsyncClient(base_url=f"{live_server.base_url}/mem0/oss",
                                 headers={"X-API-Key": key}, timeout=60) as http:
        yield http


@pytest.fixture
def user() -> str:
    return f"user-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def brain(scripted_llm: ScriptedLLM) -> Brain:
    thinking = Brain(facts={"I like jazz": ["User likes jazz"]})
    scripted_llm.responder = thinking
    return thinking


def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


def refused(response: httpx.Response, status: int, detail: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail", "request_id"}
    assert detail in body["detail"]


async def test_memories_round_trip(oss: httpx.AsyncClient, user: str, brain: Brain) -> None:
    stored = ok(await oss.post("/memories", json={
        "messages": [{"role": "user", "content": "I keep bees"}],
        "user_id": user, "metadata": {"topic": "hobby"}, "infer": False}))
    assert [(r["memory"], r["event"]) for r in stored["results"]] == [("I keep bees", "ADD")]
    memory_id = stored["results"][0]["id"]
    # Inferred: answered once consolidated, as the OSS server (which runs it in the request).
    inferred = ok(await oss.post("/memories", json={
        "messages": [{"role": "user", "content": "I like jazz"},
                     {"role": "assistant", "content": "Nice."}], "user_id": user}))
    assert inferred["status"] == "SUCCEEDED"
    assert [(r["memory"], r["event"]) for r in inferred["results"]] == [("User likes jazz", "ADD")]

    listed = ok(await oss.get("/memories", params={"user_id": user}))
    assert sorted(m["memory"] for m in listed["results"]) == [
        "I keep bees", "I like jazz", "Nice.", "User likes jazz"]

    got = ok(await oss.get(f"/memories/{memory_id}"))
    assert (got["id"], got["memory"], got["user_id"], got["metadata"]["topic"]) == (
        memory_id, "I keep bees", user, "hobby")
    assert ok(await oss.put(f"/memories/{memory_id}", json={"text": "I keep two hives"})) == {
        "message": "Memory updated successfully!"}
    ok(await oss.put(f"/memories/{memory_id}", json={"data": "I keep three hives"}))
    history = ok(await oss.get(f"/memories/{memory_id}/history"))
    assert [(h["event"], h["new_memory"]) for h in history] == [
        ("ADD", "I keep bees"), ("UPDATE", "I keep two hives"), ("UPDATE", "I keep three hives")]

    found = ok(await oss.post("/search", json={"query": "What music does the user like?",
                                               "user_id": user, "limit": 1}))
    assert [(h["memory"], h["kind"]) for h in found["results"]] == [("User likes jazz", "fact")]
    assert isinstance(found["results"][0]["score"], float)
    # Mem0 OSS reads a filter key it does not know as a metadata key.
    topical = ok(await oss.post("/search", json={"query": "bees", "user_id": user,
                                                 "filters": {"topic": "hobby"}, "top_k": 5}))
    assert [h["memory"] for h in topical["results"]] == ["I keep three hives"]

    assert ok(await oss.delete(f"/memories/{memory_id}")) == {
        "message": "Memory deleted successfully"}
    refused(await oss.get(f"/memories/{memory_id}"), 404, "not found")
    assert ok(await oss.delete("/memories", params={"user_id": user})) == {
        "message": "All relevant memories deleted"}
    assert ok(await oss.get("/memories", params={"user_id": user})) == {"results": []}


async def test_reset_takes_an_admin_key(oss: httpx.AsyncClient, live_server: Any,
                                        database: Database, project: str, user: str) -> None:
    ok(await oss.post("/memories", json={"messages": [{"role": "user", "content": "a"}],
                                         "user_id": user, "infer": False}))
    ok(await oss.post("/memories", json={"messages": [{"role": "user", "content": "b"}],
                                         "agent_id": "helper", "run_id": "r1", "infer": False}))
    writer = await _key(database, project, ("read", "write"))
    async with httpx.AsyncClient(base_url=f"{live_server.base_url}/mem0/oss",
                                 headers={"X-API-Key": writer}) as plain:
        refused(await plain.post("/reset"), 403, "this API key may not admin")
        assert len(ok(await plain.get("/memories", params={"user_id": user}))["results"]) == 1

    assert ok(await oss.post("/reset")) == {"message": "All memories reset"}
    for scope in ({"user_id": user}, {"agent_id": "helper"}, {"run_id": "r1"}):
        assert ok(await oss.get("/memories", params=scope)) == {"results": []}


async def _key(database: Database, project: str, scopes: tuple[str, ...]) -> str:
    async with database.session_scope() as session:
        owner = await key_repository.get_or_create_project(session, project)
        new = generate_key()
        await key_repository.add_key(session, project_id=owner.id, prefix=new.prefix,
                                     key_hash=new.key_hash, name=None, scopes=scopes)
    return new.plaintext


async def test_bad_requests_are_refused_by_name(oss: httpx.AsyncClient, live_server: Any,
                                                user: str) -> None:
    said = [{"role": "user", "content": "x"}]
    memory_id = ok(await oss.post("/memories", json={"messages": said, "user_id": user,
                                                     "infer": False}))["results"][0]["id"]

    refused(await oss.post("/memories", json={"messages": said, "user_id": user,
                                              "memory_type": "procedural_memory"}),
            422, "memory_type: not supported by Anamnesis")
    refused(await oss.post("/memories", json={"messages": said, "user_id": user, "colour": 1}),
            422, "colour: Extra inputs are not permitted")
    refused(await oss.post("/search", json={"query": "x", "filters": {"user_id": {"like": "x"}}}),
            422, "unknown operator 'like'")
    refused(await oss.put(f"/memories/{memory_id}", json={"text": "a", "data": "b"}),
            422, "give the new text as text or as data, not both")
    refused(await oss.get("/memories"), 422, "give at least one of user_id, agent_id, run_id")
    refused(await oss.delete("/memories"), 422, "give at least one of user_id, agent_id, run_id")
    async with httpx.AsyncClient(base_url=f"{live_server.base_url}/mem0/oss",
                                 headers={"X-API-Key": "anm_no_key"}) as stranger:
        refused(await stranger.get("/memories", params={"user_id": user}), 401,
                "invalid or revoked API key")
    async with httpx.AsyncClient(base_url=f"{live_server.base_url}/mem0",
                                 headers={"Authorization": "Token anm_no_key"}) as stranger:
        refused(await stranger.get("/v1/ping/"), 401, "invalid or revoked API key")
    # Nothing stored or changed by the refused requests.
    assert [m["memory"] for m in ok(await oss.get("/memories", params={"user_id": user}))[
        "results"]] == ["x"]
