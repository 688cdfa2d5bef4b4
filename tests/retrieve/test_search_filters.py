"""Search filters end to end over HTTP: every operator on every field kind, the logic that
combines them, exact ranking against brute force, and the 422 envelope for bad filters."""

from __future__ import annotations

import asyncio
import math
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from app.embeddings import SentenceTransformerEmbedder
from app.limits import MAX_FILTER_CONDITIONS, MAX_FILTER_DEPTH
from app.retrieve.filters import parse_filters
from app.store.db import Database
from app.store.models import Memory
from app.store.repositories import memories as repository

QUERY = "notes"


async def add(client: httpx.AsyncClient, texts: list[str], *,
              metadata: dict[str, Any] | None = None, **scope: str | None) -> list[str]:
    """Stores ``texts`` verbatim in ``scope``; returns their ids in order."""
    ids: list[str] = []
    for start in range(0, len(texts), 200):
        body: dict[str, Any] = {
            "messages": [{"role": "user", "content": text} for text in texts[start:start + 200]],
            "infer": False, **{key: value for key, value in scope.items() if value is not None},
        }
        if metadata is not None:
            body["metadata"] = metadata
        response = await client.post("/v1/memories", json=body)
        assert response.status_code == 201, response.text
        results = response.json()["results"]
        assert all(result["event"] == "ADD" for result in results), results
        ids.extend(result["id"] for result in results)
    return ids


async def search(client: httpx.AsyncClient, filters: dict[str, Any] | None = None,
                 query: str = QUERY, top_k: int = 100, **extra: Any) -> list[dict[str, Any]]:
    # Ranked by cosine alone, so orders and scores compare with brute force.
    body: dict[str, Any] = {"query": query, "top_k": top_k, "ranking": "dense", **extra}
    if filters is not None:
        body["filters"] = filters
    response = await client.post("/v1/memories/search", json=body)
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    return results


async def found(client: httpx.AsyncClient, filters: dict[str, Any] | None,
                names: dict[str, str], **extra: Any) -> set[str]:
    """The names (not ids) of the memories a filtered search returns."""
    by_id = {memory_id: name for name, memory_id in names.items()}
    results = await search(client, filters, **extra)
    ids = [hit["id"] for hit in results]
    assert len(ids) == len(set(ids)), "a memory came back twice"
    return {by_id[memory_id] for memory_id in ids}


async def check_cases(client: httpx.AsyncClient, names: dict[str, str],
                      cases: list[tuple[dict[str, Any], set[str]]]) -> None:
    """Runs every case on the same data and reports all that fail at once. The searches run
    a few at a time, so the embedder batches their queries."""
    gate = asyncio.Semaphore(8)

    async def one(filters: dict[str, Any]) -> set[str]:
        async with gate:
            return await found(client, filters, names)

    results = await asyncio.gather(*(one(filters) for filters, _ in cases))
    wrong = [f"{filters}: expected {sorted(expected)}, got {sorted(got)}"
             for (filters, expected), got in zip(cases, results, strict=True) if got != expected]
    assert not wrong, "\n".join(wrong)


async def count(client: httpx.AsyncClient, **scope: str) -> int:
    response = await client.get("/v1/memories", params={**scope, "limit": 1000})
    assert response.status_code == 200, response.text
    return len(response.json()["results"])


# --- user_id / agent_id / run_id ------------------------------------------------------------

async def add_scoped(client: httpx.AsyncClient) -> dict[str, str]:
    scopes: dict[str, dict[str, str]] = {
        "m1": {"user_id": "alice", "agent_id": "planner", "run_id": "run-1"},
        "m2": {"user_id": "alice", "agent_id": "Helper"},
        "m3": {"user_id": "bob", "run_id": "run-2"},
        "m4": {"agent_id": "planner"},
        "m5": {"user_id": "Alice_Smith", "run_id": "run-10%"},
        "m6": {"run_id": "RUN-3"},
    }
    names = {}
    for name, scope in scopes.items():
        (names[name],) = await add(client, [f"Scoped notes for memory {name}."],
                                   user_id=scope.get("user_id"),
                                   agent_id=scope.get("agent_id"), run_id=scope.get("run_id"))
    return names


ALL_SCOPED = {"m1", "m2", "m3", "m4", "m5", "m6"}

