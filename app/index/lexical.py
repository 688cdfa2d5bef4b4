"""BM25 over memories, kept in the API process beside the vector index.

Documents are a memory's text and its context (see migration 0006), lower-cased, split on
non-letters, English stopwords dropped, Snowball-stemmed. Statistics (document count, mean
length, document frequency) are per project, so one tenant's words never weigh on another's
ranking. Slots are the vector index's: ``MemoryIndex`` assigns them and says which ones a
search may see (``allowed``), so a filtered search is scored exactly over what matches.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator, Sequence
from functools import lru_cache
from itertools import pairwise

import numpy as np
import numpy.typing as npt
import snowballstemmer

from app.domain import STOPWORDS
from app.index.columns import Column
from app.index.saved import Saved

K1 = 1.2
B = 0.75
_WORD = re.compile(r"[^\W_]+")


_stemmer = snowballstemmer.stemmer("english")


@lru_cache(maxsize=200_000)
def _stem(word: str) -> str:
    return str(_stemmer.stemWord(word))


def tokenize(text: str) -> list[str]:
    return [_stem(word) for word in _WORD.findall(text.lower()) if word not in STOPWORDS]


class LexicalIndex:
    def __init__(self) -> None:
        self._term_ids: dict[str, int] = {}
        self._slots: list[Column] = []  # per term: the slots containing it
        self._freqs: list[Column] = []  # per term: how often, aligned with _slots
        self._lengths = Column(np.float32)  # per slot: tokens in the document
        self._doc_terms: dict[int, npt.NDArray[np.int32]] = {}  # per live slot
        self._project_of: dict[int, int] = {}
        self._docs: dict[int, int] = defaultdict(int)  # per project
        self._total_length: dict[int, float] = defaultdict(float)
        self._df: dict[tuple[int, int], int] = defaultdict(int)  # (project, term) → documents

    def add(self, slot: int, project: int, text: str) -> None:
        """``slot`` is new and the highest so far (slots only grow)."""
        tokens = tokenize(text)
        counts: dict[int, int] = defaultdict(int)
        for token in tokens:
            term = self._term_ids.get(token)
            if term is None:
                term = self._term_ids[token] = len(self._slots)
                self._slots.append(Column(np.int64))
                self._freqs.append(Column(np.float32))
            counts[term] += 1
        for term, count in counts.items():
            self._slots[term].extend([slot])
            self._freqs[term].extend([count])
            self._df[(project, term)] += 1
        self._lengths.ensure(slot + 1)
        self._lengths.data[slot] = len(tokens)
        self._doc_terms[slot] = np.fromiter(counts, dtype=np.int32, count=len(counts))
        self._project_of[slot] = project
        self._docs[project] += 1
        self._total_length[project] += len(tokens)

    def remove(self, slot: int) -> None:
        """The slot no longer counts; its postings stay until a rebuild and are masked out."""
        terms = self._doc_terms.pop(slot, None)
        if terms is None:
            return
        project = self._project_of.pop(slot)
        for term in terms.tolist():
            self._df[(project, term)] -= 1
        self._docs[project] -= 1
        self._total_length[project] -= float(self._lengths.data[slot])

    def search(self, project: int, query: str, allowed: npt.NDArray[np.bool_],
               n: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """The ``n`` best slots among ``allowed`` (a mask over every slot), best first, with
        their BM25 scores; slots scoring 0 (no query term) are left out."""
        [found] = self.search_each(project, query, allowed, n, [np.flatnonzero(allowed)])
        return found

    def search_each(self, project: int, query: str, allowed: npt.NDArray[np.bool_], n: int,
                    groups: Sequence[npt.NDArray[np.int64]]
                    ) -> list[tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]]:
        """As ``search``, the ``n`` best of each of ``groups`` (slot arrays within
        ``allowed``), the query scored once."""
        scores = self.scores(project, query, allowed)
        return [_best(scores, group, n) for group in groups]

    def scores(self, project: int, query: str,
               allowed: npt.NDArray[np.bool_]) -> npt.NDArray[np.float32]:
        """BM25 of every slot (0 where not allowed or no term matches)."""
        scores = np.zeros(len(allowed), dtype=np.float32)
        for slots, freqs, idf, mean_length in self._terms(project, query):
            keep = slots < len(allowed)
            slots, freqs = slots[keep], freqs[keep]
            visible = allowed[slots]
            slots, freqs = slots[visible], freqs[visible]
            if slots.size:
                scores[slots] += self._bm25(slots, freqs, idf, mean_length)
        return scores

    def scores_at(self, project: int, query: str,
                  slots: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        """BM25 of these few slots, aligned with them: a binary search of each query term's
        postings (sorted, as slots only grow and compaction keeps their order) instead of
        a pass over all of them, which is what makes scoring fusion's candidates cheap."""
        scores = np.zeros(len(slots), dtype=np.float32)
        for posting, freqs, idf, mean_length in self._terms(project, query):
            at = np.minimum(np.searchsorted(posting, slots), posting.size - 1)
            found = posting[at] == slots
            if found.any():
                scores[found] += self._bm25(slots[found], freqs[at[found]], idf, mean_length)
        return scores

    def weight(self, project: int, query: str) -> float:
        """What a document of the project's mean length holding each of the query's terms
        once scores: the sum of their IDF (terms the project never saw left out)."""
        return sum(idf for _, _, idf, _ in self._terms(project, query))

    def _terms(self, project: int, query: str) -> Iterator[
            tuple[npt.NDArray[np.int64], npt.NDArray[np.float32], float, float]]:
        """Per distinct query term the project holds: its postings (slots and frequencies,
        every project's), its IDF and the project's mean document length."""
        docs = self._docs.get(project, 0)
        if docs <= 0:
            return
        mean_length = max(self._total_length[project] / docs, 1.0)
        for token in dict.fromkeys(tokenize(query)):
            term = self._term_ids.get(token)
            df = 0 if term is None else self._df.get((project, term), 0)
            if term is None or df <= 0:
                continue
            idf = float(np.log1p((docs - df + 0.5) / (df + 0.5)))
            yield self._slots[term].view(), self._freqs[term].view(), idf, mean_length

    def _bm25(self, slots: npt.NDArray[np.int64], freqs: npt.NDArray[np.float32], idf: float,
              mean_length: float) -> npt.NDArray[np.float32]:
        norm = K1 * (1.0 - B + B * self._lengths.view()[slots] / mean_length)
        return (idf * freqs * (K1 + 1.0) / (freqs + norm)).astype(np.float32)

    def holding(self, slots: list[int], text: str) -> list[bool]:
        """Whether each of these documents holds every word of ``text`` (as tokenised)."""
        terms = [self._term_ids.get(token) for token in dict.fromkeys(tokenize(text))]
        if not terms or None in terms:
            return [False] * len(slots)
        wanted = np.asarray(terms, dtype=np.int32)
        return [slot in self._doc_terms and bool(np.isin(wanted, self._doc_terms[slot]).all())
                for slot in slots]

    def renumbered(self, old: npt.NDArray[np.int64]) -> LexicalIndex:
        """The same documents with slot ``old[i]`` moved to ``i`` (compaction); slots not
        in ``old`` are dropped, and so are the words only they held: nothing of a deleted
        memory survives a compaction."""
        mapping = np.full(max(self._lengths.size, int(old.max(initial=-1)) + 1), -1, np.int64)
        mapping[old] = np.arange(len(old))
        index = LexicalIndex()
        terms = np.full(len(self._slots), -1, np.int64)  # old term id → new, or -1
        for term, (slots, freqs) in enumerate(zip(self._slots, self._freqs, strict=True)):
            moved = mapping[slots.view()]
            keep = moved >= 0
            if not keep.any():
                continue
            terms[term] = len(index._slots)
            index._slots.append(Column(np.int64, data=moved[keep]))
            index._freqs.append(Column(np.float32, data=freqs.view()[keep].copy()))
        index._term_ids = {word: int(terms[term]) for word, term in self._term_ids.items()
                           if terms[term] >= 0}
        index._lengths = Column(np.float32, data=self._lengths.view()[old].copy())
        index._doc_terms = {int(mapping[s]): terms[t].astype(np.int32)
                            for s, t in self._doc_terms.items()}
        index._project_of = {int(mapping[s]): p for s, p in self._project_of.items()}
        index._docs = defaultdict(int, {p: n for p, n in self._docs.items() if n > 0})
        index._total_length = defaultdict(float, {p: self._total_length[p] for p in index._docs})
        index._df = defaultdict(int, {(p, int(terms[t])): n for (p, t), n in self._df.items()
                                      if n > 0 and terms[t] >= 0})
        return index

    # -- snapshot --------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Slots seen (live or not): one past the highest."""
        return self._lengths.size

    def documents(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """The slots whose documents count (not removed), ascending, and their projects."""
        slots = np.fromiter(self._project_of, np.int64, len(self._project_of))
        projects = np.fromiter(self._project_of.values(), np.int64, len(self._project_of))
        order = np.argsort(slots)
        return slots[order], projects[order]

    def saved(self) -> Saved:
        """The postings as one flat array of slots and one of frequencies, term ``t``'s at
        ``offsets[t]:offsets[t + 1]``; each slot's length; the live documents and their
        projects; the terms in id order. Each document's terms and the per-project
        statistics follow from those, so they are made again on load rather than stored."""
        offsets = np.zeros(len(self._slots) + 1, dtype=np.int64)
        np.cumsum(np.fromiter((c.size for c in self._slots), np.int64, len(self._slots)),
                  out=offsets[1:])
        live = np.fromiter(self._project_of, np.int64, len(self._project_of))
        projects = np.fromiter(self._project_of.values(), np.int64, len(self._project_of))
        return Saved({"terms": sorted(self._term_ids, key=self._term_ids.__getitem__)}, {
            "offsets": offsets,
            "slots": np.concatenate([c.view() for c in self._slots] or [np.empty(0, np.int64)]),
            "freqs": np.concatenate([c.view() for c in self._freqs]
                                    or [np.empty(0, np.float32)]),
            "lengths": self._lengths.copy(), "live": live, "projects": projects})

    @classmethod
    def from_saved(cls, saved: Saved) -> LexicalIndex:
        """The index ``saved`` holds; raises ``ValueError`` on anything missing, of another
        type or shape, or inconsistent (a posting past the last slot, postings out of order,
        a document counted twice)."""
        index = cls()
        terms = saved.strings("terms")
        index._term_ids = {term: number for number, term in enumerate(terms)}
        if len(index._term_ids) != len(terms):
            raise ValueError("snapshot terms repeat")
        lengths = saved.array("lengths", np.float32, (None,))
        slots = saved.array("slots", np.int64, (None,), within=(0, len(lengths)))
        freqs = saved.array("freqs", np.float32, (len(slots),))
        offsets = saved.array("offsets", np.int64, (len(terms) + 1,))
        live = saved.array("live", np.int64, (None,), within=(0, len(lengths)))
        # (bounded, so that a project code times the number of terms stays in an int64)
        projects = saved.array("projects", np.int64, (len(live),),
                               within=(0, np.iinfo(np.int32).max))
        sizes = np.diff(offsets)
        if offsets[0] != 0 or offsets[-1] != len(slots) or (sizes < 0).any():
            raise ValueError("snapshot posting offsets do not cover the postings")
        if not (np.all(freqs >= 1) and np.all(lengths >= 0) and np.isfinite(lengths).all()):
            raise ValueError("snapshot frequencies or lengths out of range")
        term_of = np.repeat(np.arange(len(terms), dtype=np.int64), sizes)
        # Each term's slots strictly ascending (``scores_at`` searches them in halves).
        if (np.diff(term_of * max(len(lengths), 1) + slots) <= 0).any():
            raise ValueError("snapshot postings out of order")
        bounds = list(pairwise(offsets.tolist()))
        index._slots = [Column(np.int64, data=slots[a:b]) for a, b in bounds]
        index._freqs = [Column(np.float32, data=freqs[a:b]) for a, b in bounds]
        index._lengths = Column(np.float32, data=lengths)
        index._project_of = dict(zip(live.tolist(), projects.tolist(), strict=True))
        if len(index._project_of) != len(live):
            raise ValueError("snapshot counts a document twice")
        index._count(live, projects, slots, term_of)
        return index

    def _count(self, live: npt.NDArray[np.int64], projects: npt.NDArray[np.int64],
               slots: npt.NDArray[np.int64], term_of: npt.NDArray[np.int64]) -> None:
        """Each live document's terms (those whose postings hold its slot) and the
        per-project statistics, as ``add`` and ``remove`` would have left them (minus the
        entries counted down to 0, which read the same)."""
        project_at = np.full(self._lengths.size, -1, dtype=np.int64)
        project_at[live] = projects
        holds = project_at[slots] >= 0
        order = np.argsort(slots[holds], kind="stable")
        doc_slots = slots[holds][order]
        doc_terms = term_of[holds][order].astype(np.int32)
        ordered = np.sort(live)
        starts = np.searchsorted(doc_slots, ordered, side="left").tolist()
        ends = np.searchsorted(doc_slots, ordered, side="right").tolist()
        self._doc_terms = {slot: doc_terms[a:b]
                           for slot, a, b in zip(ordered.tolist(), starts, ends, strict=True)}
        present, which = np.unique(projects, return_inverse=True)
        docs = np.bincount(which, minlength=len(present))
        length = np.bincount(which, weights=self._lengths.view()[live].astype(np.float64),
                             minlength=len(present))
        self._docs = defaultdict(int, zip(present.tolist(), docs.tolist(), strict=True))
        self._total_length = defaultdict(float, zip(present.tolist(), length.tolist(),
                                                    strict=True))
        width = max(len(self._slots), 1)
        pairs, counts = np.unique(project_at[doc_slots] * width + doc_terms, return_counts=True)
        keys = zip((pairs // width).tolist(), (pairs % width).tolist(), strict=True)
        self._df = defaultdict(int, zip(keys, counts.tolist(), strict=True))


def _best(scores: npt.NDArray[np.float32], among: npt.NDArray[np.int64],
          n: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """The ``n`` of the slots ``among`` that score best in ``scores`` (over every slot), best
    first, with their scores; those scoring 0 left out."""
    hit = among[scores[among] > 0]
    if hit.size == 0:
        return np.empty(0, np.int64), np.empty(0, np.float32)
    if hit.size > n:
        hit = hit[np.argpartition(-scores[hit], n - 1)[:n]]
    order = hit[np.argsort(-scores[hit], kind="stable")]
    return order.astype(np.int64), scores[order]
