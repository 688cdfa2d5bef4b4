"""A sentence-transformers model on torch: the reference every other backend is checked
against, and the one that runs on a GPU."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from app.bundled import offline_model_environment


@dataclass
class TorchEncoder:
    """The sentence-transformers model itself, on torch (CPU or GPU)."""

    model: Any
    backend: str = "torch"

    @property
    def dimension(self) -> int:
        # sentence-transformers renamed the accessor; accept both spellings.
        getter = getattr(self.model, "get_embedding_dimension", None) or \
            self.model.get_sentence_embedding_dimension
        return int(getter())

    def encode(self, texts: list[str], batch_size: int) -> npt.NDArray[np.float32]:
        vectors = self.model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)


def load_torch_model(folder: str, device: str, threads: int) -> Any:
    """The sentence-transformers model in ``folder`` on torch (never from a hub)."""
    offline_model_environment()
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    return SentenceTransformer(folder, device=None if device == "auto" else device,
                               local_files_only=True)