SCOPE_CASES: list[tuple[dict[str, Any], set[str]]] = [
    # eq (bare and explicit)
    ({"user_id": "alice"}, {"m1", "m2"}),
    ({"user_id": {"eq": "alice"}}, {"m1", "m2"}),
    ({"user_id": "ALICE"}, set()),
    ({"agent_id": "planner"}, {"m1", "m4"}),
    ({"run_id": {"eq": "run-2"}}, {"m3"}),
    ({"user_id": "nobody"}, set()),
    # ne: rows with no value (NULL) are "not equal" too
    ({"user_id": {"ne": "alice"}}, {"m3", "m4", "m5", "m6"}),
    ({"agent_id": {"ne": "planner"}}, {"m2", "m3", "m5", "m6"}),
    ({"run_id": {"ne": "run-1"}}, {"m2", "m3", "m4", "m5", "m6"}),
    # in / nin
    ({"user_id": {"in": ["alice", "bob"]}}, {"m1", "m2", "m3"}),
    ({"agent_id": {"in": ["Helper", "nobody"]}}, {"m2"}),
    ({"run_id": {"in": ["run-1", "RUN-3"]}}, {"m1", "m6"}),
    ({"run_id": {"in": []}}, set()),
    ({"user_id": {"nin": ["alice", "bob"]}}, {"m4", "m5", "m6"}),
    ({"agent_id": {"nin": ["planner"]}}, {"m2", "m3", "m5", "m6"}),
    ({"run_id": {"nin": ["run-1", "run-2"]}}, {"m2", "m4", "m5", "m6"}),
    ({"run_id": {"nin": []}}, ALL_SCOPED),
    # contains is case-sensitive; % and _ are literal characters, not wildcards
    ({"user_id": {"contains": "lic"}}, {"m1", "m2", "m5"}),
    ({"user_id": {"contains": "Ali"}}, {"m5"}),
    ({"user_id": {"contains": "e_S"}}, {"m5"}),
    ({"user_id": {"contains": "_"}}, {"m5"}),
    ({"user_id": {"contains": "%"}}, set()),
    ({"run_id": {"contains": "%"}}, {"m5"}),
    ({"run_id": {"contains": "run-1"}}, {"m1", "m5"}),
    ({"run_id": {"contains": "run"}}, {"m1", "m3", "m5"}),
    ({"agent_id": {"contains": "lan"}}, {"m1", "m4"}),
    # icontains ignores case
    ({"user_id": {"icontains": "ALI"}}, {"m1", "m2", "m5"}),
    ({"agent_id": {"icontains": "HELP"}}, {"m2"}),
    ({"run_id": {"icontains": "run"}}, {"m1", "m3", "m5", "m6"}),
    ({"run_id": {"icontains": "_"}}, set()),
    # combinations
    ({"user_id": "alice", "agent_id": "planner"}, {"m1"}),
    ({"OR": [{"user_id": "bob"}, {"agent_id": "planner"}]}, {"m1", "m3", "m4"}),
    ({"NOT": {"user_id": "alice"}}, {"m3", "m4", "m5", "m6"}),
    ({"NOT": {"user_id": {"ne": "alice"}}}, {"m1", "m2"}),
    ({"NOT": {"user_id": {"in": ["alice", "bob"]}}}, {"m4", "m5", "m6"}),
    ({"AND": [{"agent_id": "planner"}, {"NOT": {"run_id": "run-1"}}]}, {"m4"}),
    ({"OR": [{"run_id": {"icontains": "run-3"}}, {"AND": [{"user_id": "alice"},
                                                           {"agent_id": {"ne": "planner"}}]}]},
     {"m2", "m6"}),
]


async def test_scope_field_operators(client: httpx.AsyncClient) -> None:
    names = await add_scoped(client)
    await check_cases(client, names, SCOPE_CASES)


async def test_scope_ids_in_the_body_and_filters_are_anded(client: httpx.AsyncClient) -> None:
    names = await add_scoped(client)
    assert await found(client, {"agent_id": "planner"}, names, user_id="alice") == {"m1"}
    assert await found(client, {"run_id": {"ne": "run-1"}}, names, user_id="alice") == {"m2"}
    assert await found(client, {"user_id": "bob"}, names, user_id="alice") == set()
    assert await found(client, None, names, agent_id="planner") == {"m1", "m4"}


# --- metadata -------------------------------------------------------------------------------

METADATA: dict[str, dict[str, Any]] = {
    "a": {"color": "red", "size": 3, "price": 9.5, "vip": True, "tags": ["x", "y"],
          "nested": {"level": 1, "name": "Alpha"}, "title": "Red Apple"},
    "b": {"color": "blue", "size": 7, "price": 20, "vip": False, "tags": ["y"],
          "nested": {"level": 2, "name": "beta"}, "title": "blue sky 50%"},
    "c": {"color": "green", "size": 10, "vip": True, "tags": [], "nested": {"level": 3},
          "title": "green_grass"},
    "d": {"color": None, "size": "7", "tags": "x-ray", "nested": "flat"},
    "e": {},
}
ALL_META = set(METADATA)

