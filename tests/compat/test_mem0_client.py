"""The real, unchanged ``mem0ai`` clients (``MemoryClient`` and ``AsyncMemoryClient``) against
the live server's Mem0 Platform routes: ``host`` is the server's ``/mem0``. Every scenario
runs once per client; the sync client's blocking calls are made in a worker thread.
Consolidation runs in-process with the scripted LLM (``Brain``)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from mem0 import AsyncMemoryClient, MemoryClient
from mem0.exceptions import MemoryNotFoundError, ValidationError
from mem0.memory import telemetry

from tests.consolidate.scripted_brain import Brain, ends
from tests.scripted_llm import ScriptedLLM

KeyFactory = Callable[..., Awaitable[str]]
MEMORY_KEYS = {"id", "memory", "user_id", "agent_id", "run_id", "app_id", "metadata",
               "categories", "immutable", "expiration_date", "created_at", "updated_at", "kind"}


class Mem0:
    """Either Mem0 client behind one awaitable face, so each scenario is written once."""

    def __init__(self, client: MemoryClient | AsyncMemoryClient) -> None:
        self.client = client

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        method = getattr(self.client, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            if isinstance(self.client, AsyncMemoryClient):
                return await method(*args, **kwargs)
            return await asyncio.to_thread(method, *args, **kwargs)

        return call


async def open_client(kind: str, host: str, api_key: str) -> MemoryClient | AsyncMemoryClient:
    """Constructing either client pings the server (``GET /v1/ping/``)."""
    factory = MemoryClient if kind == "sync" else AsyncMemoryClient
    return await asyncio.to_thread(factory, api_key=api_key, host=host)


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def host(live_server: Any) -> str:
    return f"{live_server.base_url}/mem0"


@pytest.fixture
async def mem0(kind: str, host: str, api_key_factory: KeyFactory) -> AsyncIterator[Mem0]:
    client = await open_client(kind, host, await api_key_factory())
    yield Mem0(client)
    if isinstance(client, AsyncMemoryClient):
        await client.async_client.aclose()
    else:
        client.client.close()


@pytest.fixture
def user() -> str:
    return f"user-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def brain(scripted_llm: ScriptedLLM) -> Brain:
    thinking = Brain(facts={"I like jazz": ["User likes jazz"],
                            "I live in Porto": ["User lives in Porto"],
                            "I moved to Lisbon": ["User lives in Lisbon"]},
                     still_true=ends(("User lives in Lisbon", "User lives in Porto")))
    scripted_llm.responder = thinking
    return thinking


def test_the_clients_send_no_telemetry() -> None:
    assert telemetry.MEM0_TELEMETRY is False
    assert telemetry.client_telemetry.posthog is None


async def test_constructing_pings_with_the_token_scheme(kind: str, host: str,
                                                        api_key_factory: KeyFactory) -> None:
    client = await open_client(kind, host, await api_key_factory())
    assert client.user_email is None
    assert client.org_id == client.project_id  # no organisations: a project is its own
    uuid.UUID(client.project_id)
    assert client.api_key.startswith("anm_")

    with pytest.raises(ValueError, match="invalid or revoked API key"):
        await open_client(kind, host, "anm_nothing_nothing")


async def test_verbatim_add_get_update_history_delete(mem0: Mem0, user: str) -> None:
    added = await mem0.add([{"role": "user", "content": "I keep bees"},
                            {"role": "assistant", "content": "Noted."}],
                           user_id=user, app_id="garden", infer=False,
                           metadata={"topic": "hobby"})

    assert (added["status"], added["event_id"]) == ("SUCCEEDED", None)
    assert [(r["memory"], r["event"]) for r in added["results"]] == [
        ("I keep bees", "ADD"), ("Noted.", "ADD")]
    memory_id = added["results"][0]["id"]

    got = await mem0.get(memory_id)
    assert set(got) == MEMORY_KEYS
    assert (got["id"], got["memory"], got["user_id"], got["app_id"], got["kind"]) == (
        memory_id, "I keep bees", user, "garden", "message")
    assert got["metadata"] == {"topic": "hobby", "role": "user", "message_index": 0}
    assert (got["categories"], got["immutable"], got["expiration_date"]) == ([], False, None)

    updated = await mem0.update(memory_id, text="I keep two hives of bees",
                                metadata={"topic": "bees"})
    assert (updated["id"], updated["memory"]) == (memory_id, "I keep two hives of bees")
    assert (updated["metadata"], updated["app_id"]) == ({"topic": "bees"}, "garden")

    history = await mem0.history(memory_id)
    assert [(h["event"], h["old_memory"], h["new_memory"]) for h in history] == [
        ("ADD", None, "I keep bees"), ("UPDATE", "I keep bees", "I keep two hives of bees")]
    assert all(h["memory_id"] == memory_id for h in history)

    assert await mem0.delete(memory_id) == {"message": "Memory deleted successfully!"}
    with pytest.raises(MemoryNotFoundError, match=f"memory {memory_id} not found"):
        await mem0.get(memory_id)


async def test_inferred_add_is_queued_as_an_event_then_searchable(
    mem0: Mem0, user: str, brain: Brain
) -> None:
    queued = await mem0.add("I like jazz", user_id=user)

    assert set(queued) == {"message", "status", "event_id"}
    assert (queued["status"], queued["message"]) == (
        "PENDING", "Memory processing has been queued for background execution")
    event = await _finished_event(mem0, queued["event_id"])
    assert [(r["memory"], r["event"]) for r in event["results"]] == [("User likes jazz", "ADD")]

    # async_mode=False answers once consolidated; a superseded fact reads as Mem0's UPDATE.
    await mem0.add("I live in Porto", user_id=user, async_mode=False)
    moved = await mem0.add("I moved to Lisbon", user_id=user, async_mode=False)
    assert moved["status"] == "SUCCEEDED"
    assert [(r["memory"], r["event"], r["previous_memory"]) for r in moved["results"]] == [
        ("User lives in Lisbon", "UPDATE", "User lives in Porto")]

    found = await mem0.search("Where does the user live?",
                              filters={"AND": [{"user_id": user}, {"kind": "fact"}]}, top_k=5)
    assert set(found) == {"results"}
    assert [hit["memory"] for hit in found["results"]] == ["User lives in Lisbon",
                                                          "User likes jazz"]
    assert set(found["results"][0]) == MEMORY_KEYS | {"score"}
    assert isinstance(found["results"][0]["score"], float)
    # latest_only=False searches superseded memories too.
    every = await mem0.search("Where does the user live?", latest_only=False, top_k=10,
                              filters={"AND": [{"user_id": user}, {"kind": {"in": ["fact"]}}]})
    assert "User lives in Porto" in [hit["memory"] for hit in every["results"]]
    assert brain.extract_calls == 3


async def _finished_event(mem0: Mem0, event_id: str) -> dict[str, Any]:
    """Polls ``GET /v1/event/{id}/`` with the client's own HTTP client (2.2 has no method)."""
    client = mem0.client
    for _ in range(600):
        if isinstance(client, AsyncMemoryClient):
            response = await client.async_client.get(f"/v1/event/{event_id}/")
        else:
            response = await asyncio.to_thread(client.client.get, f"/v1/event/{event_id}/")
        event: dict[str, Any] = response.raise_for_status().json()
        if event["status"] in ("SUCCEEDED", "FAILED"):
            assert event["status"] == "SUCCEEDED"
            return event
        await asyncio.sleep(0.05)
    raise AssertionError("the event did not finish")


