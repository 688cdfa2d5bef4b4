"""Messages and facts: every message said is a memory of its own, searchable as soon as the
add commits (whatever consolidation later does), and ``kind`` filters search and lists on
both candidate sources (the in-process index and Postgres)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.config import SearchSettings, Settings
from app.embeddings import SentenceTransformerEmbedder
from app.main import create_app
from tests.conftest import KeyFactory
from tests.consolidate.scripted_brain import Brain
from tests.scripted_llm import Reply, ScriptedLLM


@pytest.fixture(scope="module", params=["memory", "postgres"])
async def search_app(request: pytest.FixtureRequest, settings: Settings,
                     embedder: SentenceTransformerEmbedder,
                     app: FastAPI) -> AsyncIterator[FastAPI]:
    """An API on the suite's database whose searches take candidates from the index named by
    the parameter; the suite's own app keeps running the jobs."""
    index = request.param
    own = settings.model_copy(update={
        "search": SearchSettings(index=index), "data_dir": settings.data_dir / f"kinds-{index}"})
    application = create_app(own, embedder=embedder)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="module", params=["memory", "postgres"])
async def shallow_app(request: pytest.FixtureRequest, settings: Settings,
                      embedder: SentenceTransformerEmbedder,
                      app: FastAPI) -> AsyncIterator[FastAPI]:
    """As ``search_app``, taking only ``top_k`` candidates per signal (and kind)."""
    index = request.param
    own = settings.model_copy(update={
        "search": SearchSettings(index=index, candidates=1),
        "data_dir": settings.data_dir / f"kinds-shallow-{index}"})
    application = create_app(own, embedder=embedder)
    async with application.router.lifespan_context(application):
        yield application


async def _client(application: FastAPI, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=application),
                             base_url="http://test", headers={"Authorization": f"Bearer {key}"})


@pytest.fixture
async def kinds_client(search_app: FastAPI, api_key_factory: KeyFactory
                       ) -> AsyncIterator[httpx.AsyncClient]:
    async with await _client(search_app, await api_key_factory()) as http:
        yield http


@pytest.fixture
async def shallow_client(shallow_app: FastAPI, api_key_factory: KeyFactory
                         ) -> AsyncIterator[httpx.AsyncClient]:
    async with await _client(shallow_app, await api_key_factory()) as http:
        yield http


async def search(client: httpx.AsyncClient, query: str, **fields: Any) -> list[dict[str, Any]]:
    response = await client.post("/v1/memories/search",
                                 json={"query": query, "user_id": "u1", **fields})
    assert response.status_code == 200, response.text
    hits: list[dict[str, Any]] = response.json()["results"]
    return hits


async def test_messages_are_searchable_before_consolidation_ran(
        client: httpx.AsyncClient, scripted_llm: ScriptedLLM) -> None:
    scripted_llm.responder = lambda body: Reply.slow(5.0, '{"facts": []}')
    response = await client.post("/v1/memories", json={
        "messages": [{"role": "user", "content": "My cat Miso hates the vacuum cleaner.",
                      "name": "Dana"},
                     {"role": "assistant", "content": "Poor Miso!"}],
        "user_id": "u1"})
    assert response.status_code == 202, response.text
    job = (await client.get(f"/v1/jobs/{response.json()['job_id']}")).json()
    assert job["status"] in ("PENDING", "RUNNING")
    hits = await search(client, "which pet is afraid of the vacuum?")
    assert (hits[0]["memory"], hits[0]["kind"]) == (
        "My cat Miso hates the vacuum cleaner.", "message")
    assert hits[0]["metadata"]["name"] == "Dana"
    listed = (await client.get("/v1/memories", params={"kind": "message"})).json()["results"]
    assert sorted(m["memory"] for m in listed) == ["My cat Miso hates the vacuum cleaner.",
                                                   "Poor Miso!"]


