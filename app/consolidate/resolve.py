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
in Lisbon" may retire the home for the job; what the two say of Dana is too unalike.
"""

from __future__ import annotations

import re
import uuid
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

# How alike (``_predicates_alike``: all-MiniLM-L6-v2, the common subject set aside) a fact
# must be to the memory a decision names. Measured on pairs like the knowledge-update suite's:
# one changing fact ("moved to Oslo" / "lives in Lisbon", "is healthy again" / "has the
# flu") 0.3-0.9, unrelated facts of one person ("works at Equinor" / "lives in Lisbon",
# "has a dog" / "brother is Tom") 0.0-0.21. A NOOP drops the new fact, so it needs the most:
# "three children." / "two children." is 0.66 and must not be one, "sushi." / "Sushi!" 0.9+.
MIN_SIMILARITY = {"NOOP": 0.8, "UPDATE": 0.5, "SUPERSEDE": 0.25}
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
    fitting = [(d, open_facts[d.fact], candidates[d.memory]) for d in decisions
               if 0 <= d.fact < len(open_facts) and d.action != "ADD"
               and d.memory is not None and 0 <= d.memory < len(candidates)]
    likeness = dict(zip([(id(d), index) for d, index, _ in fitting], await _predicates_alike(
        embedder, [(facts[index].text, target.text) for _, index, target in fitting]),
        strict=True))
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
        alike = likeness[(id(decision), index)]
        if alike < MIN_SIMILARITY[decision.action]:
            continue  # not about the same thing: falls back to ADD
        # An UPDATE rewrites a memory in place: only when the new text keeps every word of
        # it ("likes jazz" → "likes jazz and blues"). A small model also calls a change an
        # UPDATE ("has two children" → "has three children"); that is the SUPERSEDE it is,
        # which keeps the old memory as the past instead of overwriting it.
        action = decision.action
        if action == "UPDATE" and not _keeps_words(target.text, decision.text or fact.text):
            action = "SUPERSEDE"
        if action == "NOOP":
            plans[index] = Plan(fact, "NOOP", target, target.text, target.content_hash,
                                vectors[index])
            continue
        if decision.memory in claimed:
            continue  # one rewrite per memory per episode
        claimed.add(decision.memory)
        if action == "SUPERSEDE":
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


async def _predicates_alike(embedder: Embedder,
                            pairs: list[tuple[str, str]]) -> list[float]:
    """How alike each (fact, memory) pair is once the words they start with in common are
    set aside: "Dana works at Equinor" and "Dana lives in Lisbon" share a subject, which
    dominates a sentence embedding (0.60 whole, 0.20 without it), and only what is said of
    the subject tells whether one replaces the other. Cosine similarity of the rest."""
    if not pairs:
        return []
    rests = [_after_common_start(fact, memory) for fact, memory in pairs]
    vectors = await embedder.embed([text for rest in rests for text in rest])
    return [float(np.dot(np.asarray(vectors[2 * i], dtype=np.float32),
                         np.asarray(vectors[2 * i + 1], dtype=np.float32)))
            for i in range(len(pairs))]


def _after_common_start(a: str, b: str) -> tuple[str, str]:
    left, right = a.split(), b.split()
    shared = 0
    while shared < min(len(left), len(right)) - 1 and \
            left[shared].lower() == right[shared].lower():
        shared += 1
    return " ".join(left[shared:]), " ".join(right[shared:])


def _keeps_words(old: str, new: str) -> bool:
    """Whether ``new`` holds every word of ``old`` (case, punctuation and endings aside)."""
    def stems(text: str) -> set[str]:
        return {word[:5] for word in re.findall(r"[^\W_]+", text.lower())}
    return stems(old) <= stems(new)


async def supersede_replaced(session: AsyncSession, embedder: Embedder, context: EpisodeContext,
                             plans: list[Plan], replaced: dict[int, list[uuid.UUID]]
                             ) -> list[Plan]:
    """A fact the model would ADD becomes a SUPERSEDE of a memory its exclusive relation
    replaces in the graph (``graph.replaced_by_relations``): the structured extraction saw
    the change the decision missed. Held to the same likeness as the model's own SUPERSEDE,
    each memory replaced once."""
    ids = sorted({memory_id for found in replaced.values() for memory_id in found})
    current = await memories.live_by_ids(session, context.project_id, ids) if ids else {}
    claimed = {plan.target.id for plan in plans if plan.target is not None}
    changed = list(plans)
    for index, plan in enumerate(plans):
        targets = [current[m] for m in replaced.get(index, []) if m in current
                   and m not in claimed and current[m].kind == "fact"]
        if plan.action != "ADD" or not targets:
            continue
        alike = await _predicates_alike(embedder, [(plan.text, t.text) for t in targets])
        best = max(range(len(targets)), key=lambda i: alike[i])
        if alike[best] >= MIN_SIMILARITY["SUPERSEDE"]:
            claimed.add(targets[best].id)
            changed[index] = Plan(plan.fact, "SUPERSEDE", targets[best], plan.text,
                                  plan.content_hash, plan.embedding)
    return changed
