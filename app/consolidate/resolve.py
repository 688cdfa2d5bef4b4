"""Step 3, *resolve*: compare each fact with the nearest current memories of its scope and
decide ADD, UPDATE, SUPERSEDE or NOOP.

A fact whose exact text is already a current memory is a NOOP without asking anyone; a
scope with no similar memories is all ADDs without an LLM call. Otherwise one call decides
the whole batch. The model sees facts and memories as small numbers, never ids, and
whatever it answers that does not fit (unknown numbers, a memory claimed twice, a missing
decision) falls back to ADD: a possible duplicate is recoverable, a wrong overwrite is not.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    known: dict[str, Memory] = {}  # id → memory, in the order the model will see them
    for vector in vectors:
        for memory, _score in await memories.nearest(
                session, context.project_id, vector, None, candidates_per_fact, None,
                exact_scope=context.scope):
            known.setdefault(str(memory.id), memory)
    by_hash = {memory.content_hash: memory for memory in known.values()}
    by_hash |= await memories.retire_expired_and_find(
        session, context.project_id, context.scope,
        [fact.content_hash for fact in facts if fact.content_hash not in by_hash])

    plans: dict[int, Plan] = {}
    open_facts: list[int] = []
    for index, (fact, vector) in enumerate(zip(facts, vectors, strict=True)):
        same = by_hash.get(fact.content_hash)
        if same is not None:
            plans[index] = Plan(fact, "NOOP", same, same.text, same.content_hash, vector)
        else:
            open_facts.append(index)
    candidates = list(known.values())
    completion = None
    if open_facts and candidates:
        completion = await llm.complete(
            resolve_messages([NewFact(facts[i].text, facts[i].valid_at.date()
                                      if facts[i].stated_valid_from else None)
                              for i in open_facts],
                             [Known(memory.text, memory.valid_at) for memory in candidates],
                             context.observed_at),
            Decisions, prompt_version=RESOLVE_VERSION)
        plans |= await _apply(completion.value.decisions, open_facts, facts, vectors,
                              candidates, embedder)
    for index in open_facts:
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