METADATA_CASES: list[tuple[dict[str, Any], set[str]]] = [
    # eq: strings, numbers, booleans, null, arrays and objects by value; types never mix
    ({"metadata.color": "red"}, {"a"}),
    ({"metadata.color": {"eq": "blue"}}, {"b"}),
    ({"metadata.color": "Red"}, set()),
    ({"metadata.size": 7}, {"b"}),
    ({"metadata.size": "7"}, {"d"}),
    ({"metadata.size": 7.0}, {"b"}),
    ({"metadata.price": 9.5}, {"a"}),
    ({"metadata.vip": True}, {"a", "c"}),
    ({"metadata.vip": False}, {"b"}),
    ({"metadata.vip": 1}, set()),
    ({"metadata.color": None}, {"d"}),
    ({"metadata.tags": ["y"]}, {"b"}),
    ({"metadata.tags": ["y", "x"]}, set()),
    ({"metadata.tags": []}, {"c"}),
    ({"metadata.nested": {"level": 3}}, {"c"}),
    ({"metadata.nested": {"level": 1}}, set()),
    ({"metadata.nested.level": 2}, {"b"}),
    ({"metadata.nested.name": "Alpha"}, {"a"}),
    ({"metadata.nested.level.deeper": 1}, set()),
    ({"metadata.missing": "x"}, set()),
    ({"metadata.role": "user"}, ALL_META),
    # ne: memories without the key (or with null) are "not equal" too
    ({"metadata.color": {"ne": "red"}}, {"b", "c", "d", "e"}),
    ({"metadata.size": {"ne": 7}}, {"a", "c", "d", "e"}),
    ({"metadata.vip": {"ne": True}}, {"b", "d", "e"}),
    ({"metadata.color": {"ne": None}}, {"a", "b", "c", "e"}),
    ({"metadata.tags": {"ne": ["y"]}}, {"a", "c", "d", "e"}),
    ({"metadata.nested.level": {"ne": 1}}, {"b", "c", "d", "e"}),
    ({"metadata.missing": {"ne": "x"}}, ALL_META),
    # in / nin
    ({"metadata.color": {"in": ["red", "blue"]}}, {"a", "b"}),
    ({"metadata.size": {"in": [3, 10]}}, {"a", "c"}),
    ({"metadata.size": {"in": [7]}}, {"b"}),
    ({"metadata.size": {"in": ["7"]}}, {"d"}),
    ({"metadata.vip": {"in": [False]}}, {"b"}),
    ({"metadata.color": {"in": [None, "green"]}}, {"c", "d"}),
    ({"metadata.nested.level": {"in": [2, 3]}}, {"b", "c"}),
    ({"metadata.color": {"in": []}}, set()),
    ({"metadata.color": {"nin": ["red", "blue"]}}, {"c", "d", "e"}),
    ({"metadata.size": {"nin": [3, 10]}}, {"b", "d", "e"}),
    ({"metadata.vip": {"nin": [True]}}, {"b", "d", "e"}),
    ({"metadata.nested.level": {"nin": [1, 2]}}, {"c", "d", "e"}),
    ({"metadata.color": {"nin": []}}, ALL_META),
    # contains: substring of a string (case-sensitive, % and _ literal) or member of an array
    ({"metadata.title": {"contains": "Apple"}}, {"a"}),
    ({"metadata.title": {"contains": "apple"}}, set()),
    ({"metadata.title": {"contains": "50%"}}, {"b"}),
    ({"metadata.title": {"contains": "%"}}, {"b"}),
    ({"metadata.title": {"contains": "_"}}, {"c"}),
    ({"metadata.title": {"contains": "e_g"}}, set()),
    ({"metadata.nested.name": {"contains": "lph"}}, {"a"}),
    ({"metadata.tags": {"contains": "x"}}, {"a", "d"}),
    ({"metadata.tags": {"contains": "y"}}, {"a", "b", "d"}),  # d: "x-ray"
    ({"metadata.tags": {"contains": "z"}}, set()),
    ({"metadata.size": {"contains": "7"}}, {"d"}),
    ({"metadata.missing": {"contains": "x"}}, set()),
    # icontains: case-insensitive substring of a string
    ({"metadata.title": {"icontains": "apple"}}, {"a"}),
    ({"metadata.title": {"icontains": "RED"}}, {"a"}),
    ({"metadata.title": {"icontains": "E"}}, {"a", "b", "c"}),
    ({"metadata.nested.name": {"icontains": "BETA"}}, {"b"}),
    ({"metadata.title": {"icontains": "%"}}, {"b"}),
    # gt / gte / lt / lte: numbers compare with numbers, strings with strings
    ({"metadata.size": {"gt": 3}}, {"b", "c"}),
    ({"metadata.size": {"gte": 7}}, {"b", "c"}),
    ({"metadata.size": {"lt": 7}}, {"a"}),
    ({"metadata.size": {"lte": 7}}, {"a", "b"}),
    ({"metadata.size": {"gt": 6.5}}, {"b", "c"}),
    ({"metadata.size": {"lt": 100}}, {"a", "b", "c"}),
    ({"metadata.price": {"gt": 10}}, {"b"}),
    ({"metadata.price": {"lte": 9.5}}, {"a"}),
    ({"metadata.price": {"lt": 9.5}}, set()),
    ({"metadata.nested.level": {"gte": 2}}, {"b", "c"}),
    ({"metadata.size": {"gt": "5"}}, {"d"}),
    ({"metadata.color": {"gt": "green"}}, {"a"}),
    ({"metadata.color": {"gte": "green"}}, {"a", "c"}),
    ({"metadata.color": {"lt": "green"}}, {"b"}),
    ({"metadata.color": {"lte": "blue"}}, {"b"}),
    ({"metadata.vip": {"gt": 0}}, set()),
    ({"metadata.missing": {"lt": 1000}}, set()),
    # several operators on one key, several keys, the shorthand
    ({"metadata.size": {"gte": 3, "lt": 10}}, {"a", "b"}),
    ({"metadata.size": {"gt": 3, "ne": 10}}, {"b"}),
    ({"metadata.vip": True, "metadata.color": "green"}, {"c"}),
    ({"metadata": {"color": "red"}}, {"a"}),
    ({"metadata": {"vip": True, "size": {"gt": 5}}}, {"c"}),
    ({"metadata": {"nested.level": {"lte": 2}}}, {"a", "b"}),
    ({"metadata": {"nested": {"level": 3}}}, {"c"}),
    # AND / OR / NOT
    ({"AND": [{"metadata.vip": True}, {"metadata.size": {"gt": 5}}]}, {"c"}),
    ({"OR": [{"metadata.color": "red"}, {"metadata.size": {"gte": 10}}]}, {"a", "c"}),
    ({"NOT": {"metadata.vip": True}}, {"b", "d", "e"}),
    ({"NOT": {"metadata.missing": "x"}}, ALL_META),
    ({"NOT": {"metadata.color": {"ne": "red"}}}, {"a"}),
    ({"NOT": {"metadata.color": {"nin": ["red", "blue"]}}}, {"a", "b"}),
    ({"NOT": {"metadata.size": {"gt": 3}}}, {"a", "d", "e"}),
    ({"NOT": {"metadata.tags": {"contains": "x"}}}, {"b", "c", "e"}),
    ({"NOT": {"NOT": {"metadata.vip": True}}}, {"a", "c"}),
    ({"NOT": {"OR": [{"metadata.color": "red"}, {"metadata.color": "blue"}]}}, {"c", "d", "e"}),
    ({"NOT": {"AND": [{"metadata.vip": True}, {"metadata.size": {"lt": 5}}]}},
     {"b", "c", "d", "e"}),
    ({"OR": [{"AND": [{"metadata.vip": True}, {"metadata.size": {"lt": 5}}]},
             {"NOT": {"metadata.color": {"in": ["red", "blue", "green"]}}}]}, {"a", "d", "e"}),
    ({"AND": [{"OR": [{"metadata.tags": {"contains": "y"}}, {"metadata.size": "7"}]},
              {"NOT": {"metadata.price": {"gt": 15}}}]}, {"a", "d"}),
    ({"metadata.vip": {"ne": False}, "NOT": {"metadata.color": None}}, {"a", "c", "e"}),
]