async def test_get_all_filters_and_numbered_pages(mem0: Mem0, user: str) -> None:
    other = f"{user}-other"
    await mem0.add([{"role": "user", "content": f"note {n}"} for n in range(5)],
                   user_id=user, infer=False, metadata={"topic": "a"})
    await mem0.add("other note", user_id=other, agent_id="helper", app_id="shop", infer=False,
                   metadata={"topic": "b", "rank": 3})

    first = await mem0.get_all(filters={"user_id": user}, page=1, page_size=2)
    assert set(first) == {"count", "next", "previous", "results"}
    assert (first["count"], first["previous"]) == (5, None)
    assert dict(httpx.URL(first["next"]).params) == {"page": "2", "page_size": "2"}
    assert [m["memory"] for m in first["results"]] == ["note 4", "note 3"]  # newest first
    last = await mem0.get_all(filters={"user_id": user}, page=3, page_size=2)
    assert ([m["memory"] for m in last["results"]], last["next"]) == (["note 0"], None)
    assert dict(httpx.URL(last["previous"]).params) == {"page": "2", "page_size": "2"}

    async def memories(filters: dict[str, Any]) -> list[str]:
        page = await mem0.get_all(filters=filters, page_size=50)
        return sorted(m["memory"] for m in page["results"])

    everyone = sorted([f"note {n}" for n in range(5)] + ["other note"])
    assert await memories({"OR": [{"user_id": user}, {"user_id": other}]}) == everyone
    assert await memories({"user_id": {"in": [other]}}) == ["other note"]
    assert await memories({"AND": [{"agent_id": "*"}, {"created_at": {"gte": "2020-01-01"}}]}) \
        == ["other note"]
    assert await memories({"NOT": [{"user_id": user}]}) == ["other note"]
    notes = [f"note {n}" for n in range(5)]
    assert await memories({"NOT": {"user_id": other}}) == notes
    assert await memories({"NOT": [{"user_id": other}, {"agent_id": "nobody"}]}) == everyone
    assert await memories({"app_id": "shop"}) == ["other note"]
    assert await memories({"metadata": {"topic": "a"}, "user_id": {"icontains": user.upper()}}) \
        == [f"note {n}" for n in range(5)]
    assert await memories({"metadata.rank": {"gte": 2}}) == ["other note"]
    assert await memories({"created_at": {"lte": "2001-01-01"}}) == []


