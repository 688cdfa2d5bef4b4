"""Episode-aware ranking on both candidate sources: turns of one conversation lend each other
score, a query that names a period finds what was said then, or someone, what they said, a
greeting that names a topic says less of it than a turn about it, and ``include: ["context"]``
gives a hit the exchange it belongs to. Each compared with the same server whose weight for
that signal is 0 (what ranking was before it), on the same data."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.config import SearchSettings, Settings
from app.embeddings import SentenceTransformerEmbedder
from app.main import create_app
from tests.consolidate.scripted_brain import Brain

Clients = dict[str, httpx.AsyncClient]


@pytest.fixture(scope="module", params=["memory", "postgres"])
async def apps(request: pytest.FixtureRequest, settings: Settings,
               embedder: SentenceTransformerEmbedder,
               app: FastAPI) -> AsyncIterator[dict[str, FastAPI]]:
    """On the suite's database, searching through the index named by the parameter: the
    default ranking ("on"), and the same without conversations, dates, speakers and
    lengths ("off")."""
    index = request.param
    off = {"conversation_weight": 0.0, "neighbour_weight": 0.0, "date_weight": 0.0,
           "speaker_weight": 0.0, "length_weight": 0.0}
    made: dict[str, FastAPI] = {}
    for name, weights in (("on", {}), ("off", off)):
        own = settings.model_copy(update={
            "search": SearchSettings(index=index, **weights),
            "data_dir": settings.data_dir / f"conversation-{index}-{name}"})
        made[name] = create_app(own, embedder=embedder)
    async with made["on"].router.lifespan_context(made["on"]), \
            made["off"].router.lifespan_context(made["off"]):
        yield made


def said(name: str, text: str) -> dict[str, Any]:
    return {"role": "user", "name": name, "content": text}


async def post(client: httpx.AsyncClient, day: str, *turns: tuple[str, str],
               one_by_one: bool = False) -> None:
    batches = [[turn] for turn in turns] if one_by_one else [list(turns)]
    for batch in batches:
        response = await client.post("/v1/memories", json={
            "messages": [said(*turn) for turn in batch], "user_id": "u1", "infer": False,
            "observed_at": day})
        assert response.status_code == 201, response.text


async def search(client: httpx.AsyncClient, query: str, **fields: Any) -> list[dict[str, Any]]:
    response = await client.post("/v1/memories/search",
                                 json={"query": query, "user_id": "u1", **fields})
    assert response.status_code == 200, response.text
    hits: list[dict[str, Any]] = response.json()["results"]
    return hits


async def top(client: httpx.AsyncClient, query: str, k: int) -> list[str]:
    return [hit["memory"] for hit in await search(client, query, top_k=k)]


PAINTING = [("Melanie", "Guess what I finally finished painting last weekend?"),
            ("Caroline", "No idea, tell me!"),
            ("Melanie", "A sunrise over the lake, all orange and deep purple."),
            ("Caroline", "Gorgeous. You should hang it in the hallway.")]
ELSEWHERE = [
    ("2023-03-02T10:00:00Z", [("Melanie", "Painting with my kids is the best part of my week."),
                              ("Caroline", "Kids love messy art.")]),
    ("2023-03-09T10:00:00Z", [("Melanie", "I bought new brushes for painting."),
                              ("Caroline", "Which brand?")]),
    ("2023-03-16T10:00:00Z", [("Melanie", "My painting class was cancelled again."),
                              ("Caroline", "That is annoying.")]),
    ("2023-03-23T10:00:00Z", [("Melanie", "I watched a documentary about painters."),
                              ("Caroline", "Was it any good?")]),
]


@pytest.mark.parametrize("one_by_one", [False, True], ids=["by-session", "by-message"])
async def test_an_answer_borrows_the_score_of_the_question_it_answers(
        clients: Clients, one_by_one: bool) -> None:
    for day, turns in ELSEWHERE:
        await post(clients["on"], day, *turns, one_by_one=one_by_one)
    await post(clients["on"], "2023-03-30T10:00:00Z", *PAINTING, one_by_one=one_by_one)
    answer = PAINTING[2][1]
    question = "What did Melanie finish painting?"
    on, off = await top(clients["on"], question, 10), await top(clients["off"], question, 10)
    assert on.index(answer) + 3 <= off.index(answer), (on, off)
    explained = {h["memory"]: h["explain"] for h in await search(clients["on"], question,
                                                                 explain=True)}
    lent = explained[answer]["conversation"]
    assert lent["best"] > lent["neighbour"]
    assert lent["gain"] > 0
    # Two turns before the answer, Melanie's question (she goes on about it) lends by half.
    asked = explained[PAINTING[0][1]]
    assert lent["further"] == pytest.approx(asked["fused"] - asked["conversation"]["gain"],
                                            abs=1e-3)
    weights = SearchSettings()
    assert lent["gain"] == pytest.approx(
        weights.conversation_weight * lent["best"]
        + weights.neighbour_weight * (lent["neighbour"] + lent["further"] / 2), abs=1e-3)


async def test_a_dated_question_finds_what_was_said_then(clients: Clients) -> None:
    """Asked "three weeks ago", of meals said a week apart: no word of the question tells
    them apart (their contexts hold their dates, not "ago"), the period does."""
    today = datetime.now(UTC).replace(hour=19, minute=0, second=0, microsecond=0)
    meals = [f"I cooked {dish} for the family tonight."
             for dish in ("chili", "mushroom risotto", "lentil soup", "pancakes", "lasagna")]
    for weeks, meal in enumerate(meals):
        when = today - timedelta(weeks=weeks)
        await post(clients["on"], when.isoformat(), ("Maria", meal))
    question = "What did Maria cook for her family three weeks ago?"
    assert (await top(clients["on"], question, 1)) == [meals[3]]
    assert (await top(clients["off"], question, 1)) != [meals[3]]
    [hit] = await search(clients["on"], question, top_k=1, explain=True)
    assert hit["explain"]["date"] == SearchSettings().date_weight


async def test_a_question_that_names_someone_finds_what_they_said(clients: Clients) -> None:
    """Bob's question holds Alice's name and the question's words; Alice's answer says
    what she paints. Whoever is named, their turns gain; a question naming no one is ranked
    as before."""
    for day, turns in (
            ("2023-04-01T10:00:00Z", [("Bob", "I painted the garden fence on Saturday."),
                                      ("Alice", "Did it take long?")]),
            ("2023-04-08T10:00:00Z", [("Alice", "My grandmother turns ninety next month."),
                                      ("Bob", "A big party then!")]),
            ("2023-04-15T10:00:00Z", [("Bob", "The museum opened a show of Dutch paintings."),
                                      ("Alice", "Let's go on Sunday.")])):
        await post(clients["on"], day, *turns)
    asked = ("Bob", "Alice, do you still paint?")
    answer = ("Alice", "These days it is mostly watercolour portraits of my grandmother.")
    await post(clients["on"], "2023-05-02T10:00:00Z", asked, answer)
    question = "What does Alice paint?"
    assert (await top(clients["on"], question, 1)) == [answer[1]]
    assert (await top(clients["off"], question, 1)) == [asked[1]]
    explained = {h["memory"]: h["explain"] for h in await search(clients["on"], question,
                                                                 explain=True)}
    assert explained[answer[1]]["speaker"] == SearchSettings().speaker_weight
    assert explained[asked[1]]["speaker"] == 0.0
    unnamed = {h["memory"]: h["explain"] for h in await search(clients["on"], "what is painted?",
                                                               explain=True)}
    assert {e["speaker"] for e in unnamed.values()} == {0.0}


async def test_a_question_is_searched_without_the_names_of_its_speakers(
        clients: Clients, brain: Brain) -> None:
    """Nate greets Joanna by name in every turn; what Joanna says of her script does not
    name her. Searched for with her name, the greetings match it by word and by vector;
    searched for without it, with her turns gaining for who said them, her answer comes
    first. A fact is about whom it names: of two that match the rest of the question as
    well, the one naming Joanna gains as her turns do."""
    for day, turns in (
            ("2023-07-01T10:00:00Z", [("Nate", "Joanna! Long time, Joanna, how are you?"),
                                      ("Joanna", "Busy, but good.")]),
            ("2023-07-08T10:00:00Z", [("Nate", "Joanna, did you see the game last night?"),
                                      ("Joanna", "I missed it, sadly.")]),
            ("2023-07-15T10:00:00Z", [("Nate", "Good luck with everything, Joanna!"),
                                      ("Joanna", "Thanks, you too.")]),
            ("2023-07-22T10:00:00Z", [("Nate", "What have you been up to?"),
                                      ("Joanna", "I wrapped up the screenplay about my "
                                                 "grandmother's farm last week.")])):
        await post(clients["on"], day, *turns)
    question = "What did Joanna finish writing?"
    assert (await top(clients["on"], question, 1)) == [
        "I wrapped up the screenplay about my grandmother's farm last week."]
    assert (await top(clients["off"], question, 1)) != (await top(clients["on"], question, 1))
    [hit] = await search(clients["on"], question, top_k=1, explain=True)
    assert hit["explain"]["searched"] == "What did finish writing?"
    unnamed = await search(clients["on"], "what did they finish writing?", top_k=1,
                           explain=True)
    assert unnamed[0]["explain"]["searched"] == "what did they finish writing?"

    brain.facts = {"We both finished a race this spring.": ["Joanna finished a marathon",
                                                           "Nate finished a marathon"]}
    response = await clients["on"].post("/v1/memories", json={
        "messages": [{"role": "user", "content": "We both finished a race this spring.",
                      "name": "Joanna"}], "user_id": "u1", "wait": True})
    assert response.json()["status"] == "SUCCEEDED", response.json()
    facts = await search(clients["on"], "What race did Joanna finish?", explain=True,
                         filters={"kind": "fact"})
    assert [(f["memory"], f["explain"]["speaker"]) for f in facts] == [
        ("Joanna finished a marathon", SearchSettings().speaker_weight),
        ("Nate finished a marathon", 0.0)]


async def test_a_turn_about_a_topic_outranks_a_greeting_that_names_it(clients: Clients) -> None:
    """On days of their own (so no turn lends another score), among other talk: a greeting
    made of the question's words, and a long turn that answers it."""
    for day, text in (("2023-05-20", "The weather has been awful all week."),
                      ("2023-05-23", "I finally fixed the delivery van's brakes."),
                      ("2023-05-26", "My cousin is visiting from Lyon next weekend."),
                      ("2023-05-29", "We are thinking about a trip to the coast in July.")):
        await post(clients["on"], f"{day}T08:00:00Z", ("Gina", text))
    greeting = "Hi! Busy at the bakery?"
    update = ("The bakery is busy: we hired two more people in April, the sourdough "
              "now goes to three cafes downtown, the weekend queue reaches the corner, and "
              "takings have doubled since March, so we are looking at a second oven.")
    await post(clients["on"], "2023-06-01T08:00:00Z", ("Gina", greeting))
    await post(clients["on"], "2023-06-05T08:00:00Z", ("Gina", update))
    question = "How is the bakery doing?"
    assert (await top(clients["off"], question, 1)) == [greeting]
    assert (await top(clients["on"], question, 1)) == [update]
    explained = {h["memory"]: h["explain"] for h in await search(clients["on"], question,
                                                                 explain=True)}
    assert explained[greeting]["length"] < 0 < explained[update]["length"]


