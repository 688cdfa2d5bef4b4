"""End-to-end tests of the Python SDK against the live server (real Postgres and embeddings).

Every scenario runs twice, once per client: ``Anamnesis`` (its blocking calls are made in a
worker thread so the session event loop stays free) and ``AsyncAnamnesis``. Each test gets a
fresh project, so tests never see each other's memories.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from anamnesis import (
    Anamnesis,
    AnamnesisError,
    AsyncAnamnesis,
    AuthenticationError,
    ConflictError,
    ConsolidationNotConfiguredError,
    IdempotencyKeyReusedError,
    InvalidFilterError,
    Memory,
    NotFoundError,
    ValidationError,
)

KeyFactory = Callable[..., Awaitable[str]]


class _SyncRecorder(httpx.HTTPTransport):
    def __init__(self, log: list[httpx.Request]) -> None:
        super().__init__()
        self.log = log

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.log.append(request)
        return super().handle_request(request)


class _AsyncRecorder(httpx.AsyncHTTPTransport):
    def __init__(self, log: list[httpx.Request]) -> None:
        super().__init__()
        self.log = log

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.log.append(request)
        return await super().handle_async_request(request)


class Facade:
    """Awaitable facade over either SDK client, so each scenario is written once.

    ``await sdk.add(...)`` calls the async client directly, or the sync one in a thread.
    ``requests`` records every HTTP request the SDK sent.
    """

    def __init__(self, sdk: Anamnesis | AsyncAnamnesis, requests: list[httpx.Request]) -> None:
        self.sdk = sdk
        self.requests = requests

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        method = getattr(self.sdk, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            if isinstance(self.sdk, AsyncAnamnesis):
                return await method(*args, **kwargs)
            return await asyncio.to_thread(method, *args, **kwargs)

        return call

    async def get_all(self, **kwargs: Any) -> list[Memory]:
        sdk = self.sdk
        if isinstance(sdk, AsyncAnamnesis):
            return [memory async for memory in sdk.get_all(**kwargs)]
        return await asyncio.to_thread(lambda: list(sdk.get_all(**kwargs)))


@asynccontextmanager
async def open_client(kind: str, base_url: str, api_key: str) -> AsyncIterator[Facade]:
    log: list[httpx.Request] = []
    if kind == "sync":
        with Anamnesis(base_url, api_key, transport=_SyncRecorder(log)) as sync_sdk:
            yield Facade(sync_sdk, log)
    else:
        async with AsyncAnamnesis(base_url, api_key, transport=_AsyncRecorder(log)) as async_sdk:
            yield Facade(async_sdk, log)


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def sdk(kind: str, live_server: Any, api_key_factory: KeyFactory) -> AsyncIterator[Facade]:
    api_key = await api_key_factory()
    async with open_client(kind, live_server.base_url, api_key) as opened:
        yield opened


@pytest.fixture
def user() -> str:
    return f"user-{uuid.uuid4().hex[:12]}"


async def _add_one(sdk: Facade, text: str, user: str, **kwargs: Any) -> str:
    result = await sdk.add(text, user_id=user, infer=False, **kwargs)
    assert len(result.results) == 1
    assert result.results[0].event == "ADD"
    assert result.results[0].memory == text
    return str(result.results[0].id)


async def test_health(sdk: Facade) -> None:
    assert await sdk.health() is True


async def test_add_verbatim_then_search_ranks_it_first(sdk: Facade, user: str) -> None:
    peanuts = await _add_one(sdk, "I am allergic to peanuts", user)
    await _add_one(sdk, "My favourite city is Lisbon", user)
    await _add_one(sdk, "I cycle to work on a red bicycle", user)

    hits = await sdk.search("peanut allergy", user_id=user, top_k=3)

    assert [hit.id for hit in hits][:1] == [peanuts]
    assert len(hits) == 3
    assert all(isinstance(hit.score, float) for hit in hits)
    assert hits[0].score >= hits[1].score >= hits[2].score
    assert hits[0].memory == "I am allergic to peanuts"
    assert hits[0].user_id == user


async def test_search_is_scoped_and_filtered(sdk: Facade, user: str) -> None:
    await _add_one(sdk, "Dinner tonight is pasta", user, metadata={"topic": "food"})
    trip = await _add_one(sdk, "Flying to Tokyo in May", user, metadata={"topic": "travel"})
    await _add_one(sdk, "Flying to Paris in June", f"{user}-other")

    hits = await sdk.search("flights", user_id=user, filters={"metadata.topic": "travel"})
    assert [hit.id for hit in hits] == [trip]
    assert hits[0].metadata["topic"] == "travel"


async def test_re_adding_the_same_text_is_a_noop(sdk: Facade, user: str) -> None:
    first = await _add_one(sdk, "I speak Portuguese", user)
    again = await sdk.add("I speak Portuguese", user_id=user, infer=False)
    assert [(added.id, added.event) for added in again.results] == [(first, "NOOP")]


async def test_get(sdk: Facade, user: str) -> None:
    expires = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    memory_id = await _add_one(
        sdk, "My dog is called Rex", user, agent_id="pet-bot", metadata={"pet": "dog"},
        expires_at=expires,
    )

    memory = await sdk.get(memory_id)

    assert memory.id == memory_id
    assert memory.memory == "My dog is called Rex"
    assert (memory.user_id, memory.agent_id, memory.run_id) == (user, "pet-bot", None)
    assert memory.metadata["pet"] == "dog"  # the server may add keys of its own (e.g. role)
    assert memory.expires_at == expires
    assert memory.created_at.tzinfo is not None
    assert memory.updated_at >= memory.created_at


async def test_get_all_follows_cursors_across_pages(sdk: Facade, user: str) -> None:
    added = {await _add_one(sdk, f"Fact number {n} about the garden", user) for n in range(5)}
    await _add_one(sdk, "Someone else's fact", f"{user}-other")
    sdk.requests.clear()

    memories = await sdk.get_all(user_id=user, page_size=2)

    ids = [memory.id for memory in memories]
    assert len(ids) == 5
    assert set(ids) == added
    pages = [r for r in sdk.requests if r.method == "GET" and r.url.path == "/v1/memories"]
    assert len(pages) == 3
    assert [r.url.params.get("limit") for r in pages] == ["2", "2", "2"]
    assert pages[0].url.params.get("cursor") is None
    assert all(r.url.params.get("cursor") for r in pages[1:])


async def test_update_text_then_history(sdk: Facade, user: str) -> None:
    memory_id = await _add_one(sdk, "I live in Porto", user)

    updated = await sdk.update(memory_id, text="I live in Lisbon")

    assert updated.id == memory_id
    assert updated.memory == "I live in Lisbon"
    assert (await sdk.get(memory_id)).memory == "I live in Lisbon"
    hits = await sdk.search("Which city do I live in?", user_id=user)
    assert [(hit.id, hit.memory) for hit in hits] == [(memory_id, "I live in Lisbon")]
    events = await sdk.history(memory_id)
    assert [event.event for event in events] == ["ADD", "UPDATE"]
    assert all(event.memory_id == memory_id for event in events)
    assert events[0].new_memory == "I live in Porto"
    assert (events[1].old_memory, events[1].new_memory) == ("I live in Porto", "I live in Lisbon")


async def test_update_metadata_replaces_it(sdk: Facade, user: str) -> None:
    memory_id = await _add_one(sdk, "I drink green tea", user, metadata={"v": 1})

    updated = await sdk.update(memory_id, metadata={"v": 2})

    assert updated.memory == "I drink green tea"
    assert updated.metadata == {"v": 2}
    events = await sdk.history(memory_id)
    assert [event.event for event in events] == ["ADD", "UPDATE"]
    assert events[1].old_metadata is not None
    assert events[1].old_metadata["v"] == 1
    assert events[1].new_metadata == {"v": 2}


async def test_delete(sdk: Facade, user: str) -> None:
    memory_id = await _add_one(sdk, "Temporary note", user)

    assert await sdk.delete(memory_id) is None

    with pytest.raises(NotFoundError) as raised:
        await sdk.get(memory_id)
    assert raised.value.status_code == 404
    assert raised.value.code == "not_found"
    assert raised.value.request_id
    with pytest.raises(NotFoundError):
        await sdk.delete(memory_id)
    events = await sdk.history(memory_id)
    assert [event.event for event in events] == ["ADD", "DELETE"]


async def test_delete_all_returns_count(sdk: Facade, user: str) -> None:
    for n in range(3):
        await _add_one(sdk, f"Disposable fact {n}", user)
    keeper = await _add_one(sdk, "Keep me", f"{user}-other")

    assert await sdk.delete_all(user_id=user) == 3

    assert await sdk.get_all(user_id=user) == []
    assert [memory.id for memory in await sdk.get_all(user_id=f"{user}-other")] == [keeper]
    assert await sdk.delete_all(user_id=user) == 0


async def test_delete_all_needs_a_scope_before_sending(sdk: Facade) -> None:
    sdk.requests.clear()
    with pytest.raises(ValueError):
        await sdk.delete_all()
    assert sdk.requests == []


async def test_bad_key_is_an_authentication_error(kind: str, live_server: Any) -> None:
    async with open_client(kind, live_server.base_url, "ak_definitely_not_a_key") as bad:
        with pytest.raises(AuthenticationError) as raised:
            await bad.search("anything", user_id="someone")
    assert raised.value.status_code == 401
    assert raised.value.code == "unauthorized"


async def test_unknown_filter_field_is_an_invalid_filter(sdk: Facade, user: str) -> None:
    with pytest.raises(InvalidFilterError) as raised:
        await sdk.search("anything", user_id=user, filters={"colour": "red"})
    assert isinstance(raised.value, ValidationError)
    assert raised.value.status_code == 422
    assert "colour" in raised.value.detail


async def test_infer_defaults_to_true_and_needs_consolidation(sdk: Facade, user: str) -> None:
    with pytest.raises(ConsolidationNotConfiguredError) as raised:
        await sdk.add("I like jazz", user_id=user)
    assert raised.value.code == "consolidation_not_configured"
    assert raised.value.status_code == 422


async def test_idempotent_retry_replays_and_reuse_conflicts(sdk: Facade, user: str) -> None:
    key = f"idem-{uuid.uuid4().hex}"
    messages = [{"role": "user", "content": "I play the cello"},
                {"role": "assistant", "content": "Noted: you play the cello"}]

    first = await sdk.add(messages, user_id=user, infer=False, idempotency_key=key)
    retry = await sdk.add(messages, user_id=user, infer=False, idempotency_key=key)

    assert first.results
    assert [m.id for m in retry.results] == [m.id for m in first.results]
    assert len(await sdk.get_all(user_id=user)) == len(first.results)
    with pytest.raises(IdempotencyKeyReusedError) as raised:
        await sdk.add("I play the violin", user_id=user, infer=False, idempotency_key=key)
    assert isinstance(raised.value, ConflictError)
    assert raised.value.status_code == 409


@pytest.mark.parametrize("cls", [Anamnesis, AsyncAnamnesis])
def test_missing_api_key_fails_at_construction(
    cls: type[Anamnesis] | type[AsyncAnamnesis], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANAMNESIS_API_KEY", raising=False)
    with pytest.raises(AnamnesisError, match="API key"):
        cls("http://127.0.0.1:1")
