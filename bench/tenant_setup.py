"""What ``bench.tenant_isolation`` sets up before it measures: project A's and B's memories,
project A's graph (written straight into the server's graph store, as consolidation would have
projected it) and warm-up graph searches showing the graph has work to do; and how it counts
the outcome of every request."""

from __future__ import annotations

import datetime as dt
import itertools
import random
import re
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from app.config import Settings
from app.store.db import open_database
from app.store.graph import open_graph_store
from app.store.graph.base import EntityRecord, RelationRecord
from app.store.ids import uuid7
from bench.synthetic import (
    CITIES,
    COMPANIES,
    PEOPLE,
    PROJECTS,
    AddRequest,
    add_requests,
)
from bench.timed_requests import latency_summary, percentile, run_pool

MAX_SAMPLES = 5
WARMUP_SEARCHES = 12

# The names the synthetic memories mention, as the graph's entities: (entity type, the
# relation a co-mentioned entity of this type is reached by).
CAST: dict[str, tuple[str, str]] = {
    **{name: ("person", "knows") for name in PEOPLE},
    **{name: ("place", "visited") for name in CITIES},
    **{name: ("organization", "works_with") for name in COMPANIES},
    **{name: ("concept", "works_on") for name in PROJECTS},
}
# Longest first, so "Blue Harbor" wins over "Harbor".
NAMES = re.compile(r"\b(" + "|".join(re.escape(name) for name in
                                     sorted(CAST, key=len, reverse=True)) + r")\b")

# Long-ish questions naming three of the user's names: the graph step finds their entities,
# their neighbours and the neighbours' memories.
GRAPH_QUESTIONS = [
    "I'm putting my notes together before I see {a} again: what do I know about {a} and {b}, "
    "where did we meet, and what did either of them say about {c} the last time it came up?",
    "Remind me of everything connected to {a}: the people around them, the places we went "
    "together, what involves {b} at work, and anything I promised {c} I would do.",
    "Before the next trip, what should I remember about {a}, {b} and {c}? Plans, allergies, "
    "birthdays, deadlines, and anything someone told me about them in passing.",
]


@dataclass
class Outcomes:
    """Requests of one kind: every status counted, latencies of the 2xx ones."""

    latencies_s: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    samples: list[str] = field(default_factory=list)
    server_ms: dict[str, list[float]] = field(default_factory=dict)  # Server-Timing steps
    items: list[int] = field(default_factory=list)  # results per 2xx answer

    def record(self, status: str, elapsed_s: float, detail: str) -> None:
        self.statuses[status] += 1
        if status.startswith("2"):
            self.latencies_s.append(elapsed_s)
            return
        if len(self.samples) < MAX_SAMPLES:
            self.samples.append(f"{status} after {elapsed_s * 1000:.0f} ms: {detail[:300]}")

    def server_timing(self, header: str | None) -> None:
        for part in (header or "").split(","):
            name, _, duration = part.strip().partition(";dur=")
            if name and duration:
                self.server_ms.setdefault(name, []).append(float(duration))

    def summary(self, wall_s: float | None = None) -> dict[str, Any]:
        ok = len(self.latencies_s)
        result: dict[str, Any] = {"requests": sum(self.statuses.values()), "ok": ok}
        if wall_s:
            result["rps"] = round(ok / wall_s, 2)
        result.update(latency_summary(self.latencies_s))
        result["status_counts"] = dict(sorted(self.statuses.items()))
        result.update(status_classes(self.statuses))
        if self.items:
            result["mean_results"] = round(sum(self.items) / len(self.items), 2)
        if self.server_ms:
            result["server_steps_p50_ms"] = {
                name: round(percentile(sorted(values), 0.5), 2)
                for name, values in self.server_ms.items()}
            result["server_steps_p99_ms"] = {
                name: round(percentile(sorted(values), 0.99), 2)
                for name, values in self.server_ms.items()}
        result["error_samples"] = self.samples
        return result


def status_classes(statuses: Mapping[str, int]) -> dict[str, int]:
    """5xx, other non-2xx (429 would be rate limiting), and transport failures (no answer)."""
    return {
        "server_errors_5xx": sum(n for s, n in statuses.items() if s.isdigit() and s[0] == "5"),
        "other_non_2xx": sum(n for s, n in statuses.items() if s.isdigit() and s[0] not in "25"),
        "transport_errors": sum(n for s, n in statuses.items() if not s.isdigit()),
    }


