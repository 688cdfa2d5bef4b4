"""Concurrent callers share forward passes and still get their own vectors, in order."""

import asyncio
import math

from app.embeddings import SentenceTransformerEmbedder


async def test_concurrent_batches_match_single_encodes(
        embedder: SentenceTransformerEmbedder) -> None:
    texts = [f"note number {i} about {topic}" for i, topic in
             enumerate(["tea", "trains", "tulips", "tax", "tennis", "tides", "tango", "toast"])]
    together = await asyncio.gather(*(embedder.embed([text]) for text in texts))
    alone = [embedder.encode_sync([text])[0] for text in texts]
    for (vector,), expected in zip(together, alone, strict=True):
        assert len(vector) == embedder.dimension == 384
        assert math.isclose(sum(v * v for v in vector), 1.0, rel_tol=1e-4)
        assert max(abs(a - b) for a, b in zip(vector, expected, strict=True)) < 1e-4


async def test_empty_input_costs_nothing(embedder: SentenceTransformerEmbedder) -> None:
    assert await embedder.embed([]) == []
