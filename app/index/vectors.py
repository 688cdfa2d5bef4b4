"""The FAISS index behind search: the one module that imports faiss.

Vectors are unit-normalised embeddings, so inner product is cosine similarity. Positions in
the index are the memory index's *slots*: vectors are only ever appended (a changed memory
gets a new slot, the old one is masked out), because HNSW in faiss cannot remove vectors.

* **Type by size.** Flat (exact) up to ``flat_max`` vectors; past it an HNSW copy is built
  off to the side (``hnsw_m``, ``hnsw_ef_construction``) and swapped in, searched with
  ``hnsw_ef_search``.
* **Filters.** A search names the slots it may return (sorted). Up to ``host_max`` of them
  are gathered and scored exactly on the host; more, with a device copy, go to it
  (``app.index.device``: an exact scan with the filter as a mask); without one, up to
  ``exact_max`` are scored exactly from the flat storage every index type keeps, and more go
  through HNSW with the filter as faiss's ``IDSelector``. Every result matches the filter.
* **Device copy.** ``vector_backend`` ``torch`` or ``faiss`` keeps every vector a second
  time on ``device`` (a GPU, or the CPU: the same code), fed with each append and removal,
  never uploaded again whole; ``faiss`` scans it with faiss's brute-force kernel
  (``FaissKernel``: ``bfKnn`` on a GPU). ``auto`` takes it on a GPU (faiss when the installed
  faiss has GPU support, else torch) and none on the CPU. With a device copy the host index
  stays flat: the scan answers what HNSW would, exactly.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np
import numpy.typing as npt

from app.index.device import DeviceVectors, Found, resolve_device

if TYPE_CHECKING:
    import torch

    from app.config import SearchSettings

logger = logging.getLogger(__name__)

Floats = npt.NDArray[np.float32]
Slots = npt.NDArray[np.int64]
# The largest k faiss's GPU selection takes (GPU_MAX_SELECTION_K); the CPU kernel is held to
# it too, so the code path is the one a GPU runs.
FAISS_K_MAX = 2048


@dataclass(frozen=True)
class VectorOptions:
    """What the vector index is told (``search.*`` settings, plain: the index and its device
    copy import no settings library)."""

    flat_max: int = 200_000
    hnsw_m: int = 32
    hnsw_ef_construction: int = 64
    hnsw_ef_search: int = 128
    exact_max: int = 50_000
    host_max: int = 4096
    device: str = "auto"
    vector_backend: str = "auto"

    @classmethod
    def of(cls, settings: SearchSettings) -> VectorOptions:
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})


def faiss_gpus() -> int:
    get = getattr(faiss, "get_num_gpus", None)
    try:
        return int(get()) if get is not None else 0
    except Exception:  # a GPU build without a usable driver
        return 0


def open_device_copy(dimension: int, options: VectorOptions) -> DeviceVectors | None:
    """The device copy ``options`` call for (``vector_backend`` on ``device``), or None."""
    backend = options.vector_backend
    if backend == "index" or (backend == "auto" and options.device == "cpu"):
        return None
    device = resolve_device(options.device)
    if backend == "auto":
        if device == "cpu":
            return None
        backend = "faiss" if faiss_gpus() > 0 else "torch"
    if backend == "torch":
        return DeviceVectors(dimension, device)
    if device != "cpu" and faiss_gpus() == 0:
        raise RuntimeError("search.vector_backend=faiss on a GPU needs faiss with GPU "
                           "support (faiss-gpu-cu12); use torch, or auto")
    return DeviceVectors(dimension, device, kernel=FaissKernel())


class FaissKernel:
    """faiss's exact brute-force top-k over the device copy, read in place: ``bfKnn`` on a
    GPU (fp16 or fp32 rows, on torch's current stream), ``faiss.knn`` on the CPU."""

    name = "faiss"
    limit = FAISS_K_MAX

    def __call__(self, queries: torch.Tensor, base: torch.Tensor,
                 k: int) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        if base.device.type == "cpu":
            scores, labels = faiss.knn(queries.float().numpy(), base.float().numpy(), k,
                                       metric=faiss.METRIC_INNER_PRODUCT)
            return torch.from_numpy(scores), torch.from_numpy(labels)
        return _bf_knn(queries.contiguous(), base.contiguous(), k)


@functools.cache
def _gpu_resources() -> Any:
    return faiss.StandardGpuResources()


def _pointer(tensor: torch.Tensor) -> Any:
    return faiss.cast_integer_to_void_ptr(tensor.data_ptr())


def _bf_knn(queries: torch.Tensor, base: torch.Tensor,
            k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``faiss.bfKnn`` on torch tensors of one GPU (what ``faiss.contrib.torch_utils`` does,
    without importing it: it patches every faiss index to take tensors, and drops the search
    parameters the host index passes)."""
    import torch

    kinds = {torch.float16: faiss.DistanceDataType_F16, torch.float32: faiss.DistanceDataType_F32}
    scores = torch.empty((len(queries), k), dtype=torch.float32, device=base.device)
    labels = torch.empty((len(queries), k), dtype=torch.int64, device=base.device)
    args = faiss.GpuDistanceParams()
    args.metric = faiss.METRIC_INNER_PRODUCT
    args.k, args.dims = k, base.shape[1]
    args.vectors, args.vectorType = _pointer(base), kinds[base.dtype]
    args.vectorsRowMajor, args.numVectors = True, base.shape[0]
    args.queries, args.queryType = _pointer(queries), kinds[queries.dtype]
    args.queriesRowMajor, args.numQueries = True, queries.shape[0]
    args.outDistances = faiss.cast_integer_to_float_ptr(scores.data_ptr())
    args.outIndices = faiss.cast_integer_to_idx_t_ptr(labels.data_ptr())
    args.outIndicesType = faiss.IndicesDataType_I64
    args.device = base.device.index or 0
    resources = _gpu_resources()
    device = args.device
    previous = resources.getDefaultStream(device)
    stream = getattr(faiss, "cast_integer_to_cudastream_t")  # GPU builds only  # noqa: B009
    resources.setDefaultStream(device, stream(torch.cuda.current_stream(base.device).cuda_stream))
    try:
        faiss.bfKnn(resources, args)
    finally:
        resources.setDefaultStream(device, previous)
    return scores, labels


class VectorIndex:
    def __init__(self, dimension: int, options: VectorOptions):
        self.dimension = dimension
        self.options = options
        self._index: Any = faiss.IndexFlatIP(dimension)
        self.device = open_device_copy(dimension, options)

    @property
    def kind(self) -> str:
        return "hnsw" if isinstance(self._index, faiss.IndexHNSW) else "flat"

    @property
    def size(self) -> int:
        return int(self._index.ntotal)

    def describe(self) -> str:
        copy = "" if self.device is None else f", {self.device.describe()}"
        return f"{self.kind} index{copy}"

    def _storage(self) -> Any:
        return faiss.downcast_index(self._index.storage) if self.kind == "hnsw" else self._index

    def vectors(self) -> Floats:
        """Every stored vector, one row per slot (a view: no copy)."""
        storage = self._storage()
        flat = faiss.rev_swig_ptr(storage.get_xb(), self.size * self.dimension)
        return np.asarray(flat).reshape(self.size, self.dimension)

    def add(self, vectors: Floats) -> None:
        """Appends; the first new vector takes slot ``size`` (on the device copy too)."""
        if len(vectors) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self._index.add(vectors)
        if self.device is not None:
            self.device.add(vectors)

    def remove(self, slots: Sequence[int]) -> None:
        """Dead slots: their vectors zeroed here and on the device copy (they leave memory,
        and the next snapshot, now; the slot table masks them out of every search)."""
        if not slots:
            return
        self.vectors()[np.asarray(slots, dtype=np.int64)] = 0.0
        if self.device is not None:
            self.device.remove(slots)

    @property
    def outgrown(self) -> bool:
        """Flat, with more vectors than ``flat_max`` and no device copy scanning them all:
        time for ``hnsw_copy`` and ``use``."""
        return self.device is None and self.kind == "flat" and \
            self.size > self.options.flat_max

    def hnsw_copy(self) -> Any:
        """An HNSW index of the vectors held now, built without touching this one (so it can
        run in a thread while searches go on; minutes at a million vectors)."""
        began = time.perf_counter()
        index = faiss.IndexHNSWFlat(self.dimension, self.options.hnsw_m,
                                    faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = self.options.hnsw_ef_construction
        index.add(self.vectors().copy())
        logger.info("vector index: HNSW of %d vectors built in %.1fs", index.ntotal,
                    time.perf_counter() - began)
        return index

    def use(self, index: Any) -> None:
        """Swaps in an index made by ``hnsw_copy`` of every vector held now."""
        if index.ntotal != self.size:
            raise ValueError(f"index of {index.ntotal} vectors for {self.size} slots")
        self._index = index

    def rebuild(self, vectors: Floats) -> None:
        """A fresh index of these vectors (compaction), of the type their number calls for,
        and a fresh device copy of them."""
        self._index = faiss.IndexFlatIP(self.dimension)
        self.device = open_device_copy(self.dimension, self.options)
        if self.device is not None:
            self.device.reserve(len(vectors))
        self.add(vectors)
        if self.outgrown:
            self.use(self.hnsw_copy())

    # -- search ----------------------------------------------------------------------------

    def on_device(self, allowed: Slots) -> bool:
        """Whether a search among ``allowed`` scans the device copy."""
        return self.device is not None and len(allowed) > self.options.host_max

    def search(self, query: Floats, k: int, allowed: Slots) -> tuple[Slots, Floats]:
        """The ``k`` allowed slots nearest to ``query`` (one vector), best first, with their
        cosine similarity. ``allowed`` is sorted and unique."""
        k = min(k, len(allowed))
        if k <= 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        if self.on_device(allowed):
            return self.search_many(query[None, :], k, [allowed])[0]
        if len(allowed) <= self.options.host_max:
            scores = self.vectors()[allowed] @ query
            return _top(allowed, scores, k)
        bitmap = _bitmap(allowed, self.size)
        selector = faiss.IDSelectorBitmap(self.size, faiss.swig_ptr(bitmap))
        if self.kind == "flat" or len(allowed) <= self.options.exact_max:
            params = faiss.SearchParameters(sel=selector)  # type: ignore[call-arg]
            distances, labels = self._storage().search(query[None, :], k, params=params)
        else:
            params = faiss.SearchParametersHNSW(  # type: ignore[attr-defined]
                sel=selector, efSearch=max(self.options.hnsw_ef_search, k))
            distances, labels = self._index.search(query[None, :], k, params=params)
        keep = labels[0] >= 0
        return labels[0][keep].astype(np.int64), distances[0][keep].astype(np.float32)

    def search_many(self, queries: Floats, k: int,
                    allowed: Sequence[Slots | None]) -> list[Found]:
        """Each query's ``k`` best among its allowed slots, from one scan of the device copy
        (``Batcher``); the winners are scored again exactly from the host's fp32 vectors
        (the device may hold fp16) and ordered by that score."""
        assert self.device is not None, "a batched search needs a device copy"
        stored = self.vectors()
        found = []
        for query, (slots, _) in zip(queries, self.device.search_many(queries, k, allowed),
                                     strict=True):
            scores = (stored[slots] @ query).astype(np.float32)
            order = np.argsort(-scores, kind="stable")
            found.append((slots[order], scores[order]))
        return found

    # -- snapshot --------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        faiss.write_index(self._index, str(path))

    @classmethod
    def load(cls, path: Path, dimension: int, options: VectorOptions) -> VectorIndex:
        index = cls(dimension, options)
        loaded = faiss.read_index(str(path))
        if loaded.d != dimension:
            raise ValueError(f"snapshot has {loaded.d}-d vectors, the model makes {dimension}")
        index._index = loaded
        if index.device is not None:  # the one whole upload: at start
            index.device.reserve(index.size)
            index.device.add(index.vectors())
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