async def test_a_hit_comes_with_its_exchange(clients: Clients, brain: Brain) -> None:
    await post(clients["on"], "2023-03-30T10:00:00Z", *PAINTING[:2])
    await post(clients["on"], "2023-03-30T10:05:00Z", *PAINTING[2:])  # the same conversation
    [hit] = await search(clients["on"], PAINTING[2][1], top_k=1, include=["context"])
    assert hit["memory"] == PAINTING[2][1]
    assert [m["memory"] for m in hit["context"]] == [PAINTING[1][1], PAINTING[3][1]]
    first = await search(clients["on"], PAINTING[0][1], top_k=1, include=["context"])
    assert [m["memory"] for m in first[0]["context"]] == [PAINTING[1][1]]
    assert (await search(clients["on"], PAINTING[0][1], top_k=1))[0]["context"] is None

    brain.facts = {"I moved to Oslo for a job at Equinor.": ["Dana works at Equinor"]}
    response = await clients["on"].post("/v1/memories", json={
        "messages": [{"role": "user", "content": "I moved to Oslo for a job at Equinor.",
                      "name": "Dana"}], "user_id": "u1", "wait": True})
    assert response.json()["status"] == "SUCCEEDED", response.json()
    [fact] = await search(clients["on"], "Where does Dana work?", top_k=1,
                          include=["context"], filters={"kind": "fact"})
    assert fact["memory"] == "Dana works at Equinor"
    assert [m["memory"] for m in fact["context"]] == ["I moved to Oslo for a job at Equinor."]
