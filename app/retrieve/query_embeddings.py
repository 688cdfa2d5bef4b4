"""Query embeddings, cached: agents ask the same questions again, and on a CPU the
embedding is most of a search's time (about 10 ms of it on two cores).

Cached per project: one cache for all would let a project time its search (the
``Server-Timing`` header gives the embed step) and learn whether another project had asked
the same words lately."""

from __future__ import annotations

import uuid
from collections import OrderedDict

import numpy as np
import numpy.typing as npt

from app.embeddings import Embedder


class QueryEmbeddings:
    def __init__(self, embedder: Embedder, size: int):
        self.embedder = embedder
        self.size = size
        # Keyed by project, model and text: after a switch of model, no vector of the old one.
        self._cache: OrderedDict[tuple[uuid.UUID, str, str], npt.NDArray[np.float32]] = \
            OrderedDict()
        self.hits = 0
        self.misses = 0

    async def get(self, project_id: uuid.UUID, text: str) -> npt.NDArray[np.float32]:
        key = (project_id, self.embedder.model_name, text)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            self.hits += 1
            return cached
        self.misses += 1
        (vector,) = await self.embedder.embed([text])
        array = np.asarray(vector, dtype=np.float32)
        array.setflags(write=False)
        if self.size:
            self._cache[key] = array
            while len(self._cache) > self.size:
                self._cache.popitem(last=False)
        return array