async def timed(client: httpx.AsyncClient, outcomes: Outcomes, method: str, path: str, *,
                params: dict[str, Any] | None = None,
                json: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """One request; its outcome recorded. Returns the JSON body of a 2xx answer."""
    started = time.perf_counter()
    try:
        response = await client.request(method, path, params=params, json=json)
    except httpx.HTTPError as exc:
        outcomes.record(type(exc).__name__, time.perf_counter() - started, str(exc))
        return None
    elapsed = time.perf_counter() - started
    outcomes.record(str(response.status_code), elapsed, response.text)
    if not response.is_success:
        return None
    outcomes.server_timing(response.headers.get("server-timing"))
    payload: dict[str, Any] = response.json()
    if isinstance(payload.get("results"), list):
        outcomes.items.append(len(payload["results"]))
    return payload


@dataclass(frozen=True)
class Stored:
    user_id: str
    id: uuid.UUID
    text: str


async def preload(client: httpx.AsyncClient, n: int, users: list[str], batch: int,
                  seed: int) -> tuple[list[Stored], dict[str, Any]]:
    """N memories (``infer=false``) over ``users``, four add requests in flight."""
    outcomes = Outcomes()
    stored: list[Stored] = []

    async def send(request: AddRequest) -> None:
        payload = await timed(client, outcomes, "POST", "/v1/memories", json=request.body())
        for result in (payload or {}).get("results", []):
            stored.append(Stored(request.user_id, uuid.UUID(result["id"]), result["memory"]))

    wall = await run_pool(add_requests(n, batch, users, seed), 4, send)
    return stored, {"memories": len(stored), "users": len(users), "wall_s": round(wall, 2),
                    "status_counts": dict(outcomes.statuses), "error_samples": outcomes.samples}


def names_by_user(stored: list[Stored]) -> dict[str, list[str]]:
    found: dict[str, set[str]] = defaultdict(set)
    for memory in stored:
        found[memory.user_id].update(NAMES.findall(memory.text))
    return {user: sorted(names) for user, names in found.items()}


async def seed_graph(settings: Settings, project_id: uuid.UUID, stored: list[Stored],
                     seed: int) -> dict[str, Any]:
    """Entities for the names each user's memories mention, linked to those memories, and a
    relation between every two names one memory mentions together.

    Written straight into the server's graph store, as consolidation would have projected
    them: no LLM runs here (``anamnesis graph rebuild`` would clear them, having no
    extraction on record). Entity vectors are random: nothing in a search reads them."""
    rng = random.Random(seed)
    database = await open_database(settings, migrate_schema=False)
    try:
        graph = await open_graph_store(settings, database)
        try:
            dimension = await database.embedding_dimension() or settings.embedding.dimension
            now = dt.datetime.now(dt.UTC)
            entities: dict[tuple[str, str], EntityRecord] = {}
            relations: list[RelationRecord] = []
            links: list[tuple[uuid.UUID, uuid.UUID]] = []
            for memory in stored:
                named = list(dict.fromkeys(NAMES.findall(memory.text)))
                for name in named:
                    if (memory.user_id, name) not in entities:
                        vector = [rng.gauss(0.0, 1.0) for _ in range(dimension)]
                        norm = sum(v * v for v in vector) ** 0.5
                        entities[memory.user_id, name] = EntityRecord(
                            id=uuid7(), project_id=project_id, user_id=memory.user_id,
                            agent_id=None, run_id=None, name=name, type=CAST[name][0],
                            summary=f"{name}, as the bench's memories mention them",
                            embedding=[v / norm for v in vector], created_at=now,
                            updated_at=now, embedding_model="")
                    links.append((entities[memory.user_id, name].id, memory.id))
                for source, target in itertools.pairwise(named):
                    relations.append(RelationRecord(
                        id=uuid7(), project_id=project_id, user_id=memory.user_id,
                        agent_id=None, run_id=None,
                        source_id=entities[memory.user_id, source].id,
                        target_id=entities[memory.user_id, target].id, type=CAST[target][1],
                        source_name=source, target_name=target, valid_at=now,
                        invalid_at=None, memory_id=memory.id, episode_id=None,
                        created_at=now))
            records = list(entities.values())
            for start in range(0, len(records), 500):
                await graph.put_entities(records[start:start + 500])
            for start in range(0, len(relations), 500):
                await graph.put_relations(relations[start:start + 500])
            for start in range(0, len(links), 1000):
                await graph.link_memories(project_id, links[start:start + 1000])
        finally:
            await graph.aclose()
    finally:
        await database.aclose()
    return {"seeded": True, "entities": len(entities), "relations": len(relations),
            "memory_links": len(links)}


def graph_question(rng: random.Random, names: list[str]) -> str:
    pool = names if len(names) >= 3 else [*names, *rng.sample(PEOPLE, 3)]
    a, b, c = rng.sample(pool, 3)
    return rng.choice(GRAPH_QUESTIONS).format(a=a, b=b, c=c)


async def graph_check(client: httpx.AsyncClient, users: list[str],
                      names: dict[str, list[str]], rng: random.Random) -> dict[str, Any]:
    """Unmeasured warm-up searches with ``explain``: how many hits the graph reached, so a
    run shows its graph searches had graph work to do."""
    outcomes = Outcomes()
    reached = 0
    for index in range(WARMUP_SEARCHES):
        user = users[index % len(users)]
        payload = await timed(client, outcomes, "POST", "/v1/memories/search", json={
            "query": graph_question(rng, names.get(user, [])), "user_id": user, "top_k": 10,
            "graph": True, "explain": True})
        for hit in (payload or {}).get("results", []):
            reached += bool(((hit.get("explain") or {}).get("graph") or {}).get("reached"))
    return {"warmup_searches": WARMUP_SEARCHES, "hits": sum(outcomes.items),
            "hits_reached_by_graph": reached,
            "steps_p50_ms": outcomes.summary().get("server_steps_p50_ms"),
            "status_counts": dict(outcomes.statuses)}


