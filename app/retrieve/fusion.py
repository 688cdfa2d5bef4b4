"""Ranking: the signals of each candidate fused into one score.

Hybrid ranking: each signal's scores are z-normalised over a yardstick (so cosine
similarities and BM25 scores, on different scales, weigh as set), then summed with the
settings' weights. A candidate one signal did not list is scored on it all the same: its
exact cosine similarity always (hydration computes it), its BM25 where the index can say,
else 0 (below every listed one). The yardstick is the candidates rather than each signal's
own list (LoCoMo dev recall@10 0.75 → 0.80), and of them the messages when there are
facts too (``yardstick``): messages then rank among themselves exactly as a search of
messages ranks them, and a fact goes where its scores put it among theirs. (Short facts
match a question more closely than chat turns do: measured with the messages, they moved
the mean and deviation every message was measured by, and on LoCoMo conv-42's later
sessions evidence at rank 9-10 fell to 11-13: facts took recall away.) The lexical weight
shrinks for a query whose words the yardstick's best lexical matches hardly hold
(``lexical_trust``). On top: a bonus for
memories the graph reached (whose z-scores are not taken below 0), a bonus for memories
said or true in the period the query names ("in May 2023", ``dates.query_period``), a
recency term, and a penalty for memories no longer true (visible with ``as_of`` or
``include_superseded``), a bonus for a message said by someone the query names (and for a
fact naming them), and a prior on a message's length. Then turns of one conversation lend
each other score: each gains a share of the best score among the candidates of its
conversation (the exchange that answers a question tends to hold more than the one line
that matches it) and of its better neighbouring turns, one and (by half) two away (an
answer follows its question; a speaker goes on about it). Weights were tuned on the LoCoMo
dev split (``bench.locomo_recall``).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from app.config import SearchSettings
from app.index.candidates import Candidate
from app.retrieve.dates import Period

DAY_S = 86_400.0
CLEAR_DEPTH = 10  # the lexical scores whose mean says how well the query's words matched
YARDSTICK_MESSAGES = 10  # fewer message candidates: all candidates are the yardstick
USUAL_WORDS = 20  # a message of this many words is neither marked up nor down for length


@dataclass
class Signal:
    """One ranked candidate list: ids best first with their scores."""

    ranked: list[tuple[uuid.UUID, float]]
    weight: float
    extra: dict[uuid.UUID, float] = field(default_factory=dict)  # scores of unlisted ones

    def __post_init__(self) -> None:
        self.rank = {memory_id: rank for rank, (memory_id, _) in enumerate(self.ranked, 1)}
        self.score = dict(self.ranked)
        self.mean, self.std = 0.0, 0.0

    def normalise_over(self, values: Sequence[float]) -> None:
        """Sets the mean and deviation ``z`` uses: those of the signal over the yardstick."""
        if values:
            self.mean = sum(values) / len(values)
            self.std = math.sqrt(sum((v - self.mean) ** 2 for v in values) / len(values))

    def value(self, memory_id: uuid.UUID, fallback: float | None = None) -> float:
        if memory_id in self.score:
            return self.score[memory_id]
        if memory_id in self.extra:
            return self.extra[memory_id]
        return fallback if fallback is not None else 0.0

    def z(self, value: float) -> float:
        return (value - self.mean) / self.std if self.std > 1e-9 else 0.0


@dataclass(frozen=True)
class Ranked:
    memory_id: uuid.UUID
    similarity: float
    score: float
    explain: dict[str, object]
    folds: tuple[uuid.UUID, ...] = ()  # memories it stands for (``fold``)


def yardstick(rows: Mapping[uuid.UUID, Candidate]) -> frozenset[uuid.UUID]:
    """The candidates every one is measured against: the messages, when there are
    ``YARDSTICK_MESSAGES`` or more (what was said is the scale: facts, added, never reorder
    it), else all of them: the spread of a handful of chat turns is whatever those turns
    happen to be (over three messages, "Dana is allergic to peanuts" outranked "Dana moved
    from Lisbon to Oslo" for "where does Dana live now?" by a BM25 difference the tiny
    deviation blew up), and so few messages all fit in one page of results anyway."""
    said = frozenset(memory_id for memory_id, row in rows.items() if row.kind == "message")
    return said if len(said) >= YARDSTICK_MESSAGES else frozenset(rows)


def lexical_trust(scores: Sequence[float], weight: float | None, clarity: float) -> float:
    """The share of ``lexical_weight`` a lexical list earns: all of it unless its best
    ``CLEAR_DEPTH`` scores (``scores``, best first) average under ``clarity`` times the
    query's term ``weight`` (``LexicalIndex.weight``), then in proportion. Such a list
    matched words that are incidental to the query ("what would his political *leaning*
    likely be?" → "glad you've got people to *lean* on") and the meaning is left to decide;
    z-scores alone make its best match stand out however little of the query it holds.
    LoCoMo dev hybrid recall@10 0.882 either way, open-domain 0.627 → 0.667 (its questions
    speculate: "would she enjoy...?"). 1 where the source cannot say (``weight`` None)."""
    if weight is None or weight <= 0 or clarity <= 0:
        return 1.0
    best = scores[:CLEAR_DEPTH]
    mean = sum(best) / len(best) if best else 0.0
    return min(1.0, mean / (clarity * weight))


def fuse(rows: dict[uuid.UUID, Candidate], dense: Signal | None, lexical: Signal | None,
         graph: Sequence[uuid.UUID], settings: SearchSettings, threshold: float | None,
         scale: Set[uuid.UUID], now: datetime | None = None, period: Period | None = None, *,
         named: Set[str] = frozenset(), naming: Set[uuid.UUID] = frozenset()) -> list[Ranked]:
    """``rows``: every candidate that matches the search. Returns them all, best first,
    those under ``threshold`` left out, every one measured against ``scale`` (``yardstick``
    of ``rows``). With one of dense and lexical, its raw score is the base (so a dense
    search scores by cosine); with both, their weighted z-scores, and recency, validity,
    the speakers the query names (``named``; ``naming``: the facts that name one of them)
    and a message's length count."""
    now = now or datetime.now(UTC)
    reached = set(graph)
    both = dense is not None and lexical is not None
    if dense is not None:
        dense.normalise_over([row.similarity for m, row in rows.items() if m in scale])
    if lexical is not None:
        lexical.normalise_over([lexical.value(m) for m in rows if m in scale])
    ranked: list[Ranked] = []
    for memory_id, row in rows.items():
        similarity = row.similarity
        if threshold is not None and similarity < threshold:
            continue
        total = 0.0
        explain: dict[str, object] = {}
        # A memory the graph reached is there because of a relation, not because it shares
        # the question's words or meaning (the answer to a multi-hop question does not):
        # in a hybrid ranking it is not marked down below average for that.
        floor = 0.0 if (both and memory_id in reached) else -math.inf
        if dense is not None:
            z = max(dense.z(similarity), floor)
            total += dense.weight * z if both else similarity
            explain["dense"] = {"rank": dense.rank.get(memory_id), "score": similarity,
                                "z": round(z, 4)}
        if lexical is not None:
            value = lexical.value(memory_id)
            z = max(lexical.z(value), floor)
            total += lexical.weight * z if both else value
            explain["lexical"] = {"rank": lexical.rank.get(memory_id), "score": value,
                                  "z": round(z, 4), "weight": round(lexical.weight, 4)}
        if memory_id in reached:
            total += settings.graph_weight
        explain["graph"] = {"reached": memory_id in reached,
                            "bonus": settings.graph_weight if memory_id in reached else 0.0}
        if both and period is not None:
            dated = settings.date_weight if period.holds(row.since) else 0.0
            total += dated
            explain["date"] = dated
        if both:
            total += _said(row, named, memory_id in naming, settings, explain)
        if both and settings.recency_weight:
            age_days = max(0.0, (now - row.since).total_seconds() / DAY_S)
            recency = settings.recency_weight * math.exp(-age_days /
                                                         settings.recency_half_life_days)
            total += recency
            explain["recency"] = round(recency, 4)
        if both and row.invalid_at is not None and row.invalid_at <= now:
            total -= settings.superseded_penalty
            explain["superseded_penalty"] = settings.superseded_penalty
        ranked.append(Ranked(memory_id, similarity, total, explain))
    if both:
        ranked = _lend_within_conversations(ranked, rows, settings, scale)
    for item in ranked:
        item.explain["fused"] = round(item.score, 4)
    ranked.sort(key=lambda r: (-r.score, -r.similarity, r.memory_id))
    return ranked


def _said(row: Candidate, named: Set[str], names: bool, settings: SearchSettings,
          explain: dict[str, object]) -> float:
    """What a message gains for who said it and how much it says: ``speaker_weight`` when
    the query names its speaker (LoCoMo dev: 97 % of the questions that name one of the two
    speakers have evidence that speaker said), and ``length_weight`` times the log of its
    words over the usual twenty (evidence turns there have a median of 30 words, the others
    19: "Remember Jon, just do it!" matches "what do Jon and Gina have in common?" by its
    words, and says nothing of it). A fact gains ``speaker_weight`` when it ``names`` someone
    the query names (the query was searched without the name: "Dana works at Equinor" is
    about Dana as what Dana said is), and nothing for its length: it says one thing."""
    if row.kind != "message":
        gain = settings.speaker_weight if names else 0.0
        explain["speaker"] = gain
        return gain
    speaker = settings.speaker_weight if row.speaker in named else 0.0
    length = settings.length_weight * math.log((row.words + 1) / (USUAL_WORDS + 1))
    explain["speaker"] = speaker
    explain["length"] = round(length, 4)
    return speaker + length


def _lend_within_conversations(ranked: list[Ranked], rows: dict[uuid.UUID, Candidate],
                               settings: SearchSettings, scale: Set[uuid.UUID]
                               ) -> list[Ranked]:
    """Each candidate gains ``conversation_weight`` times the best score among the
    candidates of its conversation (its own when it has none: a fact, or a message alone),
    ``neighbour_weight`` times the better of its neighbouring turns' scores and half that
    of the better of the turns two away (in a chat of two, the same speaker's turn before
    or after: someone going on about what the query matched), a turn that is no candidate
    counting as the lowest score on the yardstick (``scale``). Memories outside any
    conversation gain from their own score only, so among themselves their order stays."""
    if not ranked or not (settings.conversation_weight or settings.neighbour_weight):
        return ranked
    best: dict[object, float] = {}
    at: dict[tuple[object, int], float] = {}
    for item in ranked:
        row = rows[item.memory_id]
        if row.conversation is not None and row.turn is not None:
            key = row.conversation
            best[key] = max(best.get(key, -math.inf), item.score)
            at[(key, row.turn)] = item.score
    # (every memory on the yardstick can be under the search's threshold: then the lowest
    # score shown)
    lowest = min((item.score for item in ranked if item.memory_id in scale),
                 default=min(item.score for item in ranked))
    lent = []
    for item in ranked:
        row = rows[item.memory_id]
        if row.conversation is not None and row.turn is not None:
            peak = best[row.conversation]
            neighbour, further = (max(at.get((row.conversation, row.turn - away), lowest),
                                      at.get((row.conversation, row.turn + away), lowest))
                                  for away in (1, 2))
        else:
            peak, neighbour, further = item.score, lowest, lowest
        gain = settings.conversation_weight * peak + settings.neighbour_weight * (
            neighbour + further / 2)
        explain = {**item.explain, "conversation": {"best": round(peak, 4),
                                                    "neighbour": round(neighbour, 4),
                                                    "further": round(further, 4),
                                                    "gain": round(gain, 4)}}
        lent.append(replace(item, score=item.score + gain, explain=explain))
    return lent


def fold(ranked: list[Ranked], rows: dict[uuid.UUID, Candidate],
         cited: dict[uuid.UUID, set[uuid.UUID]]) -> list[Ranked]:
    """Facts and the messages they were distilled from (``cited``: fact → message ids) take
    one place in the ranking, the best-ranked one's: a message below a fact that cites it is
    left out (the fact stands for it), and so is a fact whose every message is already
    shown above it (it would add no evidence). A distilled fact thus moves its conversation
    up when it matches the question better, and never pushes out the message that matched
    it. Each kept memory lists in ``explain["folds"]`` those it stands for. (Showing a
    second fact of a message already shown through another fact, which can say something
    the first does not, cost LoCoMo dev evidence recall: over 412 questions @10 0.896 →
    0.893, @5 0.825 → 0.818, below messages alone at 0.823; ``explain["folds"]`` names it.)"""
    if not cited:
        return ranked
    shown: set[uuid.UUID] = set()  # messages shown, in person or through a fact
    kept: list[Ranked] = []
    stands_for: dict[uuid.UUID, list[uuid.UUID]] = {}
    first_shown: dict[uuid.UUID, uuid.UUID] = {}  # message → the memory that showed it
    for item in ranked:
        memory_id = item.memory_id
        if rows[memory_id].kind == "message":
            if memory_id in shown:
                stands_for[first_shown[memory_id]].append(memory_id)
                continue
            shown.add(memory_id)
            first_shown[memory_id] = memory_id
        else:
            sources = cited.get(memory_id, set())
            if sources and sources <= shown:
                stands_for[first_shown[min(sources)]].append(memory_id)
                continue
            for source in sources - shown:
                first_shown[source] = memory_id
            shown |= sources
        stands_for[memory_id] = []
        kept.append(item)
    return [replace(item, folds=tuple(folded),
                    explain={**item.explain, "folds": [str(m) for m in folded]})
            if (folded := stands_for[item.memory_id]) else item for item in kept]