async def test_kind_filters_search_and_list(kinds_client: httpx.AsyncClient,
                                            brain: Brain) -> None:
    brain.facts = {"I moved to Oslo for a job at Equinor.": ["User works at Equinor"]}
    response = await kinds_client.post("/v1/memories", json={
        "messages": [{"role": "user", "content": "I moved to Oslo for a job at Equinor."}],
        "user_id": "u1", "wait": True})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "SUCCEEDED", response.json()

    [message] = (await kinds_client.get("/v1/memories", params={"kind": "message"})).json()[
        "results"]
    # Both kinds rank together, a fact and the message it came from in one place: the
    # better-matching one shown, standing for the other.
    both = await search(kinds_client, "where does the user work", explain=True)
    assert [(hit["memory"], hit["kind"]) for hit in both] == [("User works at Equinor", "fact")]
    assert both[0]["explain"]["folds"] == [message["id"]]
    said = await search(kinds_client, "I moved to Oslo for a job", explain=True)
    assert [(hit["memory"], hit["kind"]) for hit in said] == [
        ("I moved to Oslo for a job at Equinor.", "message")]
    assert said[0]["explain"]["folds"] == [both[0]["id"]]
    for filters, kind in (({"kind": "fact"}, "fact"),
                          ({"kind": {"in": ["message"]}}, "message"),
                          ({"kind": {"ne": "fact"}}, "message"),
                          ({"AND": [{"kind": "fact"}, {"user_id": "u1"}]}, "fact")):
        hits = await search(kinds_client, "where does the user work", filters=filters)
        assert [hit["kind"] for hit in hits] == [kind], filters
    listed = (await kinds_client.get("/v1/memories", params={"kind": "fact"})).json()
    assert [m["memory"] for m in listed["results"]] == ["User works at Equinor"]


async def test_facts_never_take_a_message_candidates_place(shallow_client: httpx.AsyncClient,
                                                            brain: Brain) -> None:
    """Four facts about a pet trainer match "which pet does the user have?" better, by meaning
    and by words, than the message that answers it: each kind has its own candidates, so
    the facts (folded into one place, all citing one message) cannot push the answer out of
    a search of both kinds when a search of messages finds it."""
    chat = "My week was a blur of meetings, but at the park I chatted with a pet trainer."
    answer = "We finally adopted a beagle puppy last spring, we call him Biscuit."
    brain.facts = {chat: ["User chatted with a pet trainer at the park",
                          "The pet trainer talked about pet food",
                          "The pet trainer talked about pet toys",
                          "The pet trainer talked about which pets suit a flat"]}
    response = await shallow_client.post("/v1/memories", json={
        "messages": [{"role": "user", "content": chat}, {"role": "user", "content": answer}],
        "user_id": "u1", "wait": True})
    assert response.json()["status"] == "SUCCEEDED", response.json()
    query = "Which pet does the user have?"
    facts = await search(shallow_client, query, top_k=3, filters={"kind": "fact"})
    assert len(facts) == 3  # facts outrank the answer on every signal: top 3 of each are facts
    messages = await search(shallow_client, query, top_k=3, filters={"kind": "message"})
    assert answer in [hit["memory"] for hit in messages]
    both = await search(shallow_client, query, top_k=3, explain=True)
    assert answer in [hit["memory"] for hit in both]
    assert {hit["kind"] for hit in both} == {"fact", "message"}


async def test_facts_leave_the_messages_ranked_as_a_search_of_messages_ranks_them(
        kinds_client: httpx.AsyncClient, brain: Brain) -> None:
    """Short facts match a question more closely than chat turns do; ranked in one pool they
    moved the mean and deviation every message's scores are normalised by, and the messages
    came out in another order than a search of messages gives (LoCoMo conv-42: evidence at
    rank 9-10 fell out of the top 10). Every candidate is measured against the messages (ten
    or more of them): a message scores the same in a search of both kinds as in a search of
    messages."""
    turns = ["Morning! Busy weekend ahead, the whole family is coming over.",
             "I finally booked the flights to Lisbon for our trip in June.",
             "We will stay two weeks, mostly near the coast, maybe a day in Sintra.",
             "Nice! Did you sort out who looks after the dog while you are away?",
             "My neighbour takes him, she loves dogs.",
             "Lisbon in June sounds lovely, enjoy it.",
             "Thanks! Any tips on where to eat near the river?",
             "Try the grilled sardines at the market hall, they are famous.",
             "Noted. I also want to see a fado show one evening.",
             "Book it early, the small bars fill up fast in summer.",
             "Will do. How was your own week, by the way?",
             "Quiet, mostly gardening and a long bike ride on Sunday."]
    brain.facts = {turns[1]: ["User booked flights to Lisbon for June",
                              "User is going on a trip to Lisbon"],
                   turns[2]: ["User will stay in Lisbon for two weeks"],
                   turns[4]: ["User's neighbour looks after the dog during the trip"]}
    response = await kinds_client.post("/v1/memories", json={
        "messages": [{"role": "user" if i % 2 == 0 else "assistant", "content": turn}
                     for i, turn in enumerate(turns)], "user_id": "u1", "wait": True})
    assert response.json()["status"] == "SUCCEEDED", response.json()
    query = "When is the trip to Lisbon?"
    messages = await search(kinds_client, query, top_k=20, filters={"kind": "message"})
    both = await search(kinds_client, query, top_k=20, explain=True)
    # the facts took part: shown, or folded into the message they came from
    assert any(hit["kind"] == "fact" or hit["explain"].get("folds") for hit in both)
    alone = {hit["id"]: hit["score"] for hit in messages}
    shown = [hit for hit in both if hit["kind"] == "message"]
    assert shown
    for hit in shown:
        assert hit["score"] == pytest.approx(alone[hit["id"]], abs=1e-6), hit["memory"]
    assert [hit["id"] for hit in shown] == [m for m in alone if m in {h["id"] for h in shown}]


