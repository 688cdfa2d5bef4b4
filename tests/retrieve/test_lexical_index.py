"""BM25 in the API process: the scores against the formula written out, and the two ways of
scoring (every allowed slot, or a few given ones) agreeing, before and after compaction."""

from __future__ import annotations

import io
import json
import math
import random

import numpy as np
import pytest

from app.index.lexical import K1, B, LexicalIndex, tokenize
from app.index.saved import Saved

WORDS = ("apple", "banana", "cherry", "ferry", "harbour", "lisbon", "tokyo", "piano", "cello",
         "hiking", "sailing", "ramen", "paella", "climbing", "novel", "garden")


def corpus(seed: int, n: int) -> list[tuple[int, str]]:
    rng = random.Random(seed)
    return [(rng.choice((1, 2)), " ".join(rng.choices(WORDS, k=rng.randint(1, 9))))
            for _ in range(n)]


def reference(docs: dict[int, tuple[int, str]], project: int, query: str) -> dict[int, float]:
    """Okapi BM25 written out over the project's live documents."""
    mine = {slot: tokenize(text) for slot, (p, text) in docs.items() if p == project}
    mean = max(sum(map(len, mine.values())) / len(mine), 1.0)
    scores = dict.fromkeys(mine, 0.0)
    for term in dict.fromkeys(tokenize(query)):
        df = sum(term in tokens for tokens in mine.values())
        if not df:
            continue
        idf = math.log1p((len(mine) - df + 0.5) / (df + 0.5))
        for slot, tokens in mine.items():
            tf = tokens.count(term)
            if tf:
                scores[slot] += idf * tf * (K1 + 1) / (tf + K1 * (1 - B + B * len(tokens) / mean))
    return scores


def test_scores_follow_bm25_per_project_and_both_ways_agree() -> None:
    docs = dict(enumerate(corpus(1, 300)))
    index = LexicalIndex()
    for slot, (project, text) in docs.items():
        index.add(slot, project, text)
    for slot in range(0, 300, 7):  # deleted memories stop counting
        index.remove(slot)
        del docs[slot]

    query = "Sailing to Lisbon on the ferry, with a cello"
    expected = reference(docs, 1, query)
    allowed = np.zeros(300, dtype=bool)
    allowed[list(expected)] = True
    every = index.scores(1, query, allowed)
    assert np.flatnonzero(every).tolist() == sorted(s for s, v in expected.items() if v > 0)
    for slot, value in expected.items():
        assert math.isclose(every[slot], value, rel_tol=1e-5, abs_tol=1e-6)

    picked = np.asarray(random.Random(2).sample(sorted(expected), 40), dtype=np.int64)
    few = index.scores_at(1, query, picked)
    assert np.allclose(few, every[picked], rtol=1e-6, atol=1e-7)
    assert index.scores_at(2, "durian", picked).tolist() == [0.0] * 40


def test_scoring_a_few_slots_agrees_after_compaction() -> None:
    index = LexicalIndex()
    for slot, (project, text) in enumerate(corpus(3, 200)):
        index.add(slot, project, text)
    dead = set(range(5, 200, 4))
    for slot in dead:
        index.remove(slot)
    compacted = index.renumbered(np.asarray([s for s in range(200) if s not in dead]))

    query = "ramen and paella in Tokyo"
    size = 200 - len(dead)
    every = compacted.scores(2, query, np.ones(size, dtype=bool))
    slots = np.arange(size - 1, -1, -3, dtype=np.int64)  # any order, as fusion asks
    assert np.allclose(compacted.scores_at(2, query, slots), every[slots], rtol=1e-6)
    assert every.any()


def read_back(index: LexicalIndex) -> LexicalIndex:
    """The index through a snapshot's files: its arrays through ``.npz``, the rest JSON."""
    saved = index.saved()
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **saved.arrays)
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as stored:
        arrays = {name: stored[name] for name in stored.files}
    return LexicalIndex.from_saved(Saved(json.loads(json.dumps(saved.values)), arrays))


def test_read_back_from_a_snapshot_it_scores_and_counts_on_the_same() -> None:
    """Each document's terms and the per-project statistics are not stored but made again
    on load: the scores agree, and so they do after more documents come and go (what
    ``remove`` counts down must be what ``add`` counted)."""
    texts = corpus(4, 250)
    index = LexicalIndex()
    for slot, (project, text) in enumerate(texts[:200]):
        index.add(slot, project, text)
    for slot in range(0, 200, 6):
        index.remove(slot)
    loaded = read_back(index)
    queries = ("Sailing to Lisbon on the ferry", "ramen paella tokyo", "a cello in the garden")

    def agree() -> None:
        allowed = np.ones(250, dtype=bool)
        for project in (1, 2):
            for query in queries:
                assert np.array_equal(loaded.scores(project, query, allowed),
                                      index.scores(project, query, allowed))
    agree()
    for both in (index, loaded):
        for slot in range(1, 200, 5):
            both.remove(slot)
        for slot, (project, text) in enumerate(texts[200:], 200):
            both.add(slot, project, text)
    agree()
    for ours, theirs in zip(read_back(loaded).documents(), index.documents(), strict=True):
        assert np.array_equal(ours, theirs)
    empty = read_back(LexicalIndex())
    assert empty.scores(1, "ferry", np.ones(3, dtype=bool)).tolist() == [0.0] * 3


def test_a_query_weighs_the_rarity_of_the_terms_the_project_holds() -> None:
    lexical = LexicalIndex()
    for slot, text in enumerate(["lean on friends", "I like tea", "I like coffee",
                                 "we like walks"]):
        lexical.add(slot, 0, text)
    lean, like = lexical.weight(0, "lean"), lexical.weight(0, "like")
    assert lean > like > 0
    # "political" is in no memory of the project, and "would" is a stopword.
    assert lexical.weight(0, "would political leaning likely") == pytest.approx(lean + like)
    assert lexical.weight(1, "lean") == 0.0  # another project holds nothing
    # Every document is two terms long: the one holding "lean" once scores its weight.
    _, [score] = lexical.search(0, "lean", np.ones(4, dtype=bool), 1)
    assert score == pytest.approx(lean)
