"""Step 3, *resolve*: compare each fact with the nearest current memories of its scope and
decide ADD, UPDATE, SUPERSEDE or NOOP.

A fact whose exact text is already a current fact is a NOOP without asking anyone; a fact
with no similar fact in its scope (``CANDIDATE_FLOOR``) is an ADD without asking either.
The rest go to one call, each fact listed with the memories it may concern. The model sees
facts and memories as small numbers, never ids, and whatever it answers that does not fit
(unknown numbers, a memory claimed twice, a missing decision) falls back to ADD: a possible
duplicate is recoverable, a wrong overwrite is not.
So does a decision about a memory whose meaning is too far from the fact's
(``MIN_SIMILARITY``): a small model asked about "Dana works at Equinor" next to "Dana lives
in Lisbon" may retire the home for the job; the two embeddings say they are not one fact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession

from app.consolidate.context import EpisodeContext
from app.consolidate.extract import ExtractedFact
from app.consolidate.prompts import (
    RESOLVE_VERSION,
    Action,
    Decision,
    Decisions,
    Known,
    NewFact,
    resolve_messages,
)
from app.domain import content_hash, normalise
from app.embeddings import Embedder
from app.llm import Completion, LLMClient
from app.store.models import Memory
from app.store.repositories import memories

# Cosine similarity (all-MiniLM-L6-v2) a fact needs with the memory a decision names. Measured
# on the knowledge-update suite (bench.consolidation_quality): two statements of one changing
# fact ("lives in Oslo" / "lives in Lisbon") score 0.6-0.9, unrelated facts of one person
# 0.1-0.45. A NOOP drops the fact, so it needs the most.
MIN_SIMILARITY = {"NOOP": 0.7, "UPDATE": 0.55, "SUPERSEDE": 0.5}
# Memories less similar than this to a fact are not shown to the model with it: a fact with
# none is an ADD without asking.
CANDIDATE_FLOOR = 0.4


@dataclass(frozen=True)
class Plan:
    """What to do with one fact. ``target`` is the existing memory an UPDATE rewrites, a
    SUPERSEDE retires or a NOOP confirms; ``text``/``embedding`` are what gets stored."""

    fact: ExtractedFact
    action: Action
    target: Memory | None
    text: str
    content_hash: str
    embedding: list[float]


@dataclass(frozen=True)
class Resolution:
    plans: list[Plan]
    completion: Completion[Decisions] | None
    prompt_version: str | None


async def resolve(session: AsyncSession, embedder: Embedder, llm: LLMClient,
                  context: EpisodeContext, facts: list[ExtractedFact],
                  vectors: list[list[float]], candidates_per_fact: int) -> Resolution:
    near: list[list[tuple[Memory, float]]] = []  # per fact: candidates, closest first
    for vector in vectors:
        found = await memories.nearest(session, context.project_id, vector, None,
                                       candidates_per_fact, None, exact_scope=context.scope,
                                       kind="fact")
        near.append([(memory, score) for memory, score in found if score >= CANDIDATE_FLOOR])
    by_hash = {memory.content_hash: memory for found in near for memory, _ in found}
    by_hash |= await memories.retire_expired_and_find(
        session, context.project_id, context.scope,
        [fact.content_hash for fact in facts if fact.content_hash not in by_hash])

    plans: dict[int, Plan] = {}
    open_facts: list[int] = []  # facts the model decides: not known word for word, with
    for index, (fact, vector) in enumerate(zip(facts, vectors, strict=True)):  # candidates
        same = by_hash.get(fact.content_hash)
        if same is not None:
            plans[index] = Plan(fact, "NOOP", same, same.text, same.content_hash, vector)
        elif near[index]:
            open_facts.append(index)
    known: dict[str, Memory] = {}  # id → memory, in the order the model will see them
    for index in open_facts:
        for memory, _ in near[index]:
            known.setdefault(str(memory.id), memory)
    candidates = list(known.values())
    number = {memory.id: position for position, memory in enumerate(candidates)}
    completion = None
    if open_facts:
        completion = await llm.complete(
            resolve_messages([NewFact(facts[i].text, facts[i].valid_at.date()
                                      if facts[i].stated_valid_from else None,
                                      tuple(number[m.id] for m, _ in near[i]))
                              for i in open_facts],
                             [Known(memory.text, memory.valid_at) for memory in candidates],
                             context.observed_at),
            Decisions, prompt_version=RESOLVE_VERSION)
        plans |= await _apply(completion.value.decisions, open_facts, facts, vectors,
                              candidates, embedder)
    for index in range(len(facts)):  # no decision, or none needed: a new fact
        if index not in plans:
            fact = facts[index]
            plans[index] = Plan(fact, "ADD", None, fact.text, fact.content_hash, vectors[index])
    return Resolution([plans[index] for index in sorted(plans)], completion,
                      RESOLVE_VERSION if completion is not None else None)


async def _apply(decisions: list[Decision], open_facts: list[int], facts: list[ExtractedFact],
                 vectors: list[list[float]], candidates: list[Memory],
                 embedder: Embedder) -> dict[int, Plan]:
    plans: dict[int, Plan] = {}
    claimed: set[int] = set()
    rewrites: list[tuple[int, Memory, str]] = []
    for decision in decisions:
        if not 0 <= decision.fact < len(open_facts):
            continue
        index = open_facts[decision.fact]
        if index in plans or any(index == pending for pending, _, _ in rewrites):
            continue
        fact = facts[index]
        if decision.action == "ADD":
            plans[index] = Plan(fact, "ADD", None, fact.text, fact.content_hash, vectors[index])
            continue
        if decision.memory is None or not 0 <= decision.memory < len(candidates):
            continue  # names no memory it could concern: falls back to ADD
        target = candidates[decision.memory]
        if _similarity(vectors[index], target) < MIN_SIMILARITY[decision.action]:
            continue  # not about the same thing: falls back to ADD
        if decision.action == "NOOP":
            plans[index] = Plan(fact, "NOOP", target, target.text, target.content_hash,
                                vectors[index])
            continue
        if decision.memory in claimed:
            continue  # one rewrite per memory per episode
        claimed.add(decision.memory)
        if decision.action == "SUPERSEDE":
            plans[index] = Plan(fact, "SUPERSEDE", target, fact.text, fact.content_hash,
                                vectors[index])
        else:
            text = normalise(decision.text or "") or fact.text
            rewrites.append((index, target, text))
    if rewrites:
        texts = [text for _, _, text in rewrites]
        for (index, target, text), vector in zip(rewrites, await embedder.embed(texts),
                                                 strict=True):
            if text == target.text:
                plans[index] = Plan(facts[index], "NOOP", target, target.text,
                                    target.content_hash, vector)
            else:
                plans[index] = Plan(facts[index], "UPDATE", target, text, content_hash(text),
                                    vector)
    return plans


def _similarity(vector: list[float], memory: Memory) -> float:
    """Cosine similarity of unit vectors."""
    return float(np.dot(np.asarray(vector, dtype=np.float32),
                        np.asarray(memory.embedding, dtype=np.float32)))
