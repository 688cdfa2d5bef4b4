"""The memory index on disk: one folder per database, written whole and swapped in.

A snapshot is ``vectors.faiss`` (the vector index), ``state.npz`` (the numeric arrays of
everything else the index holds: slot table, BM25 postings), ``state.json`` (the rest:
codes, vocabulary, change-log bookkeeping) and ``meta.json`` (format, model, dimension and
the change-log position it reflects). Nothing in it can run code as it is read: no pickle
(arrays load with ``allow_pickle=False``), and every part is checked as it is read back
(``saved``). It is only read back by the same model at the same dimension and format;
anything else, or anything unreadable, reads as none, and the index is built from Postgres
instead.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from app.config import SearchSettings
from app.index.saved import Saved
from app.index.vectors import VectorIndex, VectorOptions

logger = logging.getLogger(__name__)

# 2: one state object (slots, lexical, cursor); 3: slots hold the kind; 4: and the
# conversation and turn; 5: no pickle (state.npz and state.json), so an older snapshot,
# pickled, is never opened: it reads as none and the index is built again; 6: slots hold
# the speaker and the word count
FORMAT = 6


def write_snapshot(folder: Path, vectors: VectorIndex, state: Saved,
                   meta: dict[str, Any], writer: str) -> None:
    """Writes beside the old snapshot, then swaps: a reader sees the old one or the new one.
    ``writer`` tells apart two indexes of one database saving at once."""
    temporary = folder.with_name(f"{folder.name}.tmp-{writer}")
    shutil.rmtree(temporary, ignore_errors=True)
    # Owner-only: the snapshot holds every memory's words and vector.
    folder.parent.mkdir(parents=True, exist_ok=True)
    temporary.mkdir(mode=0o700)
    vectors.save(temporary / "vectors.faiss")
    with open(temporary / "state.npz", "wb") as handle:
        np.savez(handle, allow_pickle=False, **state.arrays)
    (temporary / "state.json").write_text(json.dumps(state.values))
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
                  ) -> tuple[VectorIndex, Saved, dict[str, Any]] | None:
    """The vectors, state (not yet checked: its owners check it as they read it) and meta
    of the snapshot in ``folder``, if there is one made by this model at this dimension in
    this format, and readable."""
    if not (folder / "meta.json").is_file():
        return None
    try:
        meta = json.loads((folder / "meta.json").read_text())
        if not isinstance(meta, dict) or (
                meta.get("format"), meta.get("dimension"), meta.get("model")) != (
                FORMAT, dimension, model):
            logger.warning("memory index snapshot made by another model or format; "
                           "rebuilding from Postgres")
            return None
        vectors = VectorIndex.load(folder / "vectors.faiss", dimension,
                                   VectorOptions.of(settings))
        values = json.loads((folder / "state.json").read_text())
        if not isinstance(values, dict):
            raise ValueError("state.json holds no object")
        stored = np.load(folder / "state.npz", allow_pickle=False)
        if not isinstance(stored, np.lib.npyio.NpzFile):
            raise ValueError("state.npz is no archive of arrays")
        with stored:
            arrays = {name: stored[name] for name in stored.files}
    except Exception as exc:  # a snapshot is a cache: whatever is wrong with it, rebuild
        logger.warning("memory index snapshot unreadable (%s: %s); rebuilding",
                       type(exc).__name__, exc)
        return None
    return vectors, Saved(values, arrays), meta
