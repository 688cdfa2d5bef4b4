"""The device copy of the index's vectors: an exact scan with torch, on a GPU or on the CPU.

When the vector backend is ``torch`` or ``faiss`` (``VectorOptions``), the index keeps, beside
its host FAISS index, a copy of every vector in a torch tensor on ``device``, and searches
allowed more than ``host_max`` slots scan it exactly:

* **Fed incrementally.** ``add`` uploads only the new rows into spare capacity (grown by half
  when full, by a copy on the device: never a new upload of what is there); ``remove`` zeroes
  rows and clears their bit in ``live``. ``uploaded_rows`` counts what crossed to the device.
* **Filters as masks.** A search names, per query, the slots it may return (what the slot
  table allows) or None for every live one; the mask is ``allowed & live``, applied before the
  top-k (masked scores are -inf), so dead slots and other scopes are never returned and the
  top k of what matches is exact.
* **One scan for many queries.** ``search_many`` scores a batch in one matmul per block of
  rows (fp16 on a GPU, fp32 on the CPU) and takes the top k per row; ``Batcher`` gathers the
  searches that arrive within a short window into such a batch.
* **Kernels.** By default torch's matmul + top-k; with a ``Kernel`` (faiss's brute-force
  search, ``app.index.vectors``) the unmasked top k comes from it, deeper until enough of
  each query's allowed slots are among it, and from the masked torch scan past its limit.

This module imports numpy and (when used) torch, nothing of the web or database stack, so
``bench.gpu`` runs the service's own scan on a machine that has only those.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import torch

Floats = npt.NDArray[np.float32]
Slots = npt.NDArray[np.int64]
Found = tuple[Slots, Floats]  # one query's slots, best first, and their scores

GROWTH = 1.5
MIN_CAPACITY = 4096
BLOCK_SCORES = 1 << 27  # scores held at once in a scan (queries x rows of one block)


def resolve_device(name: str) -> str:
    """``auto``: ``cuda`` when torch sees a GPU, else ``cpu``; ``cuda``/``cuda:N`` must be
    there (a service told to search on a GPU that has none stops at start, not later)."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"search device {name!r} asked for, but torch sees no CUDA device")
    return name


class Kernel(Protocol):
    """An unmasked exact top-k over rows of ``base``: the ``k`` best inner products of each
    query, best first, as (scores float32, row numbers int64, -1 where none); ``limit`` is
    the largest ``k`` it takes."""

    name: str
    limit: int

    def __call__(self, queries: torch.Tensor, base: torch.Tensor,
                 k: int) -> tuple[torch.Tensor, torch.Tensor]: ...