async def test_a_threshold_that_leaves_only_facts_still_ranks_them(
        kinds_client: httpx.AsyncClient, brain: Brain) -> None:
    """The messages are the yardstick (ten or more of them), and a ``threshold`` can leave
    every one of them out: the facts over it are ranked all the same (the lowest score a
    turn that is no candidate counts as is then the lowest one shown)."""
    turns = [f"Day {n}: I walked the dog and read a chapter of my novel." for n in range(11)]
    turns.append("We booked a week in Lisbon for June, near the river.")
    brain.facts = {turns[-1]: ["User booked a week in Lisbon for June",
                               "User will stay near the river in Lisbon"]}
    response = await kinds_client.post("/v1/memories", json={
        "messages": [{"role": "user", "content": turn} for turn in turns],
        "user_id": "u1", "wait": True})
    assert response.json()["status"] == "SUCCEEDED", response.json()
    hits = await search(kinds_client, "User booked a week in Lisbon for June", top_k=10,
                        threshold=0.95)
    assert [hit["memory"] for hit in hits] == ["User booked a week in Lisbon for June"]
    assert all(hit["similarity"] >= 0.95 for hit in hits)


async def test_a_search_of_facts_hides_no_fact(kinds_client: httpx.AsyncClient,
                                               brain: Brain) -> None:
    """The fold (a fact whose messages are already shown takes no place of its own) is for a
    search of both kinds; with ``kind: fact`` every fact asked for is listed, two of one
    message too. It ran there whenever there were more candidates than it looked at."""
    moved = "Hi! I'm Dana. I just moved from Lisbon to Oslo for a job at Equinor."
    others = ["I run along the river most mornings.", "My sister Ines still lives in Lisbon.",
              "I'm allergic to peanuts, by the way.", "We adopted a grey cat called Miso.",
              "I play the cello in an amateur orchestra.", "My favourite dish is bacalhau."]
    brain.facts = {moved: ["Dana moved to Oslo", "Dana lives in Oslo", "Dana works at Equinor"],
                   **{text: [f"Dana says: {text}"] for text in others}}
    response = await kinds_client.post("/v1/memories", json={
        "messages": [{"role": "user", "content": text} for text in (moved, *others)],
        "user_id": "u1", "wait": True})
    assert response.json()["status"] == "SUCCEEDED", response.json()
    listed = (await kinds_client.get("/v1/memories", params={"kind": "fact"})).json()
    assert len(listed["results"]) == 9  # more than a top 2 looks at (FOLD_DEPTH * top_k)
    facts = await search(kinds_client, "Does Dana live in Oslo?", top_k=2,
                         filters={"kind": "fact"})
    assert {hit["memory"] for hit in facts} == {"Dana moved to Oslo", "Dana lives in Oslo"}
    both = await search(kinds_client, "Does Dana live in Oslo?", top_k=2, explain=True)
    assert len({hit["memory"] for hit in both} & set(brain.facts[moved])) == 1  # one place


async def test_an_unknown_kind_is_an_invalid_filter(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/memories/search", json={
        "query": "anything", "user_id": "u1", "filters": {"kind": "note"}})
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_filter"
    assert "kind" in response.json()["detail"]
    listed = await client.get("/v1/memories", params={"kind": "note"})
    assert listed.status_code == 422
