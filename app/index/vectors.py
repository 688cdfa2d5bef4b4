"""The FAISS index behind search: the one module that imports faiss.

Vectors are unit-normalised embeddings, so inner product is cosine similarity. Positions in
the index are the memory index's *slots*: vectors are only ever appended (a changed memory
gets a new slot, the old one is masked out), because HNSW in faiss cannot remove vectors.

* **Type by size.** Flat (exact) up to ``flat_max`` vectors; past it an HNSW copy is built
  off to the side (``hnsw_m``, ``hnsw_ef_construction``) and swapped in, searched with
  ``hnsw_ef_search``.
* **Filters.** A search names the slots it may return (a bitmap). Up to ``exact_max`` of
  them are scored exactly, from the flat storage every index type keeps; more go through
  HNSW with the bitmap as faiss's ``IDSelector``, so every result matches the filter.
* **GPU.** When the installed faiss has GPU support and a GPU is visible (and
  ``search.gpu`` is ``auto``), a copy of the vectors lives on the GPU and answers searches
  over whole projects in micro-batches (see ``Batcher``); filtered and small searches stay
  exact on the CPU, where the GPU has no selector support.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from app.config import SearchSettings

logger = logging.getLogger(__name__)

Floats = npt.NDArray[np.float32]
Slots = npt.NDArray[np.int64]
SMALL = 4096  # up to this many allowed slots, gather and multiply (no pass over the index)


def gpu_count() -> int:
    get = getattr(faiss, "get_num_gpus", None)
    try:
        return int(get()) if get is not None else 0
    except Exception:  # a GPU build without a usable driver
        return 0


class VectorIndex:
    def __init__(self, dimension: int, settings: SearchSettings):
        self.dimension = dimension
        self.settings = settings
        self._index: Any = faiss.IndexFlatIP(dimension)
        self._gpu: Any = None
        self._gpu_resources: Any = None
        self._gpu_size = 0

    @property
    def kind(self) -> str:
        return "hnsw" if isinstance(self._index, faiss.IndexHNSW) else "flat"

    @property
    def size(self) -> int:
        return int(self._index.ntotal)

    @property
    def on_gpu(self) -> bool:
        return self._gpu is not None

    def _storage(self) -> Any:
        return faiss.downcast_index(self._index.storage) if self.kind == "hnsw" else self._index

    def vectors(self) -> Floats:
        """Every stored vector, one row per slot (a view: no copy)."""
        storage = self._storage()
        flat = faiss.rev_swig_ptr(storage.get_xb(), self.size * self.dimension)
        return np.asarray(flat).reshape(self.size, self.dimension)

    def add(self, vectors: Floats) -> None:
        """Appends; the first new vector takes slot ``size``."""
        if len(vectors) == 0:
            return
        self._index.add(np.ascontiguousarray(vectors, dtype=np.float32))

    @property
    def outgrown(self) -> bool:
        """Flat, with more vectors than ``flat_max``: time for ``hnsw_copy`` and ``use``."""
        return self.kind == "flat" and self.size > self.settings.flat_max

    def hnsw_copy(self) -> Any:
        """An HNSW index of the vectors held now, built without touching this one (so it can
        run in a thread while searches go on; minutes at a million vectors)."""
        began = time.perf_counter()
        index = faiss.IndexHNSWFlat(self.dimension, self.settings.hnsw_m,
                                    faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = self.settings.hnsw_ef_construction
        index.add(self.vectors().copy())
        logger.info("vector index: HNSW of %d vectors built in %.1fs", index.ntotal,
                    time.perf_counter() - began)
        return index

    def use(self, index: Any) -> None:
        """Swaps in an index made by ``hnsw_copy`` of every vector held now."""
        if index.ntotal != self.size:
            raise ValueError(f"index of {index.ntotal} vectors for {self.size} slots")
        self._index = index
        self._drop_gpu()

    def rebuild(self, vectors: Floats) -> None:
        """A fresh index of these vectors (compaction), of the type their number calls for."""
        self._index = faiss.IndexFlatIP(self.dimension)
        self._index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        if self.outgrown:
            self.use(self.hnsw_copy())
        self._drop_gpu()

    # -- search ----------------------------------------------------------------------------

    def search(self, query: Floats, k: int, allowed: Slots) -> tuple[Slots, Floats]:
        """The ``k`` allowed slots nearest to ``query`` (one vector), best first, with their
        cosine similarity. ``allowed`` is sorted and unique."""
        k = min(k, len(allowed))
        if k <= 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        if len(allowed) <= SMALL:
            scores = self.vectors()[allowed] @ query
            return _top(allowed, scores, k)
        bitmap = _bitmap(allowed, self.size)
        selector = faiss.IDSelectorBitmap(self.size, faiss.swig_ptr(bitmap))
        if self.kind == "flat" or len(allowed) <= self.settings.exact_max:
            params = faiss.SearchParameters(sel=selector)  # type: ignore[call-arg]
            distances, labels = self._storage().search(query[None, :], k, params=params)
        else:
            params = faiss.SearchParametersHNSW(  # type: ignore[attr-defined]
                sel=selector, efSearch=max(self.settings.hnsw_ef_search, k))
            distances, labels = self._index.search(query[None, :], k, params=params)
        keep = labels[0] >= 0
        return labels[0][keep].astype(np.int64), distances[0][keep].astype(np.float32)

    def search_all(self, queries: Floats, k: int) -> tuple[Slots, Floats]:
        """Unfiltered ``k`` nearest of each query (rows), on the GPU copy when there is one.
        The caller drops slots it may not return."""
        index = self._gpu_index() or self._index
        if self.kind == "hnsw" and index is self._index:
            self._index.hnsw.efSearch = max(self.settings.hnsw_ef_search, k)
        distances, labels = index.search(np.ascontiguousarray(queries, dtype=np.float32),
                                         min(k, max(self.size, 1)))
        return labels.astype(np.int64), distances.astype(np.float32)

    # -- GPU -------------------------------------------------------------------------------

    def _gpu_index(self) -> Any:
        if self.settings.gpu == "off" or gpu_count() == 0:
            return None
        if self._gpu is None or self._gpu_size != self.size:
            self._drop_gpu()
            self._gpu_resources = faiss.StandardGpuResources()
            flat = faiss.IndexFlatIP(self.dimension)
            flat.add(self.vectors())
            self._gpu = faiss.index_cpu_to_gpu(self._gpu_resources, 0, flat)
            self._gpu_size = self.size
        return self._gpu

    def _drop_gpu(self) -> None:
        self._gpu = None
        self._gpu_resources = None
        self._gpu_size = 0

    # -- snapshot --------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        faiss.write_index(self._index, str(path))

    @classmethod
    def load(cls, path: Path, dimension: int, settings: SearchSettings) -> VectorIndex:
        index = cls(dimension, settings)
        loaded = faiss.read_index(str(path))
        if loaded.d != dimension:
            raise ValueError(f"snapshot has {loaded.d}-d vectors, the model makes {dimension}")
        index._index = loaded
        return index


def _top(slots: Slots, scores: Floats, k: int) -> tuple[Slots, Floats]:
    if len(scores) > k:
        part = np.argpartition(-scores, k - 1)[:k]
        slots, scores = slots[part], scores[part]
    order = np.argsort(-scores, kind="stable")
    return slots[order], scores[order].astype(np.float32)


def _bitmap(allowed: Slots, size: int) -> npt.NDArray[np.uint8]:
    """faiss's ``IDSelectorBitmap`` layout: bit ``i & 7`` of byte ``i >> 3``."""
    mask = np.zeros(size, dtype=bool)
    mask[allowed] = True
    return np.packbits(mask, bitorder="little")


