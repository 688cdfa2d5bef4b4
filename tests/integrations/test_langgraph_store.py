"""The LangGraph store against the live server (real Postgres, embeddings and index) with the
real ``langgraph`` package: the ``BaseStore`` contract, on the sync and the async client, and
a compiled graph that remembers across threads through it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypedDict

import pytest
from anamnesis import Anamnesis, AsyncAnamnesis, Memory, PayloadTooLargeError, ValidationError
from anamnesis.integrations.langgraph import AnamnesisStore
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.config import get_store
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.store.base import (
    GetOp,
    InvalidNamespaceError,
    Item,
    ListNamespacesOp,
    PutOp,
    SearchItem,
)

KeyFactory = Callable[..., Awaitable[str]]
ALICE = ("memories", "alice")
BOB = ("memories", "bob")


class Calls:
    """Awaitable facade over the store: ``await calls.put(...)`` is ``aput`` on an async
    store, ``put`` in a worker thread on a sync one (the session event loop stays free)."""

    def __init__(self, store: AnamnesisStore, kind: str) -> None:
        self.store = store
        self.kind = kind

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.kind == "async":
                return await getattr(self.store, f"a{name}")(*args, **kwargs)
            return await asyncio.to_thread(getattr(self.store, name), *args, **kwargs)

        return call


@dataclass
class Opened:
    calls: Calls
    sdk: AsyncAnamnesis  # to look at what the store wrote, through the plain SDK
    sync_sdk: Anamnesis
    kind: str

    async def memories(self, **scope: str) -> list[Memory]:
        return [m async for m in self.sdk.get_all(agent_id="langgraph", **scope)]

    def store(self, **options: Any) -> Calls:
        """Another store on the same project (sync or async like ``calls``)."""
        if self.kind == "async":
            return Calls(AnamnesisStore(aclient=self.sdk, **options), "async")
        return Calls(AnamnesisStore(self.sync_sdk, **options), "sync")


@pytest.fixture(params=["sync", "async"])
async def lg(request: pytest.FixtureRequest, live_server: Any,
             api_key_factory: KeyFactory) -> AsyncIterator[Opened]:
    api_key = await api_key_factory()
    with Anamnesis(live_server.base_url, api_key) as sync_sdk:
        async with AsyncAnamnesis(live_server.base_url, api_key) as sdk:
            kind = str(request.param)
            store = AnamnesisStore(aclient=sdk, user_label=1) if kind == "async" else \
                AnamnesisStore(sync_sdk, user_label=1)
            yield Opened(Calls(store, kind), sdk, sync_sdk, kind)


async def test_put_get_replace_and_delete_one_item(lg: Opened) -> None:
    store = lg.calls
    assert await store.get(ALICE, "seat") is None

    await store.put(ALICE, "seat", {"text": "I prefer window seats", "stars": 4})
    first = await store.get(ALICE, "seat")
    assert isinstance(first, Item)
    assert (first.namespace, first.key) == (ALICE, "seat")
    assert first.value == {"text": "I prefer window seats", "stars": 4}

    [memory] = await lg.memories()
    assert (memory.user_id, memory.agent_id, memory.kind) == ("alice", "langgraph", "message")
    assert memory.metadata["langgraph"]["namespace"] == list(ALICE)
    assert json.loads(memory.memory) == first.value  # default fields: the value as JSON
    assert (memory.created_at, memory.updated_at) == (first.created_at, first.updated_at)

    await store.put(ALICE, "seat", {"text": "I prefer aisle seats", "stars": 5})
    second = await store.get(ALICE, "seat")
    assert second is not None
    assert second.value == {"text": "I prefer aisle seats", "stars": 5}
    assert second.created_at == first.created_at  # replaced in place
    assert second.updated_at > first.updated_at
    [replaced] = await lg.memories(user_id="alice")
    assert replaced.id == memory.id
    [update] = [e for e in await lg.sdk.history(memory.id) if e.event == "UPDATE"]
    assert update.old_metadata is not None
    assert update.old_metadata["langgraph"]["value"]["text"] == "I prefer window seats"

    await store.delete(ALICE, "seat")
    assert await store.get(ALICE, "seat") is None
    assert await lg.memories() == []
    await store.put(ALICE, "seat", {"text": "again"})
    await store.put(ALICE, "seat", None)  # a None value deletes too
    assert await lg.memories() == []


async def test_namespaces_are_isolated_and_searched_by_prefix(lg: Opened) -> None:
    store = lg.calls
    work = (*ALICE, "work")
    await store.put(ALICE, "food", {"text": "Alice is vegetarian"})
    await store.put(BOB, "food", {"text": "Bob eats everything"})
    await store.put(work, "food", {"text": "Alice lunches at her desk"})
    await store.put(("global",), "food", {"text": "The canteen opens at noon"})

    for namespace, text in [(ALICE, "Alice is vegetarian"), (BOB, "Bob eats everything"),
                            (work, "Alice lunches at her desk"),
                            (("global",), "The canteen opens at noon")]:
        item = await store.get(namespace, "food")
        assert item is not None
        assert item.value["text"] == text
    # user_label=1: the second label is the user; a namespace without one has none.
    users = {m.metadata["langgraph"]["namespace"][-1]: m.user_id for m in await lg.memories()}
    assert users == {"alice": "alice", "bob": "bob", "work": "alice", "global": None}

    listed = await store.search(ALICE)
    assert {(i.namespace, i.key) for i in listed} == {(ALICE, "food"), (work, "food")}
    assert all(isinstance(i, SearchItem) and i.score is None for i in listed)
    assert [i.value["text"] for i in listed] == ["Alice lunches at her desk",  # newest first
                                                 "Alice is vegetarian"]
    assert len(await store.search(("memories",))) == 3
    assert len(await store.search(())) == 4
    assert [i.key for i in await store.search(BOB)] == ["food"]
    found = await store.search(ALICE, query="what does alice eat")
    assert {i.namespace for i in found} == {ALICE, work}
    assert all(isinstance(i.score, float) for i in found)

    await store.delete(ALICE, "food")
    assert await store.get(ALICE, "food") is None
    bob = await store.get(BOB, "food")
    assert bob is not None
    assert bob.value["text"] == "Bob eats everything"
    # The mapping onto scopes is real: erasing the user erases her namespaces' items.
    await lg.sdk.delete_user("alice")
    assert await store.get(work, "food") is None
    assert await store.get(BOB, "food") is not None


NOTES = {
    "peanuts": {"text": "Allergic to peanuts", "topic": "health", "stars": 5,
                "meta": {"lang": "en", "level": 2}},
    "lisbon": {"text": "Favourite city is Lisbon", "topic": "travel", "stars": 3,
               "meta": {"lang": "pt", "level": 1}},
    "bike": {"text": "Cycles to work on a red bicycle", "topic": "travel", "stars": 4,
             "tags": ["sport", "commute"]},
}


async def test_search_ranks_by_query_and_filters_on_values(lg: Opened) -> None:
    store = lg.calls
    for key, value in NOTES.items():
        await store.put(ALICE, key, value)
    await store.put(BOB, "peanuts", {"text": "Bob is allergic to peanuts too", "stars": 5})

    hits = await store.search(ALICE, query="peanut allergy", limit=3)
    assert [h.key for h in hits][:1] == ["peanuts"]
    assert {h.namespace for h in hits} == {ALICE}
    assert hits[0].score is not None
    assert hits[0].score >= (hits[-1].score or 0.0)
    page = await store.search(ALICE, query="peanut allergy", limit=2, offset=1)
    assert [h.key for h in page] == [h.key for h in hits[1:]]

    # The same filter gives the same items whether the server searches (a query) or the
    # store lists the namespace and judges each value (no query).
    cases: list[tuple[dict[str, Any], set[str]]] = [
        ({"topic": "travel"}, {"lisbon", "bike"}),
        ({"topic": {"$ne": "travel"}}, {"peanuts"}),
        ({"stars": {"$gte": 4}}, {"peanuts", "bike"}),
        ({"stars": {"$gt": 3, "$lt": 5}}, {"bike"}),
        ({"stars": {"$lte": 3}, "topic": {"$eq": "travel"}}, {"lisbon"}),
        ({"meta": {"lang": "en"}}, {"peanuts"}),
        ({"meta": {"level": {"$gte": 1}}}, {"peanuts", "lisbon"}),
        ({"meta": {"lang": {"$ne": "en"}}}, {"lisbon", "bike"}),  # a missing key is not "en"
        ({"tags": ["sport", "commute"]}, {"bike"}),
        ({"tags": ("sport", "commute")}, {"bike"}),
        ({"topic": {"sub": "x"}}, set()),  # a string has no keys
        ({"stars": {"$gt": "4"}}, set()),  # strings and numbers do not compare
        ({"stars": True}, set()),  # a boolean is not the number 1
        ({"absent": None}, set()),
    ]
    for wanted, keys in cases:
        searched = await store.search(ALICE, query="notes", filter=wanted, limit=10)
        listed = await store.search(ALICE, filter=wanted, limit=10)
        assert {h.key for h in searched} == keys, wanted
        assert {h.key for h in listed} == keys, wanted
    assert [h.key for h in await store.search(ALICE, limit=2)] == ["bike", "lisbon"]
    assert [h.key for h in await store.search(ALICE, limit=2, offset=2)] == ["peanuts"]
    assert await store.search(ALICE, limit=0) == []


async def test_list_namespaces_by_prefix_suffix_and_depth(lg: Opened) -> None:
    store = lg.calls
    spaces = [ALICE, BOB, (*ALICE, "work"), (*BOB, "work"), ("docs", "v1"), ("docs", "v2")]
    for namespace in spaces:
        await store.put(namespace, "k", {"text": "x"})
    await store.put(ALICE, "k2", {"text": "y"})  # a second item: the namespace once
    # A memory of the same agent that no store wrote is not an item.
    await lg.sdk.add("a plain note", agent_id="langgraph", infer=False)

    assert await store.list_namespaces() == sorted(spaces)
    assert await store.list_namespaces(prefix=("memories",)) == sorted(spaces[:4])
    assert await store.list_namespaces(prefix=ALICE) == [ALICE, (*ALICE, "work")]
    assert await store.list_namespaces(suffix=("work",)) == [(*ALICE, "work"), (*BOB, "work")]
    assert await store.list_namespaces(prefix=("memories", "*", "work")) == [
        (*ALICE, "work"), (*BOB, "work")]
    assert await store.list_namespaces(prefix=("docs",), suffix=("v2",)) == [("docs", "v2")]
    assert await store.list_namespaces(max_depth=1) == [("docs",), ("memories",)]
    assert await store.list_namespaces(limit=2, offset=1) == sorted(spaces)[1:3]
    assert await store.list_namespaces(prefix=("nothing", "here", "at", "all")) == []
    assert len(await store.search(())) == 7


async def test_the_text_embedded_comes_from_the_index_fields(lg: Opened) -> None:
    store = lg.store(user_label=1, fields=["text", "tags[*]"])
    await store.put(ALICE, "a", {"text": "Likes jazz", "tags": ["music", "evenings"], "n": 1})
    await store.put(ALICE, "b", {"title": "Vinyl", "text": "Collects records"},
                    index=["title"])
    await store.put(ALICE, "c", {"text": "not this"}, index=False)
    await store.put(ALICE, "d", {"other": "no text field"})
    texts = {m.metadata["langgraph"]["key"]: m.memory for m in await lg.memories()}
    assert texts == {"a": "Likes jazz music evenings", "b": "Vinyl",
                     "c": '{"text": "not this"}', "d": '{"other": "no text field"}'}
    [hit] = await store.search(ALICE, query="records on vinyl", limit=1)
    assert hit.key == "b"


async def test_copies_from_racing_first_puts_are_folded_into_one(lg: Opened) -> None:
    store = lg.calls
    await store.put(ALICE, "seat", {"text": "window"})
    [memory] = await lg.memories()
    # What two concurrent first puts of one key leave: a second memory for it.
    copy = dict(memory.metadata)
    copy["langgraph"] = {**copy["langgraph"], "value": {"text": "aisle"}}
    await lg.sdk.add("aisle", user_id="alice", agent_id="langgraph", metadata=copy,
                     infer=False)
    item = await store.get(ALICE, "seat")
    assert item is not None
    assert item.value == {"text": "aisle"}  # the most recently written

    await store.put(ALICE, "seat", {"text": "middle"})
    [kept] = await lg.memories()
    assert kept.metadata["langgraph"]["value"] == {"text": "middle"}
    await lg.sdk.add("again", user_id="alice", agent_id="langgraph", metadata=copy,
                     infer=False)
    await store.delete(ALICE, "seat")
    assert await lg.memories() == []


async def test_what_the_service_refuses_raises_the_sdk_error_and_stores_nothing(
        lg: Opened) -> None:
    store = lg.calls
    with pytest.raises((PayloadTooLargeError, ValidationError)):
        await store.put(ALICE, "big", {"text": "x" * 20_000})  # past 16 KiB of metadata
    assert await lg.memories() == []
    with pytest.raises(ValidationError):  # past the service's top_k of 1000
        await store.search(ALICE, query="anything", limit=1000, offset=1)
    with pytest.raises(ValueError, match=r"without '\.'"):
        await store.search(ALICE, query="x", filter={"a.b": 1})
    with pytest.raises(ValueError, match=r"without '\.'"):
        await store.search(ALICE, filter={"a.b": 1})
    with pytest.raises(ValueError, match=r"unsupported filter operator '\$in'"):
        await store.search(ALICE, filter={"a": {"$in": [1]}})
    with pytest.raises(InvalidNamespaceError):
        await store.get(("a.b",), "k")
    with pytest.raises(NotImplementedError):
        await store.put(ALICE, "k", {"text": "x"}, ttl=5)
    ops = [PutOp(ALICE, "k", {"text": "x"}, ttl=5.0)]
    with pytest.raises(NotImplementedError, match="TTL"):
        await (lg.calls.store.abatch(ops) if lg.kind == "async"
               else asyncio.to_thread(lg.calls.store.batch, ops))
    with pytest.raises(TypeError, match="unknown store operation"):
        await asyncio.to_thread(AnamnesisStore(lg.sync_sdk).batch,
                                [GetOp(ALICE, "k"), "not an op"])  # type: ignore[list-item]
    assert await lg.memories() == []


async def test_the_clients_a_store_is_given_decide_how_it_runs(live_server: Any,
                                                               api_key_factory: KeyFactory
                                                               ) -> None:
    with pytest.raises(ValueError, match="needs client"):
        AnamnesisStore()
    api_key = await api_key_factory()
    with Anamnesis(live_server.base_url, api_key) as sync_sdk:
        with pytest.raises(ValueError, match="user_label"):
            AnamnesisStore(sync_sdk, user_label=-1)
        # Only a sync client: the async methods run it in a worker thread.
        threaded = AnamnesisStore(sync_sdk, agent_id="assistant")
        await threaded.aput(ALICE, "k", {"text": "from a thread"})
        item = await threaded.aget(ALICE, "k")
        assert item is not None
        assert item.value == {"text": "from a thread"}
        [memory] = list(sync_sdk.get_all(agent_id="assistant"))
        assert memory.user_id is None  # no user_label: the agent is the only scope
        results = threaded.batch([PutOp(BOB, "k", {"text": "b"}), GetOp(BOB, "k"),
                                  ListNamespacesOp(max_depth=1)])
        assert results[0] is None
        assert isinstance(results[1], Item)
        assert results[2] == [("memories",)]
    async with AsyncAnamnesis(live_server.base_url, api_key) as sdk:
        only_async = AnamnesisStore(aclient=sdk, agent_id="assistant")
        assert (await only_async.aget(BOB, "k")) is not None
        with pytest.raises(RuntimeError, match="only an async client"):
            only_async.get(BOB, "k")


# -- a graph that remembers across threads -----------------------------------------------


class Turn(TypedDict, total=False):
    said: str
    recalled: list[str]


@dataclass
class Who:
    user_id: str


def _remember(state: Turn, runtime: Runtime[Who]) -> Turn:
    """Keep what the user asked to be remembered, in the user's namespace."""
    assert runtime.store is not None
    if state["said"].startswith("remember: "):
        fact = state["said"].removeprefix("remember: ")
        runtime.store.put(("memories", runtime.context.user_id), f"fact-{len(fact)}",
                          {"text": fact})
    return {}


