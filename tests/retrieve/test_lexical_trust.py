"""A lexical list that matched only incidental words of the query weighs less in a hybrid
ranking (``fusion.lexical_trust``): on the memory index, which knows each term's rarity;
Postgres's ts_rank_cd does not, and ranks as before. Each compared with the same server
whose ``lexical_clarity`` is 0 (what ranking was before it), on the same data."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.config import SearchSettings, Settings
from app.embeddings import SentenceTransformerEmbedder
from app.main import create_app
from app.retrieve.fusion import lexical_trust

Clients = dict[str, httpx.AsyncClient]

WISHES = ["try the new bakery downtown", "learn the guitar this year", "visit Japan someday",
          "paint the fence blue", "adopt a cat", "run a half marathon", "grow tomatoes",
          "take a pottery class", "go skiing in March", "bake sourdough bread"]
# Two-turn conversations a day apart (what each turn lends its neighbour stays in its own),
# most of them holding "like", as chats do.
CONVERSATIONS = [
    ["Rough week?", "It's good to have people you can lean on when things get hard."],
    *(["Any plans?", f"I'd like to {wish}."] for wish in WISHES),
    ["Anything new?", "My brother fixed the kitchen sink."],
    ["How was the weekend?", "I'm a progressive through and through: I vote for "
                              "candidates who fight for equal rights."],
]
INCIDENTAL = CONVERSATIONS[0][1]
ANSWER = CONVERSATIONS[-1][1]
QUESTION = "What would her political leaning likely be?"


@pytest.fixture(scope="module", params=["memory", "postgres"])
async def apps(request: pytest.FixtureRequest, settings: Settings,
               embedder: SentenceTransformerEmbedder,
               app: FastAPI) -> AsyncIterator[dict[str, FastAPI]]:
    index = request.param
    made: dict[str, FastAPI] = {}
    for name, clarity in (("on", SearchSettings().lexical_clarity), ("blind", 0.0)):
        own = settings.model_copy(update={
            "search": SearchSettings(index=index, lexical_clarity=clarity),
            "data_dir": settings.data_dir / f"trust-{index}-{name}"})
        made[name] = create_app(own, embedder=embedder)
    async with made["on"].router.lifespan_context(made["on"]), \
            made["blind"].router.lifespan_context(made["blind"]):
        yield made


async def search(client: httpx.AsyncClient, query: str) -> list[dict[str, Any]]:
    response = await client.post("/v1/memories/search", json={
        "query": query, "user_id": "u1", "top_k": 3, "explain": True})
    assert response.status_code == 200, response.text
    hits: list[dict[str, Any]] = response.json()["results"]
    return hits


async def test_words_the_query_holds_by_chance_do_not_outrank_its_meaning(
        clients: Clients, request: pytest.FixtureRequest) -> None:
    """"Leaning" finds "lean on" by its stem, and "likely" every "like": the best lexical
    matches hold little of the question. The turn about how she votes shares no word with
    it and is nearest in meaning."""
    for day, turns in enumerate(CONVERSATIONS, 1):
        response = await clients["on"].post("/v1/memories", json={
            "messages": [{"role": "user", "content": text} for text in turns],
            "user_id": "u1", "infer": False, "observed_at": f"2023-05-{day:02}T10:00:00Z"})
        assert response.status_code == 201, response.text
    on, blind = await search(clients["on"], QUESTION), await search(clients["blind"], QUESTION)
    weight = on[0]["explain"]["lexical"]["weight"]
    assert blind[0]["explain"]["lexical"]["weight"] == SearchSettings().lexical_weight
    if request.node.callspec.params["apps"] == "postgres":  # no term statistics: as set
        assert weight == SearchSettings().lexical_weight
        assert [hit["memory"] for hit in on] == [hit["memory"] for hit in blind]
        return
    assert blind[0]["memory"] == INCIDENTAL
    assert on[0]["memory"] == ANSWER
    assert 0 < weight < SearchSettings().lexical_weight

@pytest.mark.parametrize(("scores", "weight", "clarity", "trust"), [
    ([4.0, 3.0, 3.0], 4.0, 0.4, 1.0),          # the best matches hold most of the query
    ([2.0] + [0.4] * 9, 5.0, 0.4, 0.28),       # one stem among common words: mean 0.56 of 2
    ([], 5.0, 0.4, 0.0),                       # nothing matched
    ([2.0], None, 0.4, 1.0),                   # a source without term statistics
    ([0.1], 5.0, 0.0, 1.0),                    # clarity 0: trusted as set
])
def test_lexical_trust(scores: list[float], weight: float | None, clarity: float,
                       trust: float) -> None:
    assert lexical_trust(scores, weight, clarity) == pytest.approx(trust)