async def add_with_metadata(client: httpx.AsyncClient) -> dict[str, str]:
    names = {}
    for name, metadata in METADATA.items():
        (names[name],) = await add(client, [f"Project notes, entry {name}."], metadata=metadata,
                                   user_id="meta")
    return names


async def test_metadata_operators(client: httpx.AsyncClient) -> None:
    names = await add_with_metadata(client)
    await check_cases(client, names, METADATA_CASES)


async def test_metadata_as_stored_alongside_role_and_index(client: httpx.AsyncClient) -> None:
    ids = await add(client, ["First note.", "Second note."], metadata={"topic": "t"},
                    user_id="u")
    hits = {hit["id"]: hit for hit in await search(client, {"metadata.topic": "t"})}
    assert set(hits) == set(ids)
    assert hits[ids[1]]["metadata"] == {"topic": "t", "role": "user", "message_index": 1}
    assert {hit["id"] for hit in await search(client, {"metadata.message_index": {"gt": 0}})} \
        == {ids[1]}


# --- created_at / updated_at ----------------------------------------------------------------

def iso(moment: datetime, *, form: str = "z") -> str:
    utc = moment.astimezone(UTC)
    if form == "z":
        return utc.isoformat().replace("+00:00", "Z")
    if form == "naive":
        return utc.replace(tzinfo=None).isoformat()
    if form == "+02:00":
        return utc.astimezone(timezone(timedelta(hours=2))).isoformat()
    return utc.isoformat()


