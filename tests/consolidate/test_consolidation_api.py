"""infer=true end to end on the in-process queue: real app, Postgres, embeddings, and an
OpenAI-compatible HTTP server whose replies follow the test's rules (``Brain``)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from app.consolidate.prompts import EXTRACT_VERSION, RESOLVE_VERSION
from app.consolidate.resolve import one_subject
from app.domain import Scope
from app.store.db import Database
from app.store.repositories import episodes, jobs
from tests.conftest import KeyFactory
from tests.consolidate.scripted_brain import Brain, FactSpec, Graph, Seen, ends
from tests.scripted_llm import Reply, ScriptedLLM

UUID_PATTERN = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def said(*contents: str) -> list[dict[str, str]]:
    """A conversation: user and assistant taking turns, the user first."""
    return [{"role": "user" if index % 2 == 0 else "assistant", "content": content}
            for index, content in enumerate(contents)]


async def post(client: httpx.AsyncClient, messages: list[dict[str, str]], *,
               user_id: str = "u1", **fields: Any) -> httpx.Response:
    return await client.post("/v1/memories",
                             json={"messages": messages, "user_id": user_id, **fields})


async def consolidate(client: httpx.AsyncClient, *contents: str, **fields: Any) -> dict[str, Any]:
    """Posts with wait=true; returns the finished job."""
    response = await post(client, said(*contents), wait=True, **fields)
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    return job


async def finished(client: httpx.AsyncClient, job_id: str, timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        response = await client.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        if job["status"] in ("SUCCEEDED", "FAILED"):
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']}"
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def held_at(client: httpx.AsyncClient, scripted_llm: ScriptedLLM, brain: Brain,
                  schema: str, messages: list[dict[str, str]]
                  ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """Posts ``messages``; the brain answers, but the call for ``schema`` waits (in the
    server's thread) until the block ends. The block gets the job's id and the job as it
    stands while that step's answer is out."""
    asked, release = threading.Event(), threading.Event()

    def respond(body: dict[str, Any]) -> dict[str, Any]:
        if body["response_format"]["json_schema"]["name"] == schema:
            asked.set()
            release.wait(30)
        return brain(body)

    scripted_llm.responder = respond
    response = await post(client, messages)
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    try:
        deadline = time.monotonic() + 60
        while not asked.is_set():
            assert time.monotonic() < deadline, f"the {schema} call was never made"
            await asyncio.sleep(0.05)
        yield job_id, (await client.get(f"/v1/jobs/{job_id}")).json()
    finally:
        release.set()


async def memories(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    """The facts (by default: ``kind`` says otherwise) of the caller's project."""
    response = await client.get("/v1/memories", params={"limit": 1000, "kind": "fact",
                                                        **params})
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["results"]
    return found


async def texts(client: httpx.AsyncClient, **params: Any) -> set[str]:
    return {memory["memory"] for memory in await memories(client, **params)}


async def history(client: httpx.AsyncClient, memory_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/memories/{memory_id}/history")
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["results"]
    return events


async def count(database: Database, sql: str) -> int:
    async with database.engine.connect() as connection:
        return int((await connection.execute(sa.text(sql))).scalar_one())


# -- the four outcomes ---------------------------------------------------------------------


async def test_add_stores_facts_with_sources_and_history(client: httpx.AsyncClient,
                                                         brain: Brain) -> None:
    brain.facts = {"I'm vegetarian, and I play the cello.": ["User is vegetarian",
                                                            "User plays the cello"]}
    job = await consolidate(client, "Hi there!", "Hello! How can I help?",
                            "I'm vegetarian, and I play the cello.")
    assert job["status"] == "SUCCEEDED"
    assert [(r["event"], r["memory"]) for r in job["results"]] == [
        ("ADD", "User is vegetarian"), ("ADD", "User plays the cello")]
    assert job["attempts"] == 1
    assert job["error"] is None
    assert job["usage"]["llm_calls"] == 2  # extract and graph; nothing to resolve against
    assert job["usage"]["prompt_tokens"] > 0
    assert job["usage"]["model"] == "scripted-model"
    assert brain.resolve_calls == 0

    detail = (await client.get(f"/v1/memories/{job['results'][0]['id']}")).json()
    assert detail["supersedes"] == []
    assert detail["superseded_by"] is None
    [source] = detail["sources"]
    assert source["episode_id"] == job["episode_id"]
    assert source["message_indices"] == [2]
    assert source["messages"] == [{"index": 2, "role": "user",
                                   "content": "I'm vegetarian, and I play the cello."}]
    [event] = await history(client, detail["id"])
    assert event["event"] == "ADD"
    assert event["decision"] == "ADD"
    assert event["episode_id"] == job["episode_id"]
    assert event["job_id"] == job["id"]
    assert event["message_indices"] == [2]
    assert event["model"] == "scripted-model"
    assert event["prompt_version"] == EXTRACT_VERSION
    assert await texts(client, user_id="u1") == {"User is vegetarian", "User plays the cello"}


async def test_update_rewrites_and_keeps_the_old_text_in_history(client: httpx.AsyncClient,
                                                                 brain: Brain) -> None:
    """A fact that keeps every word of a memory and adds to it, both still true, rewrites the
    memory in place (no second memory saying half of it)."""
    brain.facts = {"I like coffee.": ["User likes coffee"],
                   "Espresso above all, I like coffee.": [
                       "User likes coffee, espresso above all"]}
    first = await consolidate(client, "I like coffee.")
    memory_id = first["results"][0]["id"]
    second = await consolidate(client, "Espresso above all, I like coffee.")
    assert brain.seen[-1] == Seen(["User likes coffee, espresso above all"],
                                  ["User likes coffee"])
    assert second["results"] == [{"id": memory_id,
                                  "memory": "User likes coffee, espresso above all",
                                  "event": "UPDATE", "previous_memory": "User likes coffee",
                                  "previous_id": None}]
    assert await texts(client, user_id="u1") == {"User likes coffee, espresso above all"}
    events = await history(client, memory_id)
    assert [(e["event"], e["old_memory"], e["new_memory"]) for e in events] == [
        ("ADD", None, "User likes coffee"),
        ("UPDATE", "User likes coffee", "User likes coffee, espresso above all")]
    assert events[1]["episode_id"] == second["episode_id"]
    assert events[1]["prompt_version"] == f"{EXTRACT_VERSION}+{RESOLVE_VERSION}"
    sources = (await client.get(f"/v1/memories/{memory_id}")).json()["sources"]
    assert [s["episode_id"] for s in sources] == [first["episode_id"], second["episode_id"]]


async def test_supersede_keeps_the_past_readable(client: httpx.AsyncClient,
                                                 brain: Brain) -> None:
    brain.facts = {"I live in Paris since January 2024.": [FactSpec("User lives in Paris",
                                                                   "since January 2024")],
                   "I moved to Berlin on 1 May.": [FactSpec("User lives in Berlin",
                                                            "on 1 May")]}
    brain.still_true = ends(("User lives in Berlin", "User lives in Paris"))
    paris = (await consolidate(client, "I live in Paris since January 2024.",
                               observed_at="2024-01-10T10:00:00Z"))["results"][0]
    second = await consolidate(client, "I moved to Berlin on 1 May.",
                               observed_at="2024-06-01T10:00:00Z")
    [berlin] = second["results"]
    assert berlin["event"] == "SUPERSEDE"
    assert berlin["memory"] == "User lives in Berlin"
    assert berlin["previous_id"] == paris["id"]
    assert berlin["previous_memory"] == "User lives in Paris"

    # Current by default, in lists and searches alike.
    assert await texts(client, user_id="u1") == {"User lives in Berlin"}
    found = await client.post("/v1/memories/search", json={
        "query": "where does the user live", "user_id": "u1", "filters": {"kind": "fact"}})
    assert [hit["memory"] for hit in found.json()["results"]] == ["User lives in Berlin"]
    # What was true then.
    assert await texts(client, user_id="u1", as_of="2024-03-01T00:00:00Z") == {
        "User lives in Paris"}
    assert await texts(client, user_id="u1", as_of="2024-07-01T00:00:00Z") == {
        "User lives in Berlin"}
    assert await texts(client, user_id="u1", as_of="2023-06-01T00:00:00Z") == set()
    then = await client.post("/v1/memories/search", json={
        "query": "where does the user live", "user_id": "u1", "as_of": "2024-03-01T00:00:00Z",
        "filters": {"kind": "fact"}})
    assert [hit["memory"] for hit in then.json()["results"]] == ["User lives in Paris"]
    assert await texts(client, user_id="u1", include_superseded="true") == {
        "User lives in Paris", "User lives in Berlin"}

    old = (await client.get(f"/v1/memories/{paris['id']}")).json()
    assert old["superseded_by"] == berlin["id"]
    assert old["valid_at"] == "2024-01-01T00:00:00Z"
    assert old["invalid_at"] == "2024-05-01T00:00:00Z"
    new = (await client.get(f"/v1/memories/{berlin['id']}")).json()
    assert new["supersedes"] == [paris["id"]]
    assert new["valid_at"] == "2024-05-01T00:00:00Z"
    events = await history(client, paris["id"])
    assert [e["event"] for e in events] == ["ADD", "SUPERSEDE"]
    assert events[1]["episode_id"] == second["episode_id"]
    assert events[1]["related_memory_id"] == berlin["id"]
    assert events[1]["new_memory"] == "User lives in Berlin"
    [added] = await history(client, berlin["id"])
    assert added["decision"] == "SUPERSEDE"
    assert added["related_memory_id"] == paris["id"]


async def test_noop_confirms_without_a_second_memory(client: httpx.AsyncClient,
                                                     brain: Brain) -> None:
    """A paraphrase of a memory confirms it: the memory gains a source, nothing else
    changes."""
    brain.facts = {"My dog is called Rex.": ["User has a dog named Rex"],
                   "Rex, my dog, turned five.": ["User's dog is Rex"],
                   "Did I say my dog is called Rex?": ["User has a dog named Rex"]}
    first = await consolidate(client, "My dog is called Rex.")
    memory_id = first["results"][0]["id"]
    decided = await consolidate(client, "Rex, my dog, turned five.")
    assert decided["results"] == [{"id": memory_id, "memory": "User has a dog named Rex",
                                   "event": "NOOP", "previous_memory": None,
                                   "previous_id": None}]
    calls = brain.resolve_calls
    same_text = await consolidate(client, "Did I say my dog is called Rex?")
    assert same_text["results"][0]["event"] == "NOOP"
    assert brain.resolve_calls == calls  # identical text: known without asking
    assert await texts(client, user_id="u1") == {"User has a dog named Rex"}
    assert [e["event"] for e in await history(client, memory_id)] == ["ADD"]
    sources = (await client.get(f"/v1/memories/{memory_id}")).json()["sources"]
    assert len(sources) == 3  # every episode that told it


async def test_a_fact_saying_less_than_a_memory_confirms_it(client: httpx.AsyncClient,
                                                            brain: Brain) -> None:
    brain.facts = {"I'm a geologist at Equinor.": ["User works at Equinor as a geologist"],
                   "Equinor is where I work.": ["User works at Equinor"]}
    first = await consolidate(client, "I'm a geologist at Equinor.")
    job = await consolidate(client, "Equinor is where I work.")
    assert [(r["event"], r["id"]) for r in job["results"]] == [
        ("NOOP", first["results"][0]["id"])]
    assert brain.resolve_calls == 1
    assert await texts(client, user_id="u1") == {"User works at Equinor as a geologist"}


async def test_a_changed_count_is_not_taken_for_the_same_fact(client: httpx.AsyncClient,
                                                              brain: Brain) -> None:
    """Near in meaning is not the same: "three children" after "two children" is not a NOOP
    that would drop it. The model (wrongly) calls both still true, but two current facts
    this alike are one memory told twice (``resolve.SAME_MEMORY``): the newer count takes
    the older's place, which stays readable as the past."""
    brain.facts = {"I have two children.": ["Eva has two children"],
                   "Now I have three children.": ["Eva has three children"]}
    first = await consolidate(client, "I have two children.")
    job = await consolidate(client, "Now I have three children.")
    assert [(r["event"], r["previous_id"]) for r in job["results"]] == [
        ("SUPERSEDE", first["results"][0]["id"])]
    assert brain.resolve_calls == 1
    assert await texts(client, user_id="u1") == {"Eva has three children"}
    assert await texts(client, user_id="u1", include_superseded="true") == {
        "Eva has two children", "Eva has three children"}


async def test_a_related_fact_the_model_calls_compatible_is_added(
        client: httpx.AsyncClient, brain: Brain) -> None:
    """Alike but not one memory told twice ("girlfriend is Anna" / "married Anna", 0.86 as
    whole sentences): what the model says stands, both stay current."""
    brain.facts = {"My girlfriend is Anna.": ["Chris's girlfriend is Anna"],
                   "Anna and I got married!": ["Chris married Anna"]}
    await consolidate(client, "My girlfriend is Anna.")
    job = await consolidate(client, "Anna and I got married!")
    assert [r["event"] for r in job["results"]] == ["ADD"]
    assert brain.resolve_calls == 1
    assert await texts(client, user_id="u1") == {"Chris's girlfriend is Anna",
                                                  "Chris married Anna"}


async def test_the_model_sees_numbers_never_ids(client: httpx.AsyncClient, brain: Brain,
                                                scripted_llm: ScriptedLLM) -> None:
    brain.facts = {"I like tea.": ["User likes tea"], "I like green tea.": ["User likes green tea"]}
    await consolidate(client, "I like tea.")
    await consolidate(client, "I like green tea.")
    assert brain.resolve_calls == 1
    for request in scripted_llm.requests:
        for message in request.messages:
            assert not UUID_PATTERN.search(str(message["content"]))


async def test_unfit_answers_fall_back_to_add(client: httpx.AsyncClient, brain: Brain,
                                             scripted_llm: ScriptedLLM) -> None:
    """Checks of pairs that were not asked about (unknown fact or memory numbers) count for
    nothing: the facts are added."""
    brain.facts = {"I run.": ["User runs"], "I jog in the park.": ["User jogs in the park",
                                                                   "User trains daily"]}
    await consolidate(client, "I run.")

    def confused(body: dict[str, Any]) -> dict[str, Any]:
        if body["response_format"]["json_schema"]["name"] == "Checks":
            brain.resolve_calls += 1
            return {"checks": [{"fact": 7, "memory": 0, "still_true": False},
                               {"fact": 0, "memory": 99, "still_true": False}]}
        return brain(body)

    scripted_llm.responder = confused
    job = await consolidate(client, "I jog in the park.")
    assert brain.resolve_calls == 1
    assert [r["event"] for r in job["results"]] == ["ADD", "ADD"]
    assert await texts(client, user_id="u1") == {"User runs", "User jogs in the park",
                                                  "User trains daily"}


async def test_a_decision_about_an_unlike_memory_falls_back_to_add(
        client: httpx.AsyncClient, brain: Brain) -> None:
    """A new job never retires a home, whatever the model would say: what the two say of
    Dana is too unalike for any outcome (``resolve.MIN_SIMILARITY``), so the model is not
    even asked and the fact is added."""
    brain.facts = {"I live in Lisbon and I play the cello.": ["Dana lives in Lisbon",
                                                              "Dana plays the cello"],
                   "I started working at Equinor as a geologist.": [
                       "Dana works at Equinor as a geologist"]}
    brain.still_true = ends(("Dana works at Equinor as a geologist", "Dana plays the cello"),
                            ("Dana works at Equinor as a geologist", "Dana lives in Lisbon"))
    await consolidate(client, "I live in Lisbon and I play the cello.")
    job = await consolidate(client, "I started working at Equinor as a geologist.")
    assert [r["event"] for r in job["results"]] == ["ADD"]
    assert brain.resolve_calls == 0
    assert await texts(client, user_id="u1") == {
        "Dana lives in Lisbon", "Dana plays the cello", "Dana works at Equinor as a geologist"}


async def test_a_fact_about_someone_else_never_ends_their_memory(
        client: httpx.AsyncClient, brain: Brain) -> None:
    """Two people in one chat say alike things ("loves camping with her family" / "… with
    her friends", 0.57 alike): a model that calls one the end of the other is not asked,
    because a fact only acts on memories that name whom it is about
    (``resolve.one_subject``). Both stay current."""
    brain.facts = {"I love camping with my family.": ["Melanie loves camping with her family"],
                   "I love camping with my friends.": ["Caroline loves camping with her friends"]}
    brain.still_true = ends(("Caroline loves camping with her friends",
                             "Melanie loves camping with her family"))
    await consolidate(client, "I love camping with my family.")
    job = await consolidate(client, "I love camping with my friends.")
    assert [r["event"] for r in job["results"]] == ["ADD"]
    assert brain.resolve_calls == 0
    assert await texts(client, user_id="u1") == {"Melanie loves camping with her family",
                                                  "Caroline loves camping with her friends"}


@pytest.mark.parametrize(("fact", "memory", "same"), [
    ("Caroline loves camping", "Melanie loves camping with her family", False),
    ("Luna passed away", "Oscar has a cat named Luna", True),  # named, not the subject
    ("Anna and Chris got married", "Chris's girlfriend is Anna", True),
    ("On Monday, Melanie ran a race", "Melanie runs", True),  # a day is no one
    ("The kitchen renovation is finished", "Julia's kitchen is being renovated", True),
    ("User moved to Bergen", "The user lives in Oslo", True),  # names no one
    ("Melanie's kids love painting", "Caroline paints", False),
])
def test_a_fact_acts_only_on_memories_that_name_whom_it_is_about(fact: str, memory: str,
                                                                 same: bool) -> None:
    assert one_subject(fact, memory) is same


async def test_a_fact_about_someone_named_in_a_memory_may_end_it(
        client: httpx.AsyncClient, brain: Brain) -> None:
    """The one rule is about names, not sentence subjects: "Luna passed away" is about the
    Luna that "Oscar has a cat named Luna" names, and ends it."""
    brain.facts = {"I have a cat named Luna.": ["Oscar has a cat named Luna"],
                   "Luna passed away.": ["Luna passed away"]}
    brain.still_true = ends(("Luna passed away", "Oscar has a cat named Luna"))
    first = await consolidate(client, "I have a cat named Luna.")
    job = await consolidate(client, "Luna passed away.")
    assert [(r["event"], r["previous_id"]) for r in job["results"]] == [
        ("SUPERSEDE", first["results"][0]["id"])]
    assert await texts(client, user_id="u1") == {"Luna passed away"}


@pytest.mark.parametrize("told_as", ["state", "event"])
async def test_an_event_is_never_asked_about_nor_ended(
        client: httpx.AsyncClient, brain: Brain, database: Database, told_as: str) -> None:
    """What happened stays true once told: the bundled model called "Melanie asked Caroline
    about the camping trip" ended by "… shared a great time exploring nature" (LoCoMo
    conv-26, predicates 0.64 alike). Marked an event at extraction, the memory is not asked
    about and stays current; the same memory marked a state is asked, and retired."""
    brain.facts = {"Did you enjoy the camping trip?": [
                       FactSpec("Melanie asked Caroline about the camping trip", type=told_as)],
                   "We had a great time exploring nature.": [
                       FactSpec("Melanie and Caroline shared a great time exploring nature",
                                type="event")]}
    brain.still_true = ends(("Melanie and Caroline shared a great time exploring nature",
                             "Melanie asked Caroline about the camping trip"))
    first = await consolidate(client, "Did you enjoy the camping trip?")
    job = await consolidate(client, "We had a great time exploring nature.")
    lasting = await count(database, "SELECT count(*) FROM memories WHERE lasting AND "
                          "text = 'Melanie asked Caroline about the camping trip'")
    if told_as == "event":
        assert lasting == 0
        assert [r["event"] for r in job["results"]] == ["ADD"]
        assert brain.resolve_calls == 0
        assert await texts(client, user_id="u1") == {
            "Melanie asked Caroline about the camping trip",
            "Melanie and Caroline shared a great time exploring nature"}
    else:
        assert lasting == 1
        assert [(r["event"], r["previous_id"]) for r in job["results"]] == [
            ("SUPERSEDE", first["results"][0]["id"])]


@pytest.mark.parametrize("told_as", ["state", "event"])
async def test_an_event_told_again_is_confirmed_not_retired(
        client: httpx.AsyncClient, brain: Brain, told_as: str) -> None:
    """Two tellings so alike as sentences (0.93) that they are one memory: a state's newer
    telling takes its place, an event's confirms it (the event still happened)."""
    brain.facts = {"I read a book to my kids tonight.": [
                       FactSpec("Melanie read a book to her kids", type=told_as)],
                   "I read a story to my children.": [
                       FactSpec("Melanie read a story to her children", type="event")]}
    first = await consolidate(client, "I read a book to my kids tonight.")
    job = await consolidate(client, "I read a story to my children.")
    [result] = job["results"]
    if told_as == "event":
        assert (result["event"], result["id"]) == ("NOOP", first["results"][0]["id"])
        assert await texts(client, user_id="u1") == {"Melanie read a book to her kids"}
    else:
        assert (result["event"], result["previous_id"]) == (
            "SUPERSEDE", first["results"][0]["id"])
        assert await texts(client, user_id="u1") == {"Melanie read a story to her children"}


async def test_a_fact_like_no_memory_is_added_without_asking(client: httpx.AsyncClient,
                                                             brain: Brain) -> None:
    brain.facts = {"I have a parrot.": ["User has a parrot"],
                   "My favourite number is 7.": ["User's favourite number is 7"]}
    await consolidate(client, "I have a parrot.")
    job = await consolidate(client, "My favourite number is 7.")
    assert [r["event"] for r in job["results"]] == ["ADD"]
    assert brain.resolve_calls == 0  # nothing similar enough to decide about


def ravi_lives_in(lives: dict[str, str]) -> Graph:
    """A graph model that gives Ravi an exclusive lives_in for each fact in ``lives``
    (fact text → place)."""

    def graph(facts: list[str]) -> dict[str, Any]:
        places = [(index, lives[fact]) for index, fact in enumerate(facts) if fact in lives]
        return {"entities": [{"name": "Ravi", "type": "person", "summary": "a violinist"}] +
                [{"name": place, "type": "place", "summary": "where Ravi lives"}
                 for _, place in places],
                "relations": [{"source": "Ravi", "relation": "lives_in", "target": place,
                               "fact": index, "exclusive": True} for index, place in places]}

    return graph


async def test_an_exclusive_relation_supersedes_what_the_model_missed(
        client: httpx.AsyncClient, brain: Brain) -> None:
    """The model ADDs "Ravi lives in Perth" next to "Ravi lives in Canada", but the graph step
    lists lives_in as exclusive: the old home's memory is superseded, not left current."""
    brain.facts = {"I live in Canada and I play the violin.": ["Ravi lives in Canada",
                                                               "Ravi plays the violin"],
                   "We live in Perth now.": ["Ravi lives in Perth now"]}
    # the model says the old home is still true
    brain.graph = ravi_lives_in({"Ravi lives in Canada": "Canada",
                                 "Ravi lives in Perth now": "Perth"})
    first = await consolidate(client, "I live in Canada and I play the violin.")
    canada = next(r for r in first["results"] if r["memory"] == "Ravi lives in Canada")
    job = await consolidate(client, "We live in Perth now.")
    [perth] = job["results"]
    assert (perth["event"], perth["previous_id"]) == ("SUPERSEDE", canada["id"])
    assert await texts(client, user_id="u1") == {"Ravi lives in Perth now",
                                                  "Ravi plays the violin"}
    old = (await client.get(f"/v1/memories/{canada['id']}")).json()
    assert old["superseded_by"] == perth["id"]
    [added] = await history(client, perth["id"])
    assert (added["decision"], added["related_memory_id"]) == ("SUPERSEDE", canada["id"])


async def test_a_relation_given_to_the_wrong_person_ends_no_memory_of_theirs(
        client: httpx.AsyncClient, brain: Brain) -> None:
    """The graph model files Caroline's new home under Melanie, whose exclusive lives_in it
    then replaces; Melanie's home fact is not retired by a fact about Caroline."""
    brain.facts = {"I live in Boston.": ["Melanie lives in Boston"],
                   "I live in Denver.": ["Caroline lives in Denver"]}

    def graph(facts: list[str]) -> dict[str, Any]:
        place = {"Melanie lives in Boston": "Boston", "Caroline lives in Denver": "Denver"}
        return {"entities": [{"name": "Melanie", "type": "person", "summary": "a painter"}] +
                [{"name": place[fact], "type": "place", "summary": "a city"}
                 for fact in facts],
                "relations": [{"source": "Melanie", "relation": "lives_in",
                               "target": place[fact], "fact": index, "exclusive": True}
                              for index, fact in enumerate(facts)]}

    brain.graph = graph
    await consolidate(client, "I live in Boston.")
    job = await consolidate(client, "I live in Denver.")
    assert [(r["event"], r["previous_id"]) for r in job["results"]] == [("ADD", None)]
    assert await texts(client, user_id="u1") == {"Melanie lives in Boston",
                                                  "Caroline lives in Denver"}


@pytest.mark.parametrize("told_as", ["state", "event"])
async def test_an_exclusive_relation_never_ends_an_event(
        client: httpx.AsyncClient, brain: Brain, told_as: str) -> None:
    """"Ravi moved to Canada" gives Ravi an exclusive lives_in, which "Ravi lives in Perth
    now" replaces in the graph; the move still happened, so its memory stays current. Told
    as a state ("lives in"), the same memory is retired."""
    old = "Ravi moved to Canada" if told_as == "event" else "Ravi lives in Canada"
    brain.facts = {"I live in Canada.": [FactSpec(old, type=told_as)],
                   "We live in Perth now.": ["Ravi lives in Perth now"]}
    # the model says the old fact is still true
    brain.graph = ravi_lives_in({old: "Canada", "Ravi lives in Perth now": "Perth"})
    first = await consolidate(client, "I live in Canada.")
    job = await consolidate(client, "We live in Perth now.")
    [perth] = job["results"]
    if told_as == "event":
        assert (perth["event"], perth["previous_id"]) == ("ADD", None)
        assert await texts(client, user_id="u1") == {old, "Ravi lives in Perth now"}
    else:
        assert (perth["event"], perth["previous_id"]) == ("SUPERSEDE",
                                                          first["results"][0]["id"])


async def test_facts_are_searchable_while_the_graph_step_runs(
        client: httpx.AsyncClient, brain: Brain, scripted_llm: ScriptedLLM) -> None:
    """The graph is a projection of the facts and comes last: while its LLM call is still
    out, the facts are written, found by search and listed on the RUNNING job; the job is
    SUCCEEDED once the graph shows them too."""
    brain.facts = {"I live in Oslo.": ["Dana lives in Oslo"]}
    async with held_at(client, scripted_llm, brain, "ExtractedGraph",
                       said("I live in Oslo.")) as (job_id, job):
        assert job["status"] == "RUNNING"
        assert [(r["memory"], r["event"]) for r in job["results"]] == [
            ("Dana lives in Oslo", "ADD")]
        found = await client.post("/v1/memories/search", json={
            "query": "where does Dana live", "user_id": "u1", "filters": {"kind": "fact"}})
        assert [hit["memory"] for hit in found.json()["results"]] == ["Dana lives in Oslo"]
    job = await finished(client, job_id)
    assert job["status"] == "SUCCEEDED"
    assert brain.graph_calls == 1


async def test_facts_are_searchable_before_the_model_says_what_they_end(
        client: httpx.AsyncClient, brain: Brain, scripted_llm: ScriptedLLM) -> None:
    """A fact the model is asked about is written as soon as code has decided it is no
    repeat: while the question is out it is found by search, beside the memory it will end
    and a held fact (a retelling of another memory, which the answer could change) is not;
    the answer then retires the old memory, and history records the supersession on both,
    as when it is decided before the write."""
    brain.facts = {"I live in Paris and I like jazz.": ["User lives in Paris",
                                                        "User likes jazz"],
                   "I moved to Berlin. I like jazz and blues.": ["User lives in Berlin",
                                                                 "User likes jazz and blues"]}
    paris, jazz = (await consolidate(client, "I live in Paris and I like jazz."))["results"]
    brain.still_true = ends(("User lives in Berlin", "User lives in Paris"))
    async with held_at(client, scripted_llm, brain, "Checks",
                       said("I moved to Berlin. I like jazz and blues.")) as (job_id, job):
        assert job["status"] == "RUNNING"
        assert [(r["memory"], r["event"]) for r in job["results"]] == [
            ("User lives in Berlin", "ADD")]
        assert await texts(client, user_id="u1") == {"User lives in Paris", "User likes jazz",
                                                      "User lives in Berlin"}
        found = await client.post("/v1/memories/search", json={
            "query": "where does the user live", "user_id": "u1", "filters": {"kind": "fact"}})
        assert "User lives in Berlin" in [hit["memory"] for hit in found.json()["results"]]
    job = await finished(client, job_id)
    assert job["status"] == "SUCCEEDED"
    berlin, blues = job["results"]
    assert (berlin["memory"], berlin["event"], berlin["previous_id"]) == (
        "User lives in Berlin", "SUPERSEDE", paris["id"])
    assert (blues["memory"], blues["event"], blues["id"]) == (
        "User likes jazz and blues", "UPDATE", jazz["id"])
    assert await texts(client, user_id="u1") == {"User lives in Berlin",
                                                  "User likes jazz and blues"}
    [added] = await history(client, berlin["id"])
    assert (added["decision"], added["related_memory_id"]) == ("SUPERSEDE", paris["id"])
    assert added["prompt_version"] == EXTRACT_VERSION  # written before the model's answer
    retired = (await history(client, paris["id"]))[-1]
    assert (retired["event"], retired["related_memory_id"]) == ("SUPERSEDE", berlin["id"])
    assert retired["prompt_version"] == f"{EXTRACT_VERSION}+{RESOLVE_VERSION}"


async def test_without_the_graph_step_a_job_ends_when_its_facts_are_settled(
        client: httpx.AsyncClient, brain: Brain, app: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``consolidation.extract_graph`` off: a job with nothing to ask ends with its first
    write, one that asks the model once its answer is written; no graph call either way."""
    monkeypatch.setattr(app.state.resources.settings.consolidation, "extract_graph", False)
    brain.facts = {"I live in Paris.": ["User lives in Paris"],
                   "I moved to Berlin.": ["User lives in Berlin"]}
    brain.still_true = ends(("User lives in Berlin", "User lives in Paris"))
    first = await consolidate(client, "I live in Paris.")
    assert [(r["event"], r["memory"]) for r in first["results"]] == [
        ("ADD", "User lives in Paris")]
    assert first["usage"]["llm_calls"] == 1
    second = await consolidate(client, "I moved to Berlin.")
    assert [(r["event"], r["previous_id"]) for r in second["results"]] == [
        ("SUPERSEDE", first["results"][0]["id"])]
    assert second["usage"]["llm_calls"] == 2
    assert (brain.resolve_calls, brain.graph_calls) == (1, 0)
    assert await texts(client, user_id="u1") == {"User lives in Berlin"}


# -- failures and retries ------------------------------------------------------------------


async def test_bad_json_is_asked_again(client: httpx.AsyncClient, brain: Brain,
                                       scripted_llm: ScriptedLLM) -> None:
    brain.facts = {"I speak Welsh.": ["User speaks Welsh"]}
    scripted_llm.script('{"facts": [{"text": "User speaks Welsh"',)  # cut off mid-object
    job = await consolidate(client, "I speak Welsh.")
    assert job["status"] == "SUCCEEDED"
    assert [r["memory"] for r in job["results"]] == ["User speaks Welsh"]
    assert job["usage"]["llm_calls"] == 3  # the cut-off reply, its re-ask, the graph
    assert job["attempts"] == 1
    correction = scripted_llm.requests[1].messages[-1]["content"]
    assert "not valid" in correction


async def test_bad_json_always_fails_keeps_the_episode_and_retry_succeeds(
        client: httpx.AsyncClient, brain: Brain, scripted_llm: ScriptedLLM,
        database: Database) -> None:
    scripted_llm.responder = lambda body: "I'm sorry, I can't produce JSON."
    job = await consolidate(client, "I collect stamps.")
    assert job["status"] == "FAILED"
    assert job["error"]["code"] == "llm_bad_output"
    assert "ExtractedFacts" in job["error"]["detail"]
    assert job["results"] == []
    assert job["completed_at"] is not None
    assert job["usage"]["llm_calls"] == 2  # the reply and its one re-ask
    assert await count(database, "SELECT count(*) FROM episodes") == 1
    assert await count(database, "SELECT count(*) FROM memories WHERE kind = 'fact'") == 0
    # Nothing said is lost: the message is a memory, searchable, whatever extraction did.
    assert await count(database, "SELECT count(*) FROM memories WHERE kind = 'message'") == 1
    hits = (await client.post("/v1/memories/search", json={
        "query": "stamp collection", "user_id": "u1"})).json()["results"]
    assert [(hit["memory"], hit["kind"]) for hit in hits] == [("I collect stamps.", "message")]
    assert (await client.get(f"/v1/jobs/{job['id']}")).json()["status"] == "FAILED"

    brain.facts = {"I collect stamps.": ["User collects stamps"]}
    scripted_llm.responder = brain
    retried = await client.post(f"/v1/jobs/{job['id']}/retry")
    assert retried.status_code == 202, retried.text
    assert retried.json()["status"] == "PENDING"
    assert retried.json()["error"] is None
    done = await finished(client, job["id"])
    assert done["status"] == "SUCCEEDED", done
    assert [r["memory"] for r in done["results"]] == ["User collects stamps"]
    assert done["episode_id"] == job["episode_id"]
    again = await client.post(f"/v1/jobs/{job['id']}/retry")
    assert again.status_code == 409
    assert again.json()["error"] == "conflict"


async def test_llm_outage_is_retried_with_backoff(client: httpx.AsyncClient, brain: Brain,
                                                  scripted_llm: ScriptedLLM) -> None:
    brain.facts = {"I sail.": ["User sails"]}
    # max_attempts=2 per call: the first job attempt meets two 503s and gives the job back.
    scripted_llm.script(Reply.error(503), Reply.error(503))
    response = await post(client, said("I sail."))
    assert response.status_code == 202, response.text
    job = await finished(client, response.json()["job_id"])
    assert job["status"] == "SUCCEEDED", job
    assert job["attempts"] == 2
    assert [r["memory"] for r in job["results"]] == ["User sails"]
    assert job["usage"]["llm_calls"] == 2  # extract and graph: the 503s were no replies


async def test_llm_outage_that_lasts_fails_the_job(client: httpx.AsyncClient,
                                                   scripted_llm: ScriptedLLM) -> None:
    scripted_llm.responder = lambda body: Reply.error(503, "overloaded")
    response = await post(client, said("I knit."))
    job = await finished(client, response.json()["job_id"])
    assert job["status"] == "FAILED"
    assert job["error"]["code"] == "llm_unavailable"
    assert "gave up after 3 attempts" in job["error"]["detail"]  # 1 + max_retries=2
    # The endpoint's address is the operator's business, not the tenant's.
    assert scripted_llm.base_url.split("//")[1].split("/")[0] not in str(job["error"])


async def test_a_refused_llm_request_tells_the_tenant_no_address(
        client: httpx.AsyncClient, scripted_llm: ScriptedLLM) -> None:
    scripted_llm.responder = lambda body: Reply.error(400, "unknown model")
    job = await finished(client, (await post(client, said("I row."))).json()["job_id"])
    assert job["error"]["code"] == "llm_request_rejected"
    assert job["error"]["detail"] == ("the LLM endpoint refused the request with HTTP 400: "
                                      "unknown model")


async def test_a_lost_enqueue_is_swept_up(client: httpx.AsyncClient, brain: Brain,
                                          api_key: str, database: Database) -> None:
    """A job committed but never enqueued (the process died in between) still runs."""
    brain.facts = {"I bake bread.": ["User bakes bread"]}
    project_id = await _project_of(database, api_key)
    async with database.session_scope() as session:
        episode = await episodes.add(
            session, project_id, Scope(user_id="u1"), messages=said("I bake bread."),
            metadata={}, instructions=None, idempotency_key=None,
            observed_at=await _now(database), expires_at=None)
        job = await jobs.add(session, project_id, episode.id)
    done = await finished(client, str(job.id), timeout_s=30)
    assert done["status"] == "SUCCEEDED"
    assert await texts(client, user_id="u1") == {"User bakes bread"}


# -- concurrency and idempotency -----------------------------------------------------------


async def test_twenty_concurrent_episodes_of_one_scope_make_no_duplicates(
        client: httpx.AsyncClient, brain: Brain, database: Database) -> None:
    # The same fact in six spellings: some repeat word for word, the rest hold the same words.
    spellings = [f"{who} loves {what}{end}" for who in ("User", "user")
                 for what, end in (("sushi", ""), ("sushi", "."), ("Sushi", "!"))]
    brain.facts = {f"I love sushi ({n}).": [spellings[n % len(spellings)]] for n in range(20)}

    responses = await asyncio.gather(*(post(client, said(f"I love sushi ({n})."))
                                       for n in range(20)))
    assert all(response.status_code == 202 for response in responses)
    done = await asyncio.gather(*(finished(client, r.json()["job_id"]) for r in responses))
    assert all(job["status"] == "SUCCEEDED" for job in done), [j["error"] for j in done]
    events = sorted(job["results"][0]["event"] for job in done)
    assert events == ["ADD"] + ["NOOP"] * 19
    assert len(await memories(client, user_id="u1")) == 1
    assert await count(database, "SELECT count(*) FROM memories WHERE kind = 'fact'") == 1
    assert await count(database, "SELECT count(*) FROM memories WHERE kind = 'message'") == 20
    assert await count(database, "SELECT count(*) FROM episodes") == 20


async def test_idempotent_repost_is_one_episode_and_one_job(client: httpx.AsyncClient,
                                                            brain: Brain,
                                                            database: Database) -> None:
    brain.facts = {"I ski.": ["User skis"]}
    first = await post(client, said("I ski."), idempotency_key="episode-1")
    again = await post(client, said("I ski."), idempotency_key="episode-1")
    header = await client.post("/v1/memories", json={"messages": said("I ski."), "user_id": "u1",
                                                     "wait": True},
                               headers={"Idempotency-Key": "episode-1"})
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()
    assert header.status_code == 200
    assert header.json()["id"] == first.json()["job_id"]
    assert header.json()["status"] == "SUCCEEDED"
    assert await count(database, "SELECT count(*) FROM episodes") == 1
    assert await count(database, "SELECT count(*) FROM jobs") == 1
    assert await count(database, "SELECT count(*) FROM memories WHERE kind = 'fact'") == 1
    assert await count(database, "SELECT count(*) FROM memories WHERE kind = 'message'") == 1
    other = await post(client, said("I snowboard."), idempotency_key="episode-1")
    assert other.status_code == 409
    assert other.json()["error"] == "idempotency_key_reused"


async def test_jobs_belong_to_their_project(client: httpx.AsyncClient, brain: Brain,
                                            api_key_factory: KeyFactory,
                                            app: Any) -> None:
    brain.facts = {"I row.": ["User rows"]}
    job = await consolidate(client, "I row.")
    stranger = await api_key_factory()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test",
                                 headers={"Authorization": f"Bearer {stranger}"}) as other:
        for response in (await other.get(f"/v1/jobs/{job['id']}"),
                         await other.post(f"/v1/jobs/{job['id']}/retry"),
                         await other.get(f"/v1/memories/{job['results'][0]['id']}")):
            assert response.status_code == 404, response.text
            assert response.json()["error"] == "not_found"
    missing = await client.get("/v1/jobs/00000000-0000-7000-8000-000000000000")
    assert missing.status_code == 404


# -- context and instructions --------------------------------------------------------------


async def test_earlier_episodes_and_instructions_reach_the_prompt(
        client: httpx.AsyncClient, brain: Brain, scripted_llm: ScriptedLLM) -> None:
    brain.facts = {"I adopted a cat.": ["User adopted a cat"], "She is called Miso.":
                   ["User's cat is called Miso"]}
    project = await client.patch("/v1/project", json={"instructions": "Keep pets only."})
    assert project.status_code == 200
    assert project.json()["instructions"] == "Keep pets only."
    assert (await client.get("/v1/project")).json()["instructions"] == "Keep pets only."
    await consolidate(client, "I adopted a cat.", observed_at="2025-03-01T09:00:00Z")
    await consolidate(client, "She is called Miso.", observed_at="2025-03-01T09:05:00Z",
                      instructions="Name animals by name.")
    extraction = [r for r in scripted_llm.requests
                  if r.body["response_format"]["json_schema"]["name"] == "ExtractedFacts"][-1]
    system, user = extraction.messages[0]["content"], extraction.messages[1]["content"]
    assert system.index("Keep pets only.") < system.index("Name animals by name.")
    assert "Conversation date: 2025-03-01" in user
    assert "Said before (context only, do not extract):\nUser: I adopted a cat." in user
    assert "[0] User: She is called Miso." in user
    cleared = await client.patch("/v1/project", json={"instructions": None})
    assert cleared.json()["instructions"] is None


# -- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "field"), [
    ({"messages": said("hi"), "user_id": "u1", "infer": False,
      "instructions": "Keep pets only."}, "instructions"),
    ({"messages": said("hi"), "user_id": "u1", "infer": False, "wait": True}, "wait"),
    ({"messages": said("hi"), "user_id": "u1", "instructions": "x" * 4001}, "instructions"),
    ({"messages": said("hi"), "user_id": "u1", "observed_at": "yesterday"}, "observed_at"),
    ({"messages": said("  ", ""), "user_id": "u1"}, "messages"),
    ({"messages": said("hi")}, "user_id"),
])
async def test_bad_add_stores_nothing(client: httpx.AsyncClient, database: Database,
                                      body: dict[str, Any], field: str) -> None:
    response = await client.post("/v1/memories", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "validation_error"
    assert field in response.json()["detail"]
    assert await count(database, "SELECT count(*) FROM episodes") == 0
    assert await count(database, "SELECT count(*) FROM jobs") == 0


async def test_as_of_and_include_superseded_exclude_each_other(
        client: httpx.AsyncClient) -> None:
    listed = await client.get("/v1/memories", params={"as_of": "2024-01-01T00:00:00Z",
                                                      "include_superseded": "true"})
    searched = await client.post("/v1/memories/search", json={
        "query": "q", "as_of": "2024-01-01T00:00:00Z", "include_superseded": True})
    for response in (listed, searched):
        assert response.status_code == 422, response.text
        assert "as_of" in response.json()["detail"]
    bad_patch = await client.patch("/v1/project", json={"instructions": "x" * 4001})
    assert bad_patch.status_code == 422


async def _project_of(database: Database, api_key: str) -> Any:
    prefix = api_key.split("_")[1]
    async with database.engine.connect() as connection:
        return (await connection.execute(
            sa.text("SELECT project_id FROM api_keys WHERE prefix = :prefix"),
            {"prefix": prefix})).scalar_one()


async def _now(database: Database) -> Any:
    async with database.engine.connect() as connection:
        return (await connection.execute(sa.text("SELECT now()"))).scalar_one()