async def test_users_batches_delete_all_and_reset(mem0: Mem0, user: str) -> None:
    added = await mem0.add([{"role": "user", "content": "one"}, {"role": "user", "content": "two"}],
                           user_id=user, run_id="run-1", infer=False)
    first, second = (r["id"] for r in added["results"])
    await mem0.add("agent note", agent_id="helper", infer=False)

    listed = (await mem0.users())["results"]
    assert sorted((e["type"], e["name"], e["total_memories"]) for e in listed) == [
        ("agent", "helper", 1), ("run", "run-1", 2), ("user", user, 2)]
    assert {"id", "name", "type", "total_memories", "created_at", "updated_at"} <= set(listed[0])

    assert await mem0.batch_update([{"memory_id": first, "text": "one, changed"},
                                    {"memory_id": second, "metadata": {"n": 2}}]) == {
        "message": "Successfully updated 2 memories"}
    assert (await mem0.get(first))["memory"] == "one, changed"
    assert (await mem0.get(second))["metadata"] == {"n": 2}
    assert await mem0.batch_delete([{"memory_id": first}]) == {
        "message": "Successfully deleted 1 memories"}
    with pytest.raises(MemoryNotFoundError):
        await mem0.get(first)

    assert await mem0.delete_users(user_id=user) == {"message": "Entity deleted successfully."}
    assert [e["name"] for e in (await mem0.users())["results"]] == ["helper"]
    assert await mem0.delete_all(agent_id="helper") == {
        "message": "Memories deleted successfully!"}
    assert (await mem0.users())["results"] == []

    await mem0.add("again", user_id=user, infer=False)
    assert await mem0.reset() == {
        "message": "Client reset successful. All users and memories deleted."}
    assert (await mem0.get_all(filters={"user_id": user}))["count"] == 0


async def test_what_mem0_asks_and_anamnesis_cannot_do_is_refused_by_name(
    mem0: Mem0, user: str
) -> None:
    memory_id = (await mem0.add("kept", user_id=user, infer=False))["results"][0]["id"]

    refusals: list[tuple[Callable[[], Awaitable[Any]], str]] = [
        (lambda: mem0.search("x", filters={"user_id": {"regex": "x"}}),
         "unknown operator 'regex'"),
        (lambda: mem0.search("x", filters={"categories": {"contains": "food"}}),
         "filters.categories: not supported"),
        (lambda: mem0.search("x", filters={"metadata": {"topic": "*"}}),
         "the wildcard '*' applies to user_id"),
        (lambda: mem0.get_all(filters={"colour": "red"}), "unknown filter field 'colour'"),
        (lambda: mem0.get_all(filters={"AND": {"user_id": user}}),
         "filters.AND: must be a non-empty list of filter objects"),
        (lambda: mem0.get_all(filters={"OR": [{"user_id": user}, "everyone"]}),
         "filters.OR[1]: must be a filter object"),
        (lambda: mem0.add("x", user_id=user, colour="red"), "colour: Extra inputs"),
        (lambda: mem0.add("x", user_id=user, custom_categories=[{"a": "b"}]),
         "custom_categories: not supported by Anamnesis"),
        (lambda: mem0.add("x", user_id=user, immutable=True),
         "immutable: not supported by Anamnesis"),
        (lambda: mem0.get_all(filters={"user_id": user}, show_expired=True),
         "show_expired: not supported by Anamnesis"),
        (lambda: mem0.add("x", app_id="shop"), "an app_id alone names no Anamnesis scope"),
        (lambda: mem0.add("x", filters={"user_id": user, "topic": "a"}),
         "an add's filters name entity ids only"),
        (lambda: mem0.add("x", user_id=user, infer=False, custom_instructions="be brief"),
         "instructions applies to infer=true only"),
        (lambda: mem0.search("x", filters={"user_id": user}, categories=["food"]),
         "categories: not supported by Anamnesis"),
        (lambda: mem0.update(memory_id, expiration_date=None), "expiration_date: not supported"),
        (lambda: mem0.update(memory_id, timestamp=1700000000), "timestamp: not supported"),
        (lambda: mem0.delete(memory_id, delete_linked=True), "delete_linked: not supported"),
        (lambda: mem0.delete_users(app_id="shop"), "entity type 'app'"),
        (lambda: mem0.delete_all(app_id="shop"), "app_id: an app is no Anamnesis scope"),
        (lambda: mem0.delete_all(), "give at least one of user_id, agent_id, run_id"),
        (lambda: mem0.batch_delete([{"memory_id": memory_id}, {"memory_id": str(uuid.uuid4())}]),
         "not found"),
    ]
    for call, detail in refusals:
        with pytest.raises((ValidationError, MemoryNotFoundError)) as raised:
            await call()
        assert detail in raised.value.message, (detail, raised.value.message)
        assert set(raised.value.details) == {"error", "detail", "request_id"}
    # Nothing was stored or erased by the refused requests.
    listed = await mem0.get_all(filters={"user_id": user})
    assert [m["memory"] for m in listed["results"]] == ["kept"]