class DeviceVectors:
    def __init__(self, dimension: int, device: str = "cpu", *, half: bool | None = None,
                 kernel: Kernel | None = None) -> None:
        import torch

        self.dimension = dimension
        self.device = torch.device(device)
        # fp16 halves what a scan reads on a GPU; on the CPU torch's fp16 matmul is slow.
        half = self.device.type == "cuda" if half is None else half
        self.dtype = torch.float16 if half else torch.float32
        self.kernel = kernel
        self.size = 0
        self.uploaded_rows = 0  # rows copied host → device, ever: the test of "incremental"
        self.reallocations = 0
        self._base = torch.zeros((0, dimension), dtype=self.dtype, device=self.device)
        self._live = torch.zeros(0, dtype=torch.bool, device=self.device)

    @property
    def capacity(self) -> int:
        return int(self._base.shape[0])

    @property
    def live_count(self) -> int:
        return int(self._live[:self.size].sum())

    def describe(self) -> str:
        kernel = "torch" if self.kernel is None else self.kernel.name
        return f"{kernel} exact scan on {self.device} ({str(self.dtype).removeprefix('torch.')})"

    def reserve(self, rows: int) -> None:
        """Room for ``rows`` vectors in all; what is held moves on the device, once."""
        import torch

        if rows <= self.capacity:
            return
        base = torch.zeros((rows, self.dimension), dtype=self.dtype, device=self.device)
        live = torch.zeros(rows, dtype=torch.bool, device=self.device)
        base[:self.size] = self._base[:self.size]
        live[:self.size] = self._live[:self.size]
        self._base, self._live = base, live
        self.reallocations += 1

    def add(self, vectors: Floats) -> None:
        """Appends: the first new vector takes slot ``size``. Only these rows are uploaded."""
        import torch

        count = len(vectors)
        if count == 0:
            return
        if self.size + count > self.capacity:
            self.reserve(max(self.size + count, int(self.capacity * GROWTH), MIN_CAPACITY))
        rows = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
        self._base[self.size:self.size + count] = rows.to(self.device, self.dtype)
        self._live[self.size:self.size + count] = True
        self.size += count
        self.uploaded_rows += count

    def remove(self, slots: Sequence[int] | Slots) -> None:
        """These slots are dead: their rows zeroed (the vector leaves the device now) and
        never returned again."""
        import torch

        if len(slots) == 0:
            return
        index = torch.as_tensor(np.asarray(slots, dtype=np.int64), device=self.device)
        self._base[index] = 0
        self._live[index] = False

    def rows(self, slots: Slots) -> Floats:
        """The device's copy of these rows, as float32 on the host (for tests)."""
        index = np.asarray(slots, dtype=np.int64)
        return self._base[index].float().cpu().numpy()

    # -- search ----------------------------------------------------------------------------

    def search_many(self, queries: Floats, k: int,
                    allowed: Sequence[Slots | None]) -> list[Found]:
        """The ``k`` best slots of each query (rows of ``queries``) among its ``allowed``
        slots (None: every live one), best first, with their inner product."""
        import torch

        if len(allowed) != len(queries):
            raise ValueError(f"{len(queries)} queries with {len(allowed)} masks")
        k = min(k, self.size)
        if k <= 0:
            return [(np.empty(0, np.int64), np.empty(0, np.float32)) for _ in allowed]
        with torch.inference_mode():
            query = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32)).to(
                self.device, self.dtype)
            keep = self._mask(allowed)
            found = self._kernel_top(query, k, keep) if self.kernel is not None else None
            scores, labels = found if found is not None else self._masked_top(query, k, keep)
            scores_host = scores.float().cpu().numpy()
            labels_host = labels.cpu().numpy()
        results = []
        for row in range(len(allowed)):
            hit = labels_host[row] >= 0
            results.append((labels_host[row][hit].astype(np.int64),
                            scores_host[row][hit].astype(np.float32)))
        return results

    def _mask(self, allowed: Sequence[Slots | None]) -> torch.Tensor:
        """``allowed & live`` per query, (queries or 1) x size; a query's slots go up as
        indexes (8 bytes each) and are scattered on the device; shared arrays go once."""
        import torch

        live = self._live[:self.size]
        if all(slots is None for slots in allowed):
            return live.unsqueeze(0)
        keep = torch.zeros((len(allowed), self.size), dtype=torch.bool, device=self.device)
        first: dict[int, int] = {}
        for row, slots in enumerate(allowed):
            if slots is None:
                keep[row] = live
            elif id(slots) in first:
                keep[row] = keep[first[id(slots)]]
            else:
                first[id(slots)] = row
                index = torch.from_numpy(np.asarray(slots, dtype=np.int64)).to(self.device)
                keep[row, index] = True
                keep[row] &= live
        return keep

    def _masked_top(self, query: torch.Tensor, k: int,
                    keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores of every row, masked to -inf where not kept, top k; by blocks of rows so
        a large batch never holds queries x size scores at once."""
        import torch

        block = max(1, BLOCK_SCORES // len(query))
        values, labels = [], []
        for start in range(0, self.size, block):
            stop = min(self.size, start + block)
            scores = query @ self._base[start:stop].T
            scores.masked_fill_(~keep[:, start:stop], float("-inf"))
            top = scores.topk(min(k, stop - start), dim=1)
            values.append(top.values.float())
            labels.append(top.indices + start)
        value, label = values[0], labels[0]
        if len(values) > 1:
            top = torch.cat(values, dim=1).topk(k, dim=1)
            value, label = top.values, torch.cat(labels, dim=1).gather(1, top.indices)
        return value, label.masked_fill(torch.isneginf(value), -1)

    def _kernel_top(self, query: torch.Tensor, k: int,
                    keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The kernel's unmasked top ``depth``, kept where the mask allows, deeper (x4) until
        every query has its ``k`` (or all it may return); None past the kernel's limit."""
        import torch

        assert self.kernel is not None
        wanted = keep.expand(len(query), -1).sum(dim=1).clamp(max=k)
        limit = min(self.kernel.limit, self.size)
        depth = min(k, limit)
        while True:
            scores, labels = self.kernel(query, self._base[:self.size], depth)
            kept = (labels >= 0) & keep.expand(len(query), -1).gather(1, labels.clamp(min=0))
            if bool((kept.sum(dim=1) >= wanted).all()):
                break
            if depth >= limit:
                return None
            depth = min(limit, depth * 4)
        # The kept ones first, in the kernel's order (best first), then cut at k.
        order = torch.argsort((~kept).to(torch.int8), dim=1, stable=True)[:, :k]
        kept = kept.gather(1, order)
        return (scores.gather(1, order).float().masked_fill(~kept, float("-inf")),
                labels.gather(1, order).masked_fill(~kept, -1))


# -- micro-batching ----------------------------------------------------------------------------


class BatchSearch(Protocol):
    def search_many(self, queries: Floats, k: int,
                    allowed: Sequence[Slots | None]) -> list[Found]: ...


@dataclass
class _Pending:
    index: BatchSearch
    query: Floats
    k: int
    allowed: Slots | None
    future: asyncio.Future[Found]


@dataclass
class Batcher:
    """Searches that arrive within ``window_s`` of the first go to their index as one batch
    (one scan of the device copy answers them all: on a GPU, many queries cost about what
    one does). Bounded: a batch holds at most ``max_batch`` queries, and a full one goes at
    once. Searches of different indexes (before and after a compaction) are batched apart,
    each with the index its allowed slots were computed against."""

    window_s: float
    max_batch: int = 256
    _pending: list[_Pending] = field(default_factory=list)
    _timer: asyncio.TimerHandle | None = None
    batches: int = 0

    async def __call__(self, index: BatchSearch, query: Floats, k: int,
                       allowed: Slots | None = None) -> Found:
        loop = asyncio.get_running_loop()
        pending = _Pending(index, query, k, allowed, loop.create_future())
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
        groups: dict[int, list[_Pending]] = {}
        for item in batch:
            groups.setdefault(id(item.index), []).append(item)
        for group in groups.values():
            self.batches += 1
            try:
                found = group[0].index.search_many(
                    np.stack([item.query for item in group]), max(item.k for item in group),
                    [item.allowed for item in group])
            except Exception as exc:
                for item in group:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            for item, (slots, scores) in zip(group, found, strict=True):
                if not item.future.done():
                    item.future.set_result((slots[:item.k], scores[:item.k]))