async def test_time_field_operators(client: httpx.AsyncClient) -> None:
    # One POST is one transaction, so its memories share created_at; three POSTs, three times.
    batches = {}
    for batch in ("early", "middle", "late"):
        batches[batch] = await add(client, [f"Timeline notes {batch} one.",
                                            f"Timeline notes {batch} two."], user_id="t")
    names = {f"{batch}{i}": memory_id for batch, ids in batches.items()
             for i, memory_id in enumerate(ids)}
    hits = {hit["id"]: hit for hit in await search(client)}
    created = {batch: {datetime.fromisoformat(hits[memory_id]["created_at"])
                       for memory_id in ids} for batch, ids in batches.items()}
    assert all(len(stamps) == 1 for stamps in created.values()), created
    early, middle, late = (created[batch].pop() for batch in ("early", "middle", "late"))
    assert early < middle < late
    e, m, la = {"early0", "early1"}, {"middle0", "middle1"}, {"late0", "late1"}

    cases: list[tuple[dict[str, Any], set[str]]] = []
    for form in ("z", "utc", "naive", "+02:00"):
        at = iso(middle, form=form)
        cases += [
            ({"created_at": at}, m),
            ({"created_at": {"eq": at}}, m),
            ({"created_at": {"ne": at}}, e | la),
            ({"created_at": {"gt": at}}, la),
            ({"created_at": {"gte": at}}, m | la),
            ({"created_at": {"lt": at}}, e),
            ({"created_at": {"lte": at}}, e | m),
            ({"created_at": {"in": [at, iso(late, form=form)]}}, m | la),
            ({"created_at": {"nin": [at, iso(early, form=form)]}}, la),
            ({"created_at": {"gt": iso(early, form=form), "lt": iso(late, form=form)}}, m),
            ({"NOT": {"created_at": {"gte": at}}}, e),
            ({"OR": [{"created_at": {"lt": at}}, {"created_at": {"gt": at}}]}, e | la),
            # updated_at starts equal to created_at
            ({"updated_at": at}, m),
            ({"updated_at": {"ne": at}}, e | la),
            ({"updated_at": {"gt": at}}, la),
            ({"updated_at": {"gte": at}}, m | la),
            ({"updated_at": {"lt": at}}, e),
            ({"updated_at": {"lte": at}}, e | m),
            ({"updated_at": {"in": [at]}}, m),
            ({"updated_at": {"nin": [at]}}, e | la),
        ]
    # a whole-day bound and instants well away from the data
    day = iso(early - timedelta(days=1), form="utc")[:10]
    future = iso(late + timedelta(hours=1))
    cases += [
        ({"created_at": {"in": []}}, set()),
        ({"created_at": {"nin": []}}, e | m | la),
        ({"created_at": {"gt": day}}, e | m | la),
        ({"created_at": {"lt": day}}, set()),
        ({"created_at": {"gte": future}}, set()),
        ({"created_at": {"ne": future}}, e | m | la),
        ({"updated_at": {"nin": [future]}}, e | m | la),
    ]
    await check_cases(client, names, cases)


async def test_updated_at_moves_on_change(client: httpx.AsyncClient) -> None:
    ids = await add(client, ["Changing note one.", "Changing note two.", "Changing note three."],
                    metadata={"v": 1}, user_id="t")
    names = dict(zip(("one", "two", "three"), ids, strict=True))
    before = {hit["id"]: hit for hit in await search(client)}
    added = datetime.fromisoformat(before[ids[0]]["updated_at"])
    patched = await client.patch(f"/v1/memories/{ids[1]}", json={"metadata": {"v": 2}})
    assert patched.status_code == 200, patched.text
    changed = datetime.fromisoformat(patched.json()["updated_at"])
    assert changed > added
    assert await found(client, {"updated_at": {"gt": iso(added)}}, names) == {"two"}
    assert await found(client, {"updated_at": iso(changed)}, names) == {"two"}
    assert await found(client, {"updated_at": {"ne": iso(changed)}}, names) == {"one", "three"}
    assert await found(client, {"updated_at": {"lte": iso(added)}}, names) == {"one", "three"}
    assert await found(client, {"updated_at": {"nin": [iso(added)]}}, names) == {"two"}
    assert await found(client, {"updated_at": {"in": [iso(added)]}}, names) == {"one", "three"}
    # created_at did not move
    assert await found(client, {"created_at": iso(added)}, names) == {"one", "two", "three"}
    assert await found(client, {"updated_at": {"gt": iso(added)}, "metadata.v": 2},
                       names) == {"two"}


# --- all field kinds together ---------------------------------------------------------------

async def test_fields_of_every_kind_combine(client: httpx.AsyncClient) -> None:
    names = {}
    (names["a1"],) = await add(client, ["Mixed note a1."], metadata={"n": 1}, user_id="alice")
    (names["a2"],) = await add(client, ["Mixed note a2."], metadata={"n": 2}, user_id="alice",
                               agent_id="bot")
    (names["b1"],) = await add(client, ["Mixed note b1."], metadata={"n": 1}, user_id="bob")
    (names["x"],) = await add(client, ["Mixed note x."], agent_id="bot")
    stamp = (await search(client, {"user_id": "bob"}))[0]["created_at"]
    cases: list[tuple[dict[str, Any], set[str]]] = [
        ({"user_id": "alice", "metadata.n": 1}, {"a1"}),
        ({"OR": [{"agent_id": "bot"}, {"metadata.n": {"gte": 2}}]}, {"a2", "x"}),
        ({"NOT": {"user_id": "alice"}, "metadata.n": {"ne": 2}}, {"b1", "x"}),
        ({"AND": [{"created_at": {"lt": stamp}}, {"NOT": {"agent_id": "bot"}}]}, {"a1"}),
        ({"OR": [{"created_at": {"gte": stamp}}, {"metadata": {"n": 2}}]}, {"a2", "b1", "x"}),
        ({"NOT": {"OR": [{"user_id": {"icontains": "BO"}}, {"agent_id": {"contains": "o"}}]}},
         {"a1"}),
    ]
    await check_cases(client, names, cases)


# --- ranking --------------------------------------------------------------------------------

def dot(a: list[float], b: list[float]) -> float:
    return math.fsum(x * y for x, y in zip(a, b, strict=True))


