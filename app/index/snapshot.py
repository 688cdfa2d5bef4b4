"""The memory index on disk: one folder per database, written whole and swapped in.

A snapshot is ``vectors.faiss`` (the vector index), ``state.pickle`` (everything else the
index holds: slot table, BM25, change-log bookkeeping) and ``meta.json`` (format, model,
dimension and the change-log position it reflects). It is only read back by the same model
at the same dimension and format; anything else, or anything unreadable, reads as none, and
the index is built from Postgres instead.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

from app.config import SearchSettings
from app.index.vectors import VectorIndex

logger = logging.getLogger(__name__)

# 2: one state object (slots, lexical, cursor); 3: slots hold the kind; 4: and the
# conversation and turn
FORMAT = 4


def write_snapshot(folder: Path, vectors: VectorIndex, state: dict[str, Any],
                   meta: dict[str, Any], writer: str) -> None:
    """Writes beside the old snapshot, then swaps: a reader sees the old one or the new one.
    ``writer`` tells apart two indexes of one database saving at once."""
    temporary = folder.with_name(f"{folder.name}.tmp-{writer}")
    shutil.rmtree(temporary, ignore_errors=True)
    # Owner-only: the snapshot holds every memory's words and vector.
    folder.parent.mkdir(parents=True, exist_ok=True)
    temporary.mkdir(mode=0o700)
    vectors.save(temporary / "vectors.faiss")
    with open(temporary / "state.pickle", "wb") as handle:
        pickle.dump(state, handle, protocol=pickle.HIGHEST_PROTOCOL)
    (temporary / "meta.json").write_text(json.dumps({"format": FORMAT, **meta}))
    for written in temporary.iterdir():
        written.chmod(0o600)
    previous = folder.with_name(f"{folder.name}.old-{writer}")
    shutil.rmtree(previous, ignore_errors=True)
    if folder.exists():
        os.replace(folder, previous)
    os.replace(temporary, folder)
    shutil.rmtree(previous, ignore_errors=True)


def read_snapshot(folder: Path, dimension: int, model: str, settings: SearchSettings
                  ) -> tuple[VectorIndex, dict[str, Any], dict[str, Any]] | None:
    """The vectors, state and meta of the snapshot in ``folder``, if there is one made by
    this model at this dimension and readable."""
    if not (folder / "meta.json").is_file():
        return None
    try:
        meta = json.loads((folder / "meta.json").read_text())
        if (meta.get("format"), meta.get("dimension"), meta.get("model")) != (
                FORMAT, dimension, model):
            logger.warning("memory index snapshot made by another model or format; "
                           "rebuilding from Postgres")
            return None
        vectors = VectorIndex.load(folder / "vectors.faiss", dimension, settings)
        with open(folder / "state.pickle", "rb") as handle:
            state = pickle.load(handle)  # noqa: S301 - our own file, in our data folder
    except Exception as exc:  # a snapshot is a cache: whatever is wrong with it, rebuild
        logger.warning("memory index snapshot unreadable (%s: %s); rebuilding",
                       type(exc).__name__, exc)
        return None
    return vectors, state, meta