def _recall(state: Turn, runtime: Runtime[Who]) -> Turn:
    assert runtime.store is not None
    hits = runtime.store.search(("memories", runtime.context.user_id), query=state["said"],
                                limit=1)
    return {"recalled": [hit.value["text"] for hit in hits]}


async def _aremember(state: Turn, runtime: Runtime[Who]) -> Turn:
    if state["said"].startswith("remember: "):
        fact = state["said"].removeprefix("remember: ")
        await get_store().aput(("memories", runtime.context.user_id), f"fact-{len(fact)}",
                               {"text": fact})
    return {}


async def _arecall(state: Turn, runtime: Runtime[Who]) -> Turn:
    hits = await get_store().asearch(("memories", runtime.context.user_id),
                                     query=state["said"], limit=1)
    return {"recalled": [hit.value["text"] for hit in hits]}


def _graph(remember: Any, recall: Any, store: AnamnesisStore) -> Any:
    builder = StateGraph(Turn, context_schema=Who)
    builder.add_node("remember", remember)
    builder.add_node("recall", recall)
    builder.add_edge(START, "remember")
    builder.add_edge("remember", "recall")
    builder.add_edge("recall", END)
    return builder.compile(store=store, checkpointer=InMemorySaver())


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_graph_with_the_store_remembers_across_threads(
        kind: str, live_server: Any, api_key_factory: KeyFactory) -> None:
    api_key = await api_key_factory()
    alice, bob = Who("alice"), Who("bob")
    with Anamnesis(live_server.base_url, api_key) as sync_sdk:
        async with AsyncAnamnesis(live_server.base_url, api_key) as sdk:
            if kind == "sync":
                graph = _graph(_remember, _recall, AnamnesisStore(sync_sdk, user_label=1))

                async def run(said: str, thread: str, who: Who) -> Turn:
                    config = {"configurable": {"thread_id": thread}}
                    result: Turn = await asyncio.to_thread(
                        graph.invoke, {"said": said}, config, context=who)
                    return result
            else:
                graph = _graph(_aremember, _arecall, AnamnesisStore(aclient=sdk, user_label=1))

                async def run(said: str, thread: str, who: Who) -> Turn:
                    config = {"configurable": {"thread_id": thread}}
                    result: Turn = await graph.ainvoke({"said": said}, config, context=who)
                    return result

            await run("remember: I prefer window seats on long flights", "thread-1", alice)
            await run("remember: I am allergic to peanuts", "thread-1", alice)
            await run("remember: I prefer aisle seats", "thread-3", bob)

            later = await run("which seat should I book for my flight?", "thread-2", alice)
            assert later["recalled"] == ["I prefer window seats on long flights"]
            snack = await run("any food I must avoid?", "thread-2", alice)
            assert snack["recalled"] == ["I am allergic to peanuts"]
            theirs = await run("which seat should I book for my flight?", "thread-4", bob)
            assert theirs["recalled"] == ["I prefer aisle seats"]
            # The threads are separate conversations; only the store is shared.
            first = graph.get_state({"configurable": {"thread_id": "thread-1"}})
            assert first.values["said"] == "remember: I am allergic to peanuts"
            assert [m.user_id async for m in sdk.get_all(agent_id="langgraph")].count(
                "alice") == 2