async def brute_force(embedder: SentenceTransformerEmbedder, query: str,
                      texts: dict[str, str]) -> list[tuple[str, float]]:
    """(id, cosine) for every memory, best first, computed in the test."""
    ids = list(texts)
    (query_vector,) = await embedder.embed([query])
    vectors = await embedder.embed([texts[memory_id] for memory_id in ids])
    scored = [(memory_id, dot(query_vector, vector)) for memory_id, vector in zip(
        ids, vectors, strict=True)]
    return sorted(scored, key=lambda item: item[1], reverse=True)


SMALL_SET = [
    "My dog Rex loves swimming in the lake.",
    "The quarterly tax filing is due in April.",
    "Grandma's lasagna recipe uses three kinds of cheese.",
    "I prefer window seats on long flights.",
    "The cat sleeps on the warm laptop keyboard.",
    "Our team switched the database to Postgres last year.",
    "She runs a marathon every spring.",
    "The puppy chewed through the garden hose.",
    "Remember to water the tomato plants on Sundays.",
    "My favourite programming language is Python.",
    "The hiking trail near the lake is closed in winter.",
    "He is allergic to peanuts and shellfish.",
]


async def test_unfiltered_search_is_ranked_like_brute_force(
        client: httpx.AsyncClient, embedder: SentenceTransformerEmbedder) -> None:
    ids = await add(client, SMALL_SET, user_id="rank")
    query = "pets and animals"
    expected = await brute_force(embedder, query, dict(zip(ids, SMALL_SET, strict=True)))
    results = await search(client, query=query, top_k=len(SMALL_SET))
    assert [hit["id"] for hit in results] == [memory_id for memory_id, _ in expected]
    for hit, (_, score) in zip(results, expected, strict=True):
        assert hit["score"] == pytest.approx(score, abs=1e-4)
    scores = [hit["score"] for hit in results]
    assert scores == sorted(scores, reverse=True)

    top3 = await search(client, query=query, top_k=3)
    assert [hit["id"] for hit in top3] == [memory_id for memory_id, _ in expected[:3]]
    # the scope in the body gives the same answer
    assert [hit["id"] for hit in await search(client, query=query, top_k=3, user_id="rank")] \
        == [memory_id for memory_id, _ in expected[:3]]


async def test_threshold_drops_low_scores(client: httpx.AsyncClient,
                                          embedder: SentenceTransformerEmbedder) -> None:
    ids = await add(client, SMALL_SET, user_id="rank")
    query = "dogs"
    expected = await brute_force(embedder, query, dict(zip(ids, SMALL_SET, strict=True)))
    # a threshold half-way across the widest gap among the top scores, away from rounding
    gaps = [(expected[i][1] - expected[i + 1][1], i) for i in range(len(expected) - 1)]
    _, cut = max(gaps[:6])
    threshold = (expected[cut][1] + expected[cut + 1][1]) / 2
    kept = [memory_id for memory_id, _ in expected[:cut + 1]]
    results = await search(client, query=query, top_k=len(SMALL_SET), threshold=threshold)
    assert [hit["id"] for hit in results] == kept
    assert all(hit["score"] >= threshold for hit in results)
    # threshold and top_k together: the stricter wins
    assert len(await search(client, query=query, top_k=1, threshold=threshold)) == 1
    # threshold with a filter: both must hold
    best = kept[0]
    assert [hit["id"] for hit in await search(
        client, {"metadata.message_index": ids.index(best)}, query=query,
        threshold=threshold)] == [best]
    kept_indexes = [ids.index(memory_id) for memory_id in kept]
    assert await search(client, {"metadata.message_index": {"nin": kept_indexes}}, query=query,
                        threshold=threshold) == []
    assert len(await search(client, {"metadata.message_index": {"nin": kept_indexes}},
                            query=query)) == len(SMALL_SET) - len(kept)
    # nothing passes a threshold of 1, everything passes -1
    assert await search(client, query=query, threshold=1.0) == []
    assert len(await search(client, query=query, threshold=-1.0)) == len(SMALL_SET)


CLOSE_TOPICS = ["pasta", "risotto", "bread", "soup", "curry", "salad", "pancakes", "stew",
                "dumplings", "tacos", "pie", "noodles"]
CLOSE_VERBS = ["cook", "bake", "season", "prepare", "serve", "simmer"]
RARE_TEXTS = [
    "The quarterly tax return was filed with the accountant.",
    "Jupiter has a great red spot that is a giant storm.",
    "The train to Vienna departs from platform nine.",
    "Our router firmware needs a security update.",
    "The museum opens an exhibition of medieval armour.",
    "She renewed her passport at the consulate.",
    "The football match ended in a goalless draw.",
    "A mortgage rate change affects the monthly payment.",
    "The violin concerto was written in D major.",
    "Glaciers in the Alps are retreating every year.",
    "The company board approved the merger on Friday.",
    "He practises chess openings before every tournament.",
]