async def test_v1_and_v2_routes_over_http(host: str, api_key_factory: KeyFactory, user: str,
                                          brain: Brain) -> None:
    """The routes older Mem0 clients and integrations call, with the hints they send."""
    key = await api_key_factory()
    said = [{"role": "user", "content": "I like jazz"}]
    async with httpx.AsyncClient(base_url=host, headers={"Authorization": f"Token {key}"},
                                 timeout=60) as http:
        queued = (await http.post("/v1/memories/", json={
            "messages": said, "user_id": user, "output_format": "v1.1", "version": "v2",
            "enable_graph": True})).raise_for_status().json()
        [event] = queued["results"]
        assert (set(event), event["status"]) == ({"message", "status", "event_id"}, "PENDING")
        for _ in range(600):
            job = (await http.get(f"/v1/event/{event['event_id']}/")).raise_for_status().json()
            if job["status"] != "PENDING" and job["status"] != "RUNNING":
                break
            await asyncio.sleep(0.05)
        assert (job["status"], [r["memory"] for r in job["results"]]) == (
            "SUCCEEDED", ["User likes jazz"])

        # The same fact again: consolidation confirms it (NOOP), which Mem0 does not report.
        again = (await http.post("/v1/memories/", json={
            "messages": said, "user_id": user, "async_mode": False})).raise_for_status().json()
        assert (again["results"], again["status"]) == ([], "SUCCEEDED")
        verbatim = (await http.post("/v1/memories/", json={
            "messages": [{"role": "user", "content": "Stored as said"}], "user_id": user,
            "infer": False, "timestamp": 1700000000, "expiration_date": "2999-01-01",
            "immutable": False})
        ).raise_for_status().json()
        stored = (await http.get(f"/v1/memories/{verbatim['results'][0]['id']}/")).json()
        assert stored["expiration_date"] == "2999-01-01"

        found = (await http.post("/v2/memories/search/", json={
            "query": "Which music?", "top_k": 3, "rerank": True, "keyword_search": True,
            "fields": ["memory"], "user_id": user,
            "filters": {"AND": [{"created_at": "*"}, {"kind": "fact"}]}})).raise_for_status()
        assert [hit["memory"] for hit in found.json()["results"]] == ["User likes jazz"]
        listed = (await http.post("/v2/memories/", params={"page": 1, "page_size": 10}, json={
            "filters": {"user_id": user}, "start_date": "2000-01-01",
            "end_date": "2999-01-01T00:00:00Z", "version": "v2", "show_expired": False})
        ).raise_for_status().json()
        assert sorted(m["memory"] for m in listed["results"]) == [
            "I like jazz", "I like jazz", "Stored as said", "User likes jazz"]
        assert (listed["count"], listed["next"], listed["previous"]) == (4, None, None)
        too_far = await http.post("/v2/memories/", params={"page": 10**30}, json={
            "filters": {"user_id": user}})
        assert (too_far.status_code, too_far.json()["error"]) == (422, "validation_error")
