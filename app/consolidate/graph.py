"""Step 5, *graph*: entities and relations of the episode's facts, into the graph store.

One LLM call reads the facts (not the conversation: they are short, resolved and numbered)
and lists entities and relations. What it said is stored in Postgres with the facts' memory
ids (``graph_extractions``), in the write transaction; ``apply`` then turns it into graph
changes, deterministically, so ``anamnesis graph rebuild`` replays every extraction of a
project and gets the same graph:

* an entity is the one of its scope with the same name key, else a mention merged into a
  similar one (a name that extends or shortens the other, same type: "Mel" → "Melanie";
  recorded in ``entity_merges``, and never again once a user undid it), else new, with an id
  derived from scope and name;
* a relation that is exclusive, or whose fact superseded a memory, retires the current
  relations with the *same source and type* (never others);
* every entity is linked to the memories of the facts that mention it.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, time
from typing import Any

from app.consolidate.context import EpisodeContext
from app.consolidate.extract import EXAMPLE_STEMS, ExtractedFact
from app.consolidate.prompts import (
    GRAPH_VERSION,
    ExtractedGraph,
    NewFact,
    graph_messages,
)
from app.domain import ProjectScope, stems
from app.embeddings import Embedder
from app.llm import Completion, LLMClient
from app.store.graph.base import (
    EntityRecord,
    GraphStore,
    RelationRecord,
    entity_type,
    name_key,
    relation_type,
)

_NAMESPACE = uuid.UUID("5b6b1f0e-8f5e-4d0a-9a37-2f1f3c0d6a11")
MERGE_MIN_SIMILARITY = 0.45  # with a compatible name and the same type (MiniLM: Mel/Melanie 0.52)
SAME_ENTITY_SIMILARITY = 0.95  # whatever the name


async def extract_graph(llm: LLMClient, context: EpisodeContext, facts: list[ExtractedFact]
                        ) -> Completion[ExtractedGraph]:
    return await llm.complete(
        graph_messages([NewFact(fact.text, fact.valid_at.date() if fact.stated_valid_from
                                else None) for fact in facts], context.observed_at),
        ExtractedGraph, prompt_version=GRAPH_VERSION)


def without_example_names(extraction: ExtractedGraph, facts: list[ExtractedFact]
                          ) -> ExtractedGraph:
    """The extraction less the entities that hold a name of the worked example
    (``EXAMPLE_NAMES``) no fact holds: the model copied them from the example (their
    relations then end nowhere, and ``apply`` passes them over)."""
    copied = EXAMPLE_STEMS - stems(" ".join(f.text for f in facts), 3)
    return extraction.model_copy(update={"entities": [
        entity for entity in extraction.entities if not stems(entity.name, 3) & copied]})


async def replaced_by_relations(store: GraphStore, scope: ProjectScope,
                                extraction: ExtractedGraph, facts: int
                                ) -> dict[int, list[uuid.UUID]]:
    """Fact number → the memories behind the current relations its exclusive relations will
    retire (same source, same type, another target: "Ravi lives_in Canada" when the fact
    says "Ravi lives_in Perth"), read from the graph before it is changed. The graph step
    retires those relations; ``resolve.supersede_replaced`` retires their memories too."""
    found: dict[int, list[uuid.UUID]] = {}
    for relation in extraction.relations:
        kind = relation_type(relation.relation)
        if not relation.exclusive or kind is None or not 0 <= relation.fact < facts:
            continue
        source = await store.entity_named(scope, name_key(relation.source))
        if source is None:
            continue
        target = name_key(relation.target)
        for current in await store.find_relations(scope, source=source.id, type=kind):
            if current.memory_id is not None and name_key(current.target_name) != target:
                found.setdefault(relation.fact, []).append(current.memory_id)
    return found


def payload(extraction: ExtractedGraph, facts: list[ExtractedFact],
            results: list[dict[str, Any]]) -> dict[str, Any]:
    """What ``apply`` needs, JSON: the extraction and, per fact, its memory and whether it
    superseded one (``results`` are the write step's, one per fact in order)."""
    return {
        "version": GRAPH_VERSION,
        "entities": [entity.model_dump(mode="json") for entity in extraction.entities],
        "relations": [relation.model_dump(mode="json") for relation in extraction.relations],
        "facts": [{"text": fact.text, "valid_at": fact.valid_at.isoformat(),
                   "memory_id": result.get("id"), "superseded": result["event"] == "SUPERSEDE"}
                  for fact, result in zip(facts, results, strict=True)],
    }


@dataclass(frozen=True)
class Applied:
    entities: int
    relations: int
    retired: int
    merges: list[tuple[uuid.UUID, str, str, float]]


def entity_id(scope: ProjectScope, key: str) -> uuid.UUID:
    """The same name in the same scope is the same entity, in every store and every rebuild.
    The parts are hashed as a JSON list: joined with a separator, ids that contain it could
    make two scopes one ("a\x1fb" + "" and "a" + "b")."""
    return uuid.uuid5(_NAMESPACE, json.dumps([str(scope.project_id), scope.user_id,
                                              scope.agent_id, scope.run_id, key]))


def compatible(a: str, b: str) -> bool:
    """One name key extends the other word-wise or as a prefix ("mel"/"melanie",
    "dr smith"/"smith")."""
    short, long = sorted((a, b), key=len)
    if len(short) < 3:
        return False
    words = long.split()
    return long.startswith(short) or short in words or any(w.startswith(short) for w in words)


async def apply(store: GraphStore, embedder: Embedder, scope: ProjectScope,
                extraction_id: uuid.UUID, episode_id: uuid.UUID | None, data: dict[str, Any],
                observed_at: datetime, *, gone: frozenset[uuid.UUID] = frozenset(),
                refused: frozenset[tuple[uuid.UUID, str]] = frozenset()) -> Applied:
    """``gone``: memories deleted since (a rebuild): what they stated is left out, as
    ``detach_memories`` removed it, but the retirements they caused still happen; so for a
    fact marked ``erased`` (its text and memory id taken out of the log by an erase).
    ``refused``: (entity id, name key) merges a user undid: that name stays its own entity."""
    facts: list[dict[str, Any]] = data.get("facts", [])
    mentioned: dict[str, EntityRecord] = {}
    merges: list[tuple[uuid.UUID, str, str, float]] = []
    new: list[EntityRecord] = []
    fresh: list[tuple[str, dict[str, Any]]] = []
    forgotten = _forgotten(data, facts, gone)
    for item in data.get("entities", []):
        key = name_key(str(item.get("name", "")))
        if not key or key in mentioned or key in forgotten or any(key == k for k, _ in fresh):
            continue
        existing = await store.entity_named(scope, key)
        if existing is not None:
            mentioned[key] = existing
        else:
            fresh.append((key, item))
    vectors = await embedder.embed([str(item["name"]) for _, item in fresh]) if fresh else []
    for (key, item), vector in zip(fresh, vectors, strict=True):
        kind = entity_type(str(item.get("type", "other")))
        match = None
        for candidate, score in await store.similar_entities(scope, vector, 5,
                                                             embedder.model_name):
            if candidate.id in {e.id for e in new} or (candidate.id, key) in refused:
                continue
            if score >= SAME_ENTITY_SIMILARITY or (
                    score >= MERGE_MIN_SIMILARITY and candidate.type == kind
                    and compatible(key, candidate.key)):
                match = (candidate, score)
                break
        if match is not None:
            mentioned[key] = match[0]
            merges.append((match[0].id, str(item["name"]), "similar_name", round(match[1], 4)))
            continue
        record = EntityRecord(
            id=entity_id(scope, key), project_id=scope.project_id, user_id=scope.user_id,
            agent_id=scope.agent_id, run_id=scope.run_id, name=str(item["name"])[:255],
            type=kind, summary=str(item.get("summary", ""))[:300], embedding=vector,
            created_at=observed_at, updated_at=observed_at,
            embedding_model=embedder.model_name)
        new.append(record)
        mentioned[key] = record
    await store.put_entities(new)

    relations: list[RelationRecord] = []
    retired: list[RelationRecord] = []
    links: set[tuple[uuid.UUID, uuid.UUID]] = set()
    for index, item in enumerate(data.get("relations", [])):
        source = mentioned.get(name_key(str(item.get("source", ""))))
        target = mentioned.get(name_key(str(item.get("target", ""))))
        link_type = relation_type(str(item.get("relation", "")))
        if source is None or target is None or link_type is None or source.id == target.id:
            continue
        fact = _fact(facts, item.get("fact"))
        memory_id = uuid.UUID(fact["memory_id"]) if fact and fact.get("memory_id") else None
        valid_at = _valid_at(item.get("valid_from"), fact, observed_at)
        current = await store.find_relations(scope, source=source.id, type=link_type)
        if any(r.target_id == target.id for r in current):
            if memory_id is not None and memory_id not in gone:
                links |= {(source.id, memory_id), (target.id, memory_id)}
            continue  # already known and current
        if item.get("exclusive") or (fact is not None and fact.get("superseded")):
            for old in current:
                ended = valid_at if valid_at > old.valid_at else max(old.valid_at, observed_at)
                retired.append(RelationRecord(**{**old.__dict__, "invalid_at": ended}))
        if (memory_id is not None and memory_id in gone) or (fact and fact.get("erased")):
            continue
        relations.append(RelationRecord(
            id=uuid.uuid5(extraction_id, str(index)), project_id=scope.project_id,
            user_id=scope.user_id, agent_id=scope.agent_id, run_id=scope.run_id,
            source_id=source.id, target_id=target.id, type=link_type,
            source_name=str(item["source"])[:255], target_name=str(item["target"])[:255],
            valid_at=valid_at, invalid_at=None, memory_id=memory_id, episode_id=episode_id,
            created_at=observed_at))
        if memory_id is not None:
            links |= {(source.id, memory_id), (target.id, memory_id)}
    await store.put_relations([*retired, *relations])

    for fact in facts:  # an entity named in a fact's text is mentioned by its memory
        if not fact.get("memory_id") or uuid.UUID(fact["memory_id"]) in gone:
            continue
        words = f" {name_key(str(fact.get('text', '')))} "
        for key, record in mentioned.items():
            if f" {key} " in words:
                links.add((record.id, uuid.UUID(fact["memory_id"])))
    await store.link_memories(scope.project_id, sorted(links))
    return Applied(len(new), len(relations), len(retired), merges)


def _forgotten(data: dict[str, Any], facts: list[dict[str, Any]],
               gone: frozenset[uuid.UUID]) -> set[str]:
    """Name keys of the entities only facts since erased (or deleted) stated, as an end of
    their relations or in their words: a replay leaves them out, as the erase left no such
    entity behind (``detach_memories``). Empty unless something is gone."""

    def lost(fact: dict[str, Any]) -> bool:
        return bool(fact.get("erased")) or (
            bool(fact.get("memory_id")) and uuid.UUID(str(fact["memory_id"])) in gone)

    stated: dict[str, list[bool]] = {}
    for item in data.get("relations", []):
        fact = _fact(facts, item.get("fact"))
        if fact is not None:
            for end in ("source", "target"):
                stated.setdefault(name_key(str(item.get(end, ""))), []).append(lost(fact))
    names = {name_key(str(item.get("name", ""))) for item in data.get("entities", [])}
    for fact in facts:
        words = f" {name_key(str(fact.get('text', '')))} "
        for key in names:
            if key and f" {key} " in words:
                stated.setdefault(key, []).append(lost(fact))
    return {key for key, losses in stated.items() if all(losses)}


def _fact(facts: list[dict[str, Any]], index: Any) -> dict[str, Any] | None:
    if isinstance(index, int) and 0 <= index < len(facts):
        return facts[index]
    return None


def _valid_at(stated: Any, fact: dict[str, Any] | None, observed_at: datetime) -> datetime:
    if isinstance(stated, str):
        try:
            day = datetime.combine(datetime.fromisoformat(stated).date(), time(), tzinfo=UTC)
        except ValueError:
            day = None
        if day is not None and day <= observed_at:
            return day
    if fact is not None and fact.get("valid_at"):
        return datetime.fromisoformat(str(fact["valid_at"]))
    return observed_at