async def test_selective_filter_never_loses_hits(
        client: httpx.AsyncClient, embedder: SentenceTransformerEmbedder,
        database: Database) -> None:
    """A post-filter over the nearest few would return nothing here: every near memory is
    common, and the 12 rare ones are far from the query. The filter must be exact."""
    query = "how do I cook a good dinner recipe"
    common = [f"Tip {n}: {verb} the {topic} for dinner with fresh herbs and a pinch of salt."
              for n, (verb, topic) in enumerate(
                  (verb, topic) for verb in CLOSE_VERBS for topic in CLOSE_TOPICS)]
    common += [f"Kitchen note {n}: a simple {topic} recipe for a family dinner."
               for n, topic in enumerate(CLOSE_TOPICS * 18)]
    common = common[:288]
    assert len(set(common)) == 288
    common_ids = await add(client, common, metadata={"tag": "common"}, user_id="big")
    rare_ids = await add(client, RARE_TEXTS, metadata={"tag": "rare"}, user_id="big")
    assert await count(client, user_id="big") == 300

    texts = dict(zip(common_ids, common, strict=True)) | dict(zip(rare_ids, RARE_TEXTS,
                                                                  strict=True))
    ranked = await brute_force(embedder, query, texts)
    rare = set(rare_ids)
    # the premise: the unfiltered top 100 holds no rare memory at all
    assert not rare & {memory_id for memory_id, _ in ranked[:100]}
    expected = [(memory_id, score) for memory_id, score in ranked if memory_id in rare][:10]

    for filters, extra in (({"metadata.tag": "rare"}, {}),
                           ({"metadata.tag": "rare"}, {"user_id": "big"}),
                           ({"metadata": {"tag": {"in": ["rare"]}}, "user_id": "big"}, {}),
                           ({"metadata.tag": {"ne": "common"}}, {}),
                           ({"NOT": {"metadata.tag": "common"}}, {})):
        results = await search(client, filters, query=query, top_k=10, **extra)
        assert len(results) == 10, (filters, extra)
        assert all(hit["metadata"]["tag"] == "rare" for hit in results)
        assert [hit["id"] for hit in results] == [memory_id for memory_id, _ in expected], filters
        for hit, (_, score) in zip(results, expected, strict=True):
            assert hit["score"] == pytest.approx(score, abs=1e-4)

    # asking for more than match gives all of them, best first
    everything = await search(client, {"metadata.tag": "rare"}, query=query, top_k=50)
    assert [hit["id"] for hit in everything] == [
        memory_id for memory_id, _ in ranked if memory_id in rare]
    # and the unfiltered top 10 is the brute-force top 10 of all 300
    unfiltered = await search(client, query=query, top_k=10)
    assert [hit["id"] for hit in unfiltered] == [memory_id for memory_id, _ in ranked[:10]]

    # On a table this small the planner ranks the filtered rows exactly (scan + sort). With
    # plain and bitmap scans and sorts off it must go through the HNSW index, whose iterative
    # scan has to walk past all 288 common neighbours. Same answer.
    async with database.session_scope() as session:
        project_id = (await session.execute(sa.select(Memory.project_id).where(
            Memory.id == uuid.UUID(rare_ids[0])))).scalar_one()
        await session.execute(sa.text("SET LOCAL enable_seqscan = off"))
        await session.execute(sa.text("SET LOCAL enable_bitmapscan = off"))
        await session.execute(sa.text("SET LOCAL enable_sort = off"))
        (query_vector,) = await embedder.embed([query])
        plan = "\n".join(row[0] for row in await session.execute(sa.text(
            "EXPLAIN SELECT id FROM memories WHERE project_id = :project AND metadata @> :tag "
            "ORDER BY embedding <=> CAST(:vector AS vector) LIMIT 10"),
            {"project": project_id, "tag": '{"tag": "rare"}', "vector": str(query_vector)}))
        assert "ix_memories_embedding_hnsw" in plan, plan
        rows = await repository.nearest(session, project_id, query_vector,
                                        parse_filters({"metadata.tag": "rare"}), 10, None)
    assert [str(memory.id) for memory, _ in rows] == [memory_id for memory_id, _ in expected]


# --- refused filters ------------------------------------------------------------------------

def deep_filter(levels: int) -> dict[str, Any]:
    raw: dict[str, Any] = {"user_id": "u"}
    for _ in range(levels):
        raw = {"NOT": raw}
    return raw


BAD_FILTERS: list[tuple[dict[str, Any], str]] = [
    ({"colour": "red"}, "'colour'"),
    ({"user_id": {"like": "a%"}}, "'like'"),
    ({"user_id": {"gt": "a"}}, "operator 'gt' does not apply to user_id"),
    ({"agent_id": {"in": "a"}}, "filters.agent_id: expected a list"),
    ({"metadata.k": {"nin": 3}}, "filters.metadata.k: expected a list"),
    ({"metadata.k": {"contains": 3}}, "filters.metadata.k: contains takes a string"),
    ({"run_id": {"icontains": ["a"]}}, "filters.run_id: expected a string"),
    ({"created_at": {"gt": "last tuesday"}}, "'last tuesday' is not an ISO 8601 timestamp"),
    ({"created_at": {"gt": "0001-01-01T00:00:00+14:00"}}, "out of range"),
    ({"created_at": {"gt": "0999-12-31T00:00:00Z"}}, "years 1000 to 9998"),
    ({"updated_at": {"in": ["9999-12-31T23:59:59-14:00"]}}, "out of range"),
    ({"updated_at": {"contains": "2024"}}, "operator 'contains' does not apply to updated_at"),
    ({"metadata.k": {"gt": True}}, "gt takes a number or a string"),
    ({}, "empty filter object"),
    ({"AND": []}, "filters.AND: must be a non-empty list"),
    ({"NOT": {}}, "filters.NOT: empty filter object"),
    ({"metadata": {}}, "filters.metadata: must be an object of metadata keys"),
    ({"user_id": {}}, "empty operator object"),
    ({"metadata..k": 1}, "invalid metadata key"),
    (deep_filter(MAX_FILTER_DEPTH + 1), "nested deeper"),
    ({"metadata": {f"k{i}": i for i in range(MAX_FILTER_CONDITIONS + 1)}},
     f"more than {MAX_FILTER_CONDITIONS} conditions"),
]


