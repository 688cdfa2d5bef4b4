"""The memory index's snapshot on disk, against the real Postgres: owner-only, arrays and JSON
with no pickle written or ever read (an old pickled snapshot, or a pickle planted in its
place, is rebuilt from Postgres and never run), and whatever is damaged in it (truncated,
garbage, a key missing, another type, dtype or shape, arrays that disagree) rebuilt from
Postgres rather than loaded; the slot digests it keeps mean the same in the next process.
That a restart from a snapshot searches as a fresh build does:
``test_memory_index``."""

from __future__ import annotations

import json
import logging
import os
import pickle
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from app.config import SearchSettings
from app.index.memory_index import MemoryIndex
from app.index.snapshot import FORMAT
from app.index.state import IndexState
from app.store.db import Database
from app.store.models import Memory
from app.store.repositories import erasure
from tests.conftest import project_key
from tests.retrieve.test_memory_index import DIM, insert, state, unit

SETTINGS = SearchSettings(poll_interval_s=60)
MODEL = "test-model"
FILES = {"vectors.faiss", "state.npz", "state.json", "meta.json"}
Arrays = dict[str, Any]


class Planted:
    """Unpickled, it makes the folder ``marker``: the stand-in for whatever else a pickle
    planted in a snapshot could run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return os.mkdir, (str(self.marker),)


@pytest.fixture
async def project(database: Database, clean: None) -> uuid.UUID:
    _, project_id = await project_key(database, f"snapshot-{uuid.uuid4().hex[:8]}")
    return project_id


@pytest.fixture
async def folder(database: Database, project: uuid.UUID, tmp_path: Path) -> Path:
    """The snapshot an index saves on shutdown: 12 memories, 2 of them deleted after it
    indexed them (dead slots)."""
    rng = np.random.default_rng(11)
    ids = await insert(database, project, "u1",
                       [f"kept memory {i} about topic {i % 3}" for i in range(12)], unit(rng, 12))
    index = MemoryIndex(database, DIM, MODEL, SETTINGS, tmp_path / "snap")
    await index.start(poll=False)
    async with database.session_scope() as session:
        # Archived (``deleted_at``): dead in the index, not erased (an erasure compacts the
        # index before it is saved).
        await session.execute(sa.update(Memory).where(Memory.id.in_(ids[:2]))
                              .values(deleted_at=sa.func.now()))
    await index.catch_up()
    assert index.state.dead == 2
    await index.aclose()
    return tmp_path / "snap"


def load(folder: Path) -> IndexState | None:
    return IndexState.load(folder, DIM, MODEL, SETTINGS)


def arrays(folder: Path) -> Arrays:
    with np.load(folder / "state.npz", allow_pickle=False) as stored:
        return {name: stored[name] for name in stored.files}


def rewrite_arrays(change: Callable[[Arrays], object]) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        held = arrays(folder)
        change(held)
        with open(folder / "state.npz", "wb") as handle:
            np.savez(handle, **held)
    return damage


def rewrite_values(change: Callable[[dict[str, Any]], object]) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        values = json.loads((folder / "state.json").read_text())
        change(values)
        (folder / "state.json").write_text(json.dumps(values))
    return damage


def truncate(name: str) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        whole = (folder / name).read_bytes()
        (folder / name).write_bytes(whole[:len(whole) // 2])
    return damage


def put(name: str, at: int, value: int) -> Callable[[Path], None]:
    return rewrite_arrays(lambda held: held[name].__setitem__(at, value))


def one_slot_more(held: Arrays) -> None:
    """A dead slot more in the table and the words than there are vectors."""
    for name in [n for n in held if n.startswith("slots.")] + ["lexical.lengths"]:
        held[name] = np.concatenate([held[name], held[name][-1:]])
    held["slots.column.alive"][-1] = False


def reversed_postings(held: Arrays) -> None:
    held["lexical.slots"] = held["lexical.slots"][::-1].copy()


DAMAGE: dict[str, Callable[[Path], None]] = {
    "meta not json": lambda folder: (folder / "meta.json").write_text("{not json"),
    "vectors garbage": lambda folder: (folder / "vectors.faiss").write_bytes(b"\x00" * 64),
    "vectors truncated": truncate("vectors.faiss"),
    "arrays truncated": truncate("state.npz"),
    "arrays garbage": lambda folder: (folder / "state.npz").write_bytes(b"PK\x03\x04" * 40),
    "arrays gone": lambda folder: (folder / "state.npz").unlink(),
    "json truncated": truncate("state.json"),
    "json not an object": lambda folder: (folder / "state.json").write_text("[1, 2]"),
    "json key missing": rewrite_values(lambda values: values.pop("cursor")),
    "json of another type": rewrite_values(
        lambda values: values["slots"].update(codes=[1, 2, 3])),
    "json count of another type": rewrite_values(lambda values: values.update(dead="2")),
    "array missing": rewrite_arrays(lambda held: held.pop("slots.digest")),
    "array of another dtype": rewrite_arrays(
        lambda held: held.update({"slots.ids": held["slots.ids"].astype(np.int64)})),
    "array of another shape": rewrite_arrays(
        lambda held: held.update({"slots.column.alive": held["slots.column.alive"][:-1]})),
    "a code pointing nowhere": put("slots.column.project", 0, 99),
    "a posting past the last slot": put("lexical.slots", -1, 10_000),
    "postings out of order": rewrite_arrays(reversed_postings),
    "table and words disagree on the live slots": rewrite_arrays(
        lambda held: held["slots.column.alive"].fill(True)),
    "table and words disagree on a project": put("lexical.projects", -1, 1),
    "more slots than vectors": rewrite_arrays(one_slot_more),
}


async def restarts_as_a_fresh_build(database: Database, project: uuid.UUID,
                                    folder: Path) -> None:
    """A start on ``folder`` reaches what a build from Postgres does, and its shutdown
    leaves a good snapshot in the folder in place of whatever was there."""
    again = MemoryIndex(database, DIM, MODEL, SETTINGS, folder)
    await again.start(poll=False)
    fresh = MemoryIndex(database, DIM, MODEL, SETTINGS, None)
    await fresh.start(poll=False)
    try:
        assert state(again, project) == state(fresh, project)
        assert len(state(again, project)) == 10
    finally:
        await again.aclose()
        await fresh.aclose(save=False)
    assert {file.name for file in folder.iterdir()} == FILES
    assert load(folder) is not None


async def test_the_snapshot_is_owner_only_arrays_and_json(database: Database,
                                                          project: uuid.UUID,
                                                          folder: Path) -> None:
    """Owner-only, as it holds every memory's words and vectors; nothing in it is a pickle:
    the arrays read with pickle refused, the rest is JSON."""
    assert folder.stat().st_mode & 0o777 == 0o700
    assert {file.name: file.stat().st_mode & 0o777 for file in folder.iterdir()} == \
        dict.fromkeys(FILES, 0o600)
    assert not [file for file in folder.iterdir()
                if file.read_bytes().startswith(b"\x80")]  # pickle's first opcode, PROTO
    assert all(array.dtype != object for array in arrays(folder).values())
    json.loads((folder / "state.json").read_text())
    assert json.loads((folder / "meta.json").read_text())["format"] == FORMAT
    loaded = load(folder)
    assert loaded is not None
    assert (loaded.live, loaded.dead) == (10, 2)
    await restarts_as_a_fresh_build(database, project, folder)


@pytest.mark.parametrize("damage", list(DAMAGE))
async def test_a_damaged_snapshot_is_rebuilt_not_fatal(database: Database, project: uuid.UUID,
                                                       folder: Path, damage: str,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """Whatever is wrong with it reads as no snapshot, with a warning, and the index is
    built from Postgres: loaded, it could be an index at odds with itself."""
    DAMAGE[damage](folder)
    with caplog.at_level(logging.WARNING, logger="app.index"):
        assert load(folder) is None
    assert any("rebuilding" in record.getMessage() for record in caplog.records)
    await restarts_as_a_fresh_build(database, project, folder)


def old_pickled_snapshot(folder: Path, marker: Path) -> None:
    """What the last format wrote: ``state.pickle`` beside meta of format 4."""
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "format": FORMAT - 1}))
    for name in ("state.npz", "state.json"):
        (folder / name).unlink()
    (folder / "state.pickle").write_bytes(pickle.dumps(Planted(marker)))


def pickled_object_array(folder: Path, marker: Path) -> None:
    held = arrays(folder)
    held["slots.ids"] = np.array([Planted(marker)], dtype=object)
    with open(folder / "state.npz", "wb") as handle:
        np.savez(handle, allow_pickle=True, **held)


PLANTED: dict[str, Callable[[Path, Path], None]] = {
    "an old pickled snapshot": old_pickled_snapshot,
    "a pickle for the arrays": lambda folder, marker: (folder / "state.npz").write_bytes(
        pickle.dumps(Planted(marker))),
    "a pickled object among the arrays": pickled_object_array,
    "a pickle for the json": lambda folder, marker: (folder / "state.json").write_bytes(
        pickle.dumps(Planted(marker))),
}


@pytest.mark.parametrize("planted", list(PLANTED))
async def test_a_pickle_in_the_snapshot_is_never_unpickled(database: Database,
                                                           project: uuid.UUID, folder: Path,
                                                           tmp_path: Path, planted: str) -> None:
    """A pickle runs code as it loads: one in the snapshot folder (an old snapshot, or one
    planted) is never unpickled; the index is built from Postgres, and its next snapshot
    replaces the folder, pickle included."""
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(Planted(proof)))  # the payload is live: unpickled, it runs
    assert proof.is_dir()
    marker = tmp_path / "marker"
    PLANTED[planted](folder, marker)
    assert load(folder) is None
    await restarts_as_a_fresh_build(database, project, folder)
    assert not marker.exists()


DIGEST = """
import uuid
from datetime import UTC, datetime
from app.index.slots import digest
from app.store.repositories.changes import IndexRow
print(digest(IndexRow(uuid.UUID(int=1), uuid.UUID(int=2), "u1", None, None, "fact", "text",
                      "the context", "a content hash", [], datetime.now(UTC), None, None, None,
                      False)))
