"""Step 3, *resolve*: compare each fact with the nearest current memories of its scope and
decide ADD, UPDATE, SUPERSEDE or NOOP.

A fact whose exact text is already a current fact is a NOOP without asking anyone; a fact
with no similar fact in its scope (``CANDIDATE_FLOOR``) is an ADD without asking either, and
so is a pair too unalike for any outcome below (what the two say of their common subject,
``MIN_SIMILARITY``): the model's answer would change nothing, and every answer costs time.
For the rest, one call asks the model a yes/no question per (fact, close memory) pair: can
the memory still be true now? (``prompts.Check``). It is asked of states only: an event
(``Memory.lasting`` false: "went to a pride parade") stays true once told, and nothing ends
it. The model sees facts and memories as small numbers, never ids. A fact is only ever
compared with memories about the one it is about (``one_subject``): "Melanie is interested
in painting" neither ends nor confirms "Caroline is interested in counseling", whatever the
model says. Code decides the rest from the answers
and the texts:

* SUPERSEDE the closest memory the fact ends (``still_true`` false), when what the two say of
  their subject is alike enough (``MIN_SIMILARITY``): a small model asked about "Dana works
  at Equinor" next to "Dana lives in Lisbon" may retire the home for the job; what the two
  say of Dana is too unalike;
* otherwise NOOP when the fact says what a memory says: the memory holds all its words, or
  the two are near paraphrases;
* otherwise UPDATE a memory whose every word the fact keeps and adds to ("likes jazz" →
  "likes jazz and blues"): the memory is rewritten in place;
* otherwise SUPERSEDE a memory so alike as a whole that the two are one memory told twice
  (``SAME_MEMORY``): the newer telling is the current one (NOOP for an event: it stays);
* otherwise ADD. Whatever the reply says that does not fit (unknown numbers, a pair not
  asked about, a memory ended twice) counts for nothing: a possible duplicate is
  recoverable, a wrong overwrite is not.

The model's answer can only turn an ADD into a SUPERSEDE of the memory it ends, so a fact
planned as an ADD is written before the model is asked (``resolve``), and the memory it
ends is retired when the answer comes (``settle``): on the bundled model the question takes
some 7 s, and the episode's facts are searchable without waiting for it. For those seconds
the old memory is current beside the new one, as it is until the graph step retires a
memory by an exclusive relation. Only a fact whose plan the answer could otherwise change
(a NOOP, UPDATE or retelling of one memory while another is asked about) waits for it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession

from app.consolidate.context import EpisodeContext
from app.consolidate.extract import ExtractedFact
from app.consolidate.prompts import (
    MAX_CHECKS,
    RESOLVE_VERSION,
    Check,
    Checks,
    Known,
    NewFact,
    resolve_messages,
)
from app.domain import names, stems, word_key
from app.embeddings import Embedder
from app.llm import ChatMessage, Completion, LLMClient
from app.store.models import Memory
from app.store.repositories import memories

Action = Literal["ADD", "UPDATE", "SUPERSEDE", "NOOP"]

# How alike (``_predicates_alike``: all-MiniLM-L6-v2, the common subject set aside) a fact
# must be to a memory for each outcome. A small model answers "no longer true" too readily,
# so a SUPERSEDE needs the two to say things of one kind. Measured: changes of the
# knowledge-update suite ("moved to Elm Road" / "lives at Baker Street", "quit Deloitte" /
# "works as an accountant at Deloitte", "adopted a puppy" / "has a cat named Luna") 0.37-0.9,
# with a few lower ("joined Spotify as a software engineer" / "works at Google" 0.24);
# facts the bundled model wrongly called ended on LoCoMo ("ran a charity race for mental
# health" / "is interested in counseling", "is carving out me-time" / "is interested in
# painting") 0.27-0.33; unrelated facts of one person ("works at Equinor" / "lives in
# Lisbon", "quit Deloitte" / "runs marathons") 0.0-0.21. A wrongly retired fact leaves the
# current view; a missed change leaves the old fact next to the new one: the bar sits above
# the mistakes. A NOOP drops the new fact, so it needs the most: paraphrases ("dog is Rex" /
# "has a dog named Rex", "has a job at Equinor" / "works at Equinor") 0.88-0.91, while
# "married Anna" / "girlfriend is Anna" is 0.74 and "three children" / "two children" 0.66,
# neither the same. An UPDATE or a NOOP by words (one text holds every word of the other)
# only needs the two to be about the same thing.
MIN_SIMILARITY = {"NOOP": 0.85, "WORDS": 0.5, "SUPERSEDE": 0.35}
# Two current facts this alike as whole sentences (cosine, as search measures it) are one
# memory told twice, whatever the model says of them: the newer telling takes the older's
# place (SUPERSEDE, the older kept as the past) unless it adds nothing (NOOP) or only adds
# (UPDATE). Measured: "kitchen is being renovated" / "kitchen renovation is finished" 0.92
# and "has two children" / "has three children" 0.97, both of which the bundled model
# called compatible; "likes tea" / "likes green tea" 0.87, "girlfriend is Anna" / "married
# Anna" 0.86, "lives in Oslo" / "lives in Bergen" 0.82.
SAME_MEMORY = 0.9
# Memories less similar than this to a fact are not checked with it: a fact with none is an
# ADD without asking.
CANDIDATE_FLOOR = 0.4
# Memories checked per fact, closest first (a fact rarely changes more than the nearest few).
CHECKS_PER_FACT = 3


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


@dataclass
class Resolution:
    """The decisions code can take alone, and the question for the model.

    ``plans``: fact number → plan, for every fact that can be written before the model
    answers: those with nothing to ask, and those whose plan without an answer is an ADD (an
    answer can only add a memory for it to retire, ``settle``). ``held``: the few whose plan
    an answer could change otherwise (a NOOP, UPDATE or retelling of one memory while the
    model is asked whether another ended), decided by ``settle``."""

    facts: list[ExtractedFact]
    vectors: list[list[float]]
    plans: dict[int, Plan]
    held: list[int]
    asked: list[tuple[int, Memory]]
    pairs: list[tuple[int, Memory]]
    likeness: dict[tuple[int, uuid.UUID], float]
    closeness: dict[tuple[int, uuid.UUID], float]

    def question(self, observed_at: datetime) -> tuple[list[ChatMessage], list[int],
                                                         list[Memory]] | None:
        """The resolve prompt, the fact numbers and the memories it numbers; None when there
        is nothing to ask."""
        if not self.asked:
            return None
        facts = self.facts
        open_facts = sorted({index for index, _ in self.asked})
        candidates = list(dict.fromkeys(memory for _, memory in self.asked))
        number = {memory.id: position for position, memory in enumerate(candidates)}
        messages = resolve_messages(
            [NewFact(facts[i].text, facts[i].valid_at.date() if facts[i].stated_valid_from
                     else None, tuple(number[m.id] for j, m in self.asked if j == i))
             for i in open_facts],
            [Known(memory.text, memory.valid_at) for memory in candidates], observed_at)
        return messages, open_facts, candidates


@dataclass(frozen=True)
class Settlement:
    """What the model's answer decided: plans for the held facts, and for facts already
    written as ADDs the memory each retires."""

    plans: dict[int, Plan]
    retired: dict[int, Memory]
    completion: Completion[Checks]


async def resolve(session: AsyncSession, embedder: Embedder, context: EpisodeContext,
                  facts: list[ExtractedFact], vectors: list[list[float]],
                  candidates_per_fact: int) -> Resolution:
    """Everything but the model's answer (see ``Resolution``): the facts it plans can be
    written, and so searched, while the model is asked about the rest."""
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
    for index, (fact, vector) in enumerate(zip(facts, vectors, strict=True)):
        same = by_hash.get(fact.content_hash)
        if same is not None:
            plans[index] = Plan(fact, "NOOP", same, same.text, same.content_hash, vector)
    pairs = _pairs_to_check([[(memory, score) for memory, score in found
                              if one_subject(fact.text, memory.text)]
                             for fact, found in zip(facts, near, strict=True)], set(plans))
    # A pair whose predicates are less alike than any outcome needs is an ADD whatever the
    # model would answer (see ``_decide``): it is not asked about. On LoCoMo most close pairs
    # are one person's unrelated facts, so this takes most questions, often the whole call,
    # off an episode (the reply's tokens are the slow part on the bundled model).
    likeness = dict(zip([(index, memory.id) for index, memory in pairs],
                        await _predicates_alike(embedder, [(facts[index].text, memory.text)
                                                           for index, memory in pairs]),
                        strict=True))
    pairs = [(index, memory) for index, memory in pairs
             if likeness[(index, memory.id)] >= MIN_SIMILARITY["SUPERSEDE"]]  # the lowest
    # An event stays true once told (``Memory.lasting``): whether a fact ends it is not
    # asked, though the fact may still repeat it (NOOP) or add to it (UPDATE). On LoCoMo
    # most pairs left here are one person's events, which the bundled model often called
    # "no longer true" for another event of theirs.
    asked = [(index, memory) for index, memory in pairs if memory.lasting is not False]
    closeness = {(index, memory.id): score for index, found in enumerate(near)
                 for memory, score in found}
    # Planned as if the model ended nothing: right for every fact not asked about, and for
    # an asked fact planned as an ADD (an answer only adds a memory for it to retire).
    unanswered = _decide(set(), pairs, facts, vectors, likeness, closeness)
    questioned = {index for index, _ in asked}
    held = sorted(index for index, plan in unanswered.items()
                  if index in questioned and plan.action != "ADD")
    plans |= {index: plan for index, plan in unanswered.items() if index not in held}
    for index in range(len(facts)):  # no decision, or none needed: a new fact
        if index not in plans and index not in held:
            fact = facts[index]
            plans[index] = Plan(fact, "ADD", None, fact.text, fact.content_hash, vectors[index])
    return Resolution(facts, vectors, plans, held, asked, pairs, likeness, closeness)


async def settle(llm: LLMClient, context: EpisodeContext,
                 resolution: Resolution) -> Settlement | None:
    """The model asked whether each asked memory still holds; its answer decides the held
    facts and which memories the facts written as ADDs retire. None when nothing is asked."""
    question = resolution.question(context.observed_at)
    if question is None:
        return None
    messages, open_facts, candidates = question
    completion = await llm.complete(messages, Checks, prompt_version=RESOLVE_VERSION)
    ended = _ended(completion.value.checks, open_facts, candidates)
    written = resolution.plans
    held = set(resolution.held)
    plans = _decide(ended, [(index, memory) for index, memory in resolution.pairs
                            if index in held], resolution.facts, resolution.vectors,
                    resolution.likeness, resolution.closeness,
                    claimed={plan.target.id for plan in written.values()
                             if plan.target is not None and plan.action != "NOOP"})
    for index in resolution.held:  # nothing to do after all: a new fact
        if index not in plans:
            fact = resolution.facts[index]
            plans[index] = Plan(fact, "ADD", None, fact.text, fact.content_hash,
                                resolution.vectors[index])
    claimed = {plan.target.id for plan in (*written.values(), *plans.values())
               if plan.target is not None and plan.action != "NOOP"}
    retired: dict[int, Memory] = {}
    for index in sorted(index for index, plan in written.items() if plan.action == "ADD"):
        ends = sorted(((resolution.likeness[(index, memory.id)], memory)
                       for j, memory in resolution.asked if j == index
                       and (index, memory.id) in ended and memory.id not in claimed),
                      key=lambda item: -item[0])
        if ends:
            claimed.add(ends[0][1].id)
            retired[index] = ends[0][1]
    return Settlement(plans, retired, completion)


def one_subject(fact: str, memory: str) -> bool:
    """Whether ``fact`` may end, confirm or rewrite ``memory``: the one it is about (the first
    name it gives) is named in the memory. Asked about "Melanie is interested in painting"
    next to "Caroline is interested in counseling", the bundled model called Caroline's fact
    ended (LoCoMo conv-26: most of the facts it superseded after eight sessions were another
    person's, at predicate likeness 0.38-0.74, where real changes also lie). A fact naming
    no one, or a memory naming no one, is not held to it; "Luna passed away" may still end
    "Oscar has a cat named Luna"."""
    subject = next(iter(names(fact)), None)
    if subject is None or not names(memory):
        return True
    return subject in {word_key(word) for word in memory.split()}


def _pairs_to_check(near: list[list[tuple[Memory, float]]], settled: set[int]
                    ) -> list[tuple[int, Memory]]:
    """(fact, memory) pairs the model is asked about: each open fact's closest
    ``CHECKS_PER_FACT`` candidates; the closest ``MAX_CHECKS`` of them when there are more."""
    scored = [(score, index, memory) for index, found in enumerate(near) if index not in settled
              for memory, score in found[:CHECKS_PER_FACT]]
    scored.sort(key=lambda item: -item[0])
    kept = {(index, memory.id) for _, index, memory in scored[:MAX_CHECKS]}
    return [(index, memory) for index, found in enumerate(near) for memory, _ in found
            if (index, memory.id) in kept]


def _ended(checks: list[Check], open_facts: list[int], candidates: list[Memory]
           ) -> set[tuple[int, uuid.UUID]]:
    """(fact, memory) pairs the reply calls no longer true; numbers out of range count for
    nothing."""
    ended: set[tuple[int, uuid.UUID]] = set()
    for check in checks:
        if check.still_true or not 0 <= check.fact < len(open_facts) \
                or not 0 <= check.memory < len(candidates):
            continue
        ended.add((open_facts[check.fact], candidates[check.memory].id))
    return ended


def _decide(ended: set[tuple[int, uuid.UUID]], pairs: list[tuple[int, Memory]],
            facts: list[ExtractedFact], vectors: list[list[float]],
            likeness: dict[tuple[int, uuid.UUID], float],
            closeness: dict[tuple[int, uuid.UUID], float],
            claimed: set[uuid.UUID] | None = None) -> dict[int, Plan]:
    """A plan for each fact with a pair (see the module); ``ended`` only holds pairs that
    were asked about; ``claimed``: memories other plans of the episode already act on."""
    plans: dict[int, Plan] = {}
    claimed = set(claimed or ())  # one rewrite per memory per episode
    for index in sorted({index for index, _ in pairs}):
        fact, vector = facts[index], vectors[index]
        mine = sorted(((likeness[(index, memory.id)], memory) for j, memory in pairs
                       if j == index), key=lambda item: -item[0])
        # Every pair is alike enough to supersede (``resolve`` keeps no other).
        superseded = next((memory for _, memory in mine if (index, memory.id) in ended
                           and memory.id not in claimed), None)
        if superseded is not None:
            claimed.add(superseded.id)
            plans[index] = Plan(fact, "SUPERSEDE", superseded, fact.text, fact.content_hash,
                                vector)
            continue
        for alike, memory in mine:
            if (index, memory.id) in ended:
                continue
            fact_words, memory_words = stems(fact.text), stems(memory.text)
            if alike >= MIN_SIMILARITY["NOOP"] or (
                    alike >= MIN_SIMILARITY["WORDS"] and fact_words <= memory_words):
                plans[index] = Plan(fact, "NOOP", memory, memory.text, memory.content_hash,
                                    vector)
                break
            if alike >= MIN_SIMILARITY["WORDS"] and memory_words < fact_words \
                    and memory.id not in claimed:
                claimed.add(memory.id)
                plans[index] = Plan(fact, "UPDATE", memory, fact.text, fact.content_hash,
                                    vector)
                break
        if index not in plans:
            told = max((memory for _, memory in mine if memory.id not in claimed
                        and closeness[(index, memory.id)] >= SAME_MEMORY),
                       key=lambda memory: closeness[(index, memory.id)], default=None)
            if told is not None and told.lasting is False:  # an event is not retired
                plans[index] = Plan(fact, "NOOP", told, told.text, told.content_hash, vector)
            elif told is not None:
                claimed.add(told.id)
                plans[index] = Plan(fact, "SUPERSEDE", told, fact.text, fact.content_hash,
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
    """Both texts without the words they start with in common, a possessive or a trailing
    mark aside ("Priya's husband …" and "Priya joined …" share "Priya")."""
    left, right = a.split(), b.split()
    shared = 0
    while shared < min(len(left), len(right)) - 1 and \
            word_key(left[shared]) == word_key(right[shared]):
        shared += 1
    return " ".join(left[shared:]), " ".join(right[shared:])


async def replaced_memories(session: AsyncSession, embedder: Embedder, context: EpisodeContext,
                            plans: list[Plan], results: list[dict[str, Any]],
                            replaced: dict[int, list[uuid.UUID]]) -> dict[int, Memory]:
    """Fact number → the memory its fact supersedes after all: a fact the decision ADDed
    whose exclusive relation replaces a current one in the graph
    (``graph.replaced_by_relations``): the structured extraction saw the change the decision
    missed. Held to the same likeness as the model's own SUPERSEDE, each memory replaced
    once. ``results``: what the write step did with each plan (an ADD may have become a NOOP
    there)."""
    ids = sorted({memory_id for found in replaced.values() for memory_id in found})
    current = await memories.live_by_ids(session, context.project_id, ids) if ids else {}
    claimed = {plan.target.id for plan in plans if plan.target is not None}
    found: dict[int, Memory] = {}
    for index, (plan, result) in enumerate(zip(plans, results, strict=True)):
        targets = [current[m] for m in replaced.get(index, []) if m in current
                   and m not in claimed and current[m].kind == "fact"
                   and current[m].lasting is not False
                   and one_subject(plan.text, current[m].text)]
        if result["event"] != "ADD" or not targets:
            continue
        alike = await _predicates_alike(embedder, [(plan.text, t.text) for t in targets])
        best = max(range(len(targets)), key=lambda i: alike[i])
        if alike[best] >= MIN_SIMILARITY["SUPERSEDE"]:
            claimed.add(targets[best].id)
            found[index] = targets[best]
    return found