@dataclass
class _Pending:
    query: Floats
    k: int
    future: asyncio.Future[tuple[Slots, Floats]]


@dataclass
class Batcher:
    """Concurrent whole-index searches within ``window_s`` go to the index as one batch: on a
    GPU, many queries cost about what one does. Bounded: a batch holds at most ``max_batch``
    queries, and a full batch goes at once."""

    search: Callable[[Floats, int], tuple[Slots, Floats]]
    window_s: float
    max_batch: int = 256
    _pending: list[_Pending] = field(default_factory=list)
    _timer: asyncio.TimerHandle | None = None
    batches: int = 0

    async def __call__(self, query: Floats, k: int) -> tuple[Slots, Floats]:
        loop = asyncio.get_running_loop()
        pending = _Pending(query, k, loop.create_future())
        self._pending.append(pending)
        if len(self._pending) >= self.max_batch:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.window_s, self._flush)
        return await pending.future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending = self._pending, []
        if not batch:
            return
        self.batches += 1
        try:
            labels, scores = self.search(np.stack([p.query for p in batch]),
                                         max(p.k for p in batch))
        except Exception as exc:
            for item in batch:
                item.future.set_exception(exc)
            return
        for row, item in enumerate(batch):
            keep = labels[row] >= 0
            item.future.set_result((labels[row][keep][:item.k], scores[row][keep][:item.k]))