async def test_invalid_filter_is_a_422_envelope(client: httpx.AsyncClient) -> None:
    ids = await add(client, ["Kept note one.", "Kept note two."], metadata={"k": 1},
                    user_id="keep")
    stored = (await client.get("/v1/memories", params={"user_id": "keep"})).json()
    assert len(stored["results"]) == 2
    for number, (filters, message) in enumerate(BAD_FILTERS):
        request_id = f"req-bad-{number}"
        response = await client.post("/v1/memories/search", headers={"X-Request-ID": request_id},
                                     json={"query": "kept", "filters": filters})
        assert response.status_code == 422, (filters, response.text)
        body = response.json()
        assert body == {"error": "invalid_filter", "detail": body["detail"],
                        "request_id": request_id}, filters
        assert message in body["detail"], (filters, body)
        assert response.headers.get_list("X-Request-ID") == [request_id]
    # nothing changed: same memories, same content, still found
    assert (await client.get("/v1/memories", params={"user_id": "keep"})).json() == stored
    assert await count(client, user_id="keep") == 2
    assert {hit["id"] for hit in await search(client, {"metadata.k": 1})} == set(ids)


async def test_invalid_filter_without_request_id_still_has_one(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/memories/search",
                                 json={"query": "q", "filters": {"bogus": 1}})
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid_filter"
    assert "'bogus'" in body["detail"]
    assert body["request_id"]
    assert response.headers.get_list("X-Request-ID") == [body["request_id"]]


@pytest.mark.parametrize("filters", [[{"user_id": "u"}], "user_id=u", 3])
async def test_filters_that_are_not_an_object_are_a_validation_error(
        client: httpx.AsyncClient, filters: Any) -> None:
    response = await client.post("/v1/memories/search", json={"query": "q", "filters": filters})
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "validation_error"
    assert "filters" in body["detail"]


async def test_values_postgres_cannot_take_are_refused_not_500(client: httpx.AsyncClient) -> None:
    (kept,) = await add(client, ["Edge value note."], metadata={"n": 1, "s": "a"}, user_id="u")
    for raw in ('{"metadata.n": {"gt": NaN}}', '{"metadata.n": Infinity}',
                '{"metadata.n": {"in": [-Infinity]}}', '{"metadata.s": "\\u0000"}',
                '{"user_id": {"contains": "\\u0000"}}', '{"metadata.s\\u0000": "a"}',
                '{"created_at": {"lt": "0001-01-01T00:00:00+14:00"}}'):
        response = await client.post(
            "/v1/memories/search", headers={"Content-Type": "application/json"},
            content=f'{{"query": "edge", "filters": {raw}}}')
        assert response.status_code == 422, (raw, response.text)
        assert response.json()["error"] == "invalid_filter", raw
    # the extremes that do fit are fine
    names = {"kept": kept}
    assert await found(client, {"created_at": {"gt": "1000-01-01T00:00:00Z"}}, names) == {"kept"}
    assert await found(client, {"updated_at": {"gte": "9998-12-31T23:59:59.999999Z"}},
                       names) == set()
    assert await found(client, {"metadata.n": {"lt": 10**30}}, names) == {"kept"}


async def test_the_largest_filter_the_api_takes_fits_one_statement(
        client: httpx.AsyncClient) -> None:
    """100 conditions of 1,000 values each (the limits) would be 200,000 parameters bound one
    per value, past Postgres' 32,767: each list is one array parameter instead."""
    ids = await add(client, ["Large filter target.", "Large filter other."], user_id="big",
                    metadata={"k0": "v999", "tag": "x"})
    lists = [{f"metadata.k{i}": {"in": [f"v{j}" for j in range(1000)]}} for i in range(1, 99)]
    filters = {"AND": [{"metadata.k0": {"in": [f"v{j}" for j in range(1000)]}},
                       {"user_id": {"in": ["big", *(f"u{j}" for j in range(999))]}},
                       {"OR": [*lists]}]}
    assert await search(client, filters) == []  # no memory has k1..k98
    others = {"metadata.tag": {"nin": [f"y{j}" for j in range(1000)]}}
    hits = await search(client, {"AND": [filters["AND"][0], filters["AND"][1], others]})
    assert sorted(hit["id"] for hit in hits) == sorted(ids)