"""


def test_the_digest_a_snapshot_keeps_is_the_same_in_every_process() -> None:
    """A slot's digest (are these the words it holds?) is saved; read back by another
    process it must still say yes, or every change of times only (superseded, expired)
    after a restart would move a memory to a new slot. Python's ``hash`` of a string
    differs per process."""
    found = {subprocess.run([sys.executable, "-c", DIGEST], capture_output=True, text=True,
                            check=True, env={**os.environ, "PYTHONHASHSEED": seed}).stdout
             for seed in ("1", "2")}
    assert len(found) == 1


async def test_an_index_closing_with_erasures_saves_none_of_their_words(
        database: Database, project: uuid.UUID, tmp_path: Path) -> None:
    rng = np.random.default_rng(12)
    ids = await insert(database, project, "u1", ["The locker code is zebra", "Likes tea"],
                       unit(rng, 2))
    index = MemoryIndex(database, DIM, MODEL, SETTINGS, tmp_path / "snap")
    await index.start(poll=False)
    index.save()
    assert b"zebra" in snapshot_files(tmp_path / "snap")
    async with database.session_scope() as session:
        await erasure.erase_memories(session, project, ids[:1])
    await index.catch_up()
    await index.aclose()
    saved = snapshot_files(tmp_path / "snap")
    assert b"zebra" not in saved
    assert ids[0].bytes not in saved
    assert b"tea" in saved
    restarted = MemoryIndex(database, DIM, MODEL, SETTINGS, tmp_path / "snap")
    await restarted.start(poll=False)
    assert restarted.holding(ids) == ids[1:]
    await restarted.aclose(save=False)


def snapshot_files(folder: Path) -> bytes:
    return b"".join(path.read_bytes() for path in sorted(folder.iterdir()))
