"""Query embeddings, cached and micro-batched: agents ask the same questions again, and on a
CPU the embedding is most of a search's time (a few milliseconds on two cores).

Cached per project: one cache for all would let a project time its search (the
``Server-Timing`` header gives the embed step) and learn whether another project had asked
the same words lately.

Misses within ``window_s`` of the first go to the embedder as one call, so concurrent
searches share a forward pass (a batch of sixteen short queries costs a few single ones);
nobody waits longer than the window for company, and a full batch goes at once. Equal
questions of one project within a window are embedded once.
"""

from __future__ import annotations

import asyncio
import contextvars
import uuid
from collections import OrderedDict

import numpy as np
import numpy.typing as npt

from app.embeddings import Embedder

Key = tuple[uuid.UUID, str, str]
Vector = npt.NDArray[np.float32]
Made = tuple[Vector, str]  # a vector and the model that made it


class QueryEmbeddings:
    def __init__(self, embedder: Embedder, size: int, window_s: float = 0.0,
                 max_batch: int = 64):
        self.embedder = embedder
        self.size = size
        self.window_s = window_s
        self.max_batch = max_batch
        # Keyed by project, model and text: after a switch of model, no vector of the old one.
        self._cache: OrderedDict[Key, Vector] = OrderedDict()
        self._pending: dict[Key, asyncio.Future[Made]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._running: set[asyncio.Task[None]] = set()  # held: the loop keeps weak references
        self.hits = 0
        self.misses = 0
        self.batches = 0  # embedder calls made for misses

    async def get(self, project_id: uuid.UUID, text: str) -> Vector:
        return (await self.made(project_id, text))[0]

    async def made(self, project_id: uuid.UUID, text: str) -> Made:
        """The vector of ``text`` and the model that made it: while the process switches
        model (``app.index.switch``) a search must not take one model's vector to an index
        of the other's."""
        key = (project_id, self.embedder.model_name, text)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            self.hits += 1
            return cached, key[1]
        self.misses += 1
        future = self._pending.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._pending[key] = future
            if len(self._pending) >= self.max_batch or self.window_s <= 0:
                self._flush()
            elif self._timer is None:
                self._timer = asyncio.get_running_loop().call_later(self.window_s,
                                                                    self._flush)
        # Shielded: one caller giving up (a client gone) must not cancel the others' vector.
        return await asyncio.shield(future)

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending = self._pending, {}
        if batch:
            self.batches += 1
            # Started in an empty context: it serves every caller in the batch, not the one
            # whose request happened to fill it (``app.logs``).
            task = asyncio.get_running_loop().create_task(
                self._embed(batch), name="query-embed", context=contextvars.Context())
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _embed(self, batch: dict[Key, asyncio.Future[Made]]) -> None:
        try:
            while True:  # a switch of model during the call: its vectors may be of either
                model = self.embedder.model_name
                vectors = await self.embedder.embed([key[2] for key in batch])
                if self.embedder.model_name == model:
                    break
        except Exception as exc:  # every waiting search gets the embedder's error
            for future in batch.values():
                if not future.done():
                    future.set_exception(exc)
            return
        for (key, future), vector in zip(batch.items(), vectors, strict=True):
            array = np.asarray(vector, dtype=np.float32)
            array.setflags(write=False)
            if self.size and key[1] == model:
                self._cache[key] = array
                while len(self._cache) > self.size:
                    self._cache.popitem(last=False)
            if not future.done():
                future.set_result((array, model))
