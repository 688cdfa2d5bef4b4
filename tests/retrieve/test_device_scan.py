"""The device copy of the vectors (``app.index.device``), run on the CPU: the same code a GPU
runs, only the device differs. The torch scan and the faiss kernel return the top k the host
FAISS index returns, filters applied as masks and dead slots never returned; appends and
removals reach the copy in place (never a new upload of what it holds), through the index's
catch-up too; and searches through ``/v1/memories/search`` with either backend configured
answer what the host index answers."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import sqlalchemy as sa
import torch
from fastapi import FastAPI

from app.config import SearchSettings, Settings
from app.domain import CURRENT, ProjectScope, Scope, content_hash
from app.embeddings import SentenceTransformerEmbedder
from app.index.device import DeviceVectors
from app.index.memory_index import MemoryIndex
from app.index.vectors import FaissKernel, VectorIndex, VectorOptions, open_device_copy
from app.main import create_app
from app.store.db import Database
from app.store.models import Memory
from app.store.repositories import memories as repository
from app.store.repositories.memories import NewMemory
from tests.conftest import project_key

DIM = 64
Array = np.ndarray[Any, Any]


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> Array:
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def brute_force(vectors: Array, query: Array, allowed: Array, k: int) -> list[int]:
    scores = vectors[allowed] @ query
    return allowed[np.argsort(-scores, kind="stable")[:k]].tolist()


def filled(backend: str, vectors: Array, dead: list[int]) -> VectorIndex:
    """A vector index of ``vectors``, appended in uneven parts, ``dead`` removed; every
    search of more than no slots goes to the device copy (``host_max`` 0)."""
    index = VectorIndex(DIM, VectorOptions(device="cpu", vector_backend=backend, host_max=0))
    for part in np.array_split(vectors, [7, 700, 701, 2500]):
        index.add(part)
    index.remove(dead)
    return index


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_the_scan_returns_the_host_index_top_k(backend: str) -> None:
    rng = np.random.default_rng(3)
    vectors = unit(rng, 3000)
    dead = [0, 5, 1234, 2999]
    live = np.setdiff1d(np.arange(3000), dead)
    host, scanned = filled("index", vectors, dead), filled(backend, vectors, dead)
    assert host.device is None
    assert scanned.device is not None
    assert scanned.device.describe().startswith(backend)
    masks = [live, live[::7], live[:40], live[-3:]]  # as the slot table gives them: no dead
    for query in unit(rng, 10):
        for allowed in masks:
            expected = brute_force(vectors, query, allowed, 10)
            slots, scores = scanned.search(query, 10, allowed)
            assert slots.tolist() == expected
            assert slots.tolist() == host.search(query, 10, allowed)[0].tolist()
            assert np.allclose(scores, vectors[slots] @ query, atol=1e-5)
    # Micro-batched: one scan, a mask per query, each as if alone.
    queries = unit(rng, 4)
    together = scanned.search_many(queries, 10, [None, masks[1], None, masks[2]])
    for query, allowed, (slots, _) in zip(queries, [live, masks[1], live, masks[2]], together,
                                          strict=True):
        assert slots.tolist() == brute_force(vectors, query, allowed, 10)


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_dead_slots_leave_the_device_and_never_come_back(backend: str) -> None:
    rng = np.random.default_rng(4)
    vectors = unit(rng, 500)
    dead = [3, 4, 250]
    index = filled(backend, vectors, dead)
    device = index.device
    assert device is not None
    assert not device.rows(np.asarray(dead)).any()
    assert not index.vectors()[dead].any()
    assert device.live_count == 497
    # Even asked for by name, or with the whole index allowed, a dead slot is not returned;
    # the query is the dead vectors themselves, so they would win if they were there.
    for slot in dead:
        [(named, _), (every, _)] = device.search_many(
            np.stack([vectors[slot]] * 2), 5, [np.asarray([*dead, 7, 8]), None])
        assert set(named.tolist()) == {7, 8}
        assert not set(every.tolist()) & set(dead)


def test_appends_reach_the_device_copy_in_place() -> None:
    rng = np.random.default_rng(5)
    device = DeviceVectors(DIM, "cpu")
    device.reserve(6000)
    storage = device._base.data_ptr()
    added = 0
    for size in (1, 10, 300, 5689):  # fills the reserve exactly
        rows = unit(rng, size)
        device.add(rows)
        added += size
        assert np.array_equal(device.rows(np.arange(added - size, added)), rows)
    # Every row crossed once, into the same storage: nothing was uploaded again or moved.
    assert device.uploaded_rows == added == device.size == 6000
    assert device._base.data_ptr() == storage
    assert device.reallocations == 1  # the reserve
    held = device.rows(np.arange(6000))
    device.add(unit(rng, 1))  # past capacity: it grows on the device, by half
    assert device.uploaded_rows == 6001
    assert device.capacity == 9000
    assert device.reallocations == 2
    assert np.array_equal(device.rows(np.arange(6000)), held)


def test_the_faiss_kernel_past_its_limit_falls_back_to_the_masked_scan() -> None:
    rng = np.random.default_rng(6)
    vectors = unit(rng, 2000)
    kernel = FaissKernel()
    kernel.limit = 32  # a GPU's is 2048; the same path, reached with less data
    scanned = DeviceVectors(DIM, "cpu", kernel=kernel)
    scanned.add(vectors)
    sparse = np.arange(0, 2000, 97, dtype=np.int64)  # 21 slots: few among any top 32
    for query in unit(rng, 5):
        for allowed, k in ((sparse, 10), (None, 50), (None, 10)):
            [(slots, _)] = scanned.search_many(query[None, :], k, [allowed])
            every = np.arange(2000) if allowed is None else allowed
            assert slots.tolist() == brute_force(vectors, query, every, k)


def test_a_half_precision_copy_finds_what_full_precision_does() -> None:
    """fp16 rows (what a GPU holds) on the CPU: the top 10 nearly as fp32 finds it, and the
    index scores its winners again from the host's fp32 vectors."""
    rng = np.random.default_rng(8)
    vectors = unit(rng, 3000)
    half = DeviceVectors(DIM, "cpu", half=True)
    assert half.dtype == torch.float16
    half.add(vectors)
    overlap = []
    for query in unit(rng, 20):
        [(slots, scores)] = half.search_many(query[None, :], 10, [None])
        overlap.append(len(set(slots.tolist()) & set(brute_force(
            vectors, query, np.arange(3000), 10))) / 10)
        assert np.allclose(scores, vectors[slots] @ query, atol=5e-3)
    assert np.mean(overlap) >= 0.95


def test_the_settings_choose_the_copy() -> None:
    def opened(**options: Any) -> DeviceVectors | None:
        return open_device_copy(DIM, VectorOptions(**options))

    assert opened(device="cpu") is None  # auto on the CPU: the host index alone
    assert opened(device="auto", vector_backend="index") is None
    scan = opened(device="cpu", vector_backend="torch")
    assert scan is not None
    assert scan.kernel is None
    assert scan.dtype == torch.float32
    scan = opened(device="cpu", vector_backend="faiss")
    assert scan is not None
    assert isinstance(scan.kernel, FaissKernel)
    if not torch.cuda.is_available():
        assert opened(device="auto") is None
        with pytest.raises(RuntimeError, match="no CUDA device"):
            opened(device="cuda", vector_backend="torch")
    assert SearchSettings(gpu="off").device == "cpu"  # the old setting still means it
    assert VectorOptions.of(SearchSettings(vector_backend="torch", host_max=7)) == \
        VectorOptions(vector_backend="torch", host_max=7)


# -- through the index and the API, on Postgres ----------------------------------------------


async def insert(database: Database, project_id: uuid.UUID, user: str, texts: list[str],
                 vectors: Array) -> list[uuid.UUID]:
    async with database.session_scope() as session:
        inserted = await repository.insert_new(session, project_id, Scope(user_id=user), [
            NewMemory(text, content_hash(text), {}, vector.tolist())
            for text, vector in zip(texts, vectors, strict=True)])
    return [inserted[content_hash(text)] for text in texts]


@pytest.mark.parametrize("backend", ["torch", "faiss"])
async def test_catch_up_feeds_the_device_copy_without_a_rebuild(
        database: Database, clean: None, backend: str) -> None:
    _, project = await project_key(database, f"device-{uuid.uuid4().hex[:8]}")
    rng = np.random.default_rng(9)
    first = await insert(database, project, "u1", [f"first {i}" for i in range(300)],
                         unit(rng, 300, 384))
    settings = SearchSettings(device="cpu", vector_backend=backend, host_max=0,
                              poll_interval_s=60)
    index = MemoryIndex(database, 384, "test-model", settings, None)
    await index.start()
    try:
        device = index.vectors.device
        assert device is not None
        assert device.uploaded_rows == 300
        later = await insert(database, project, "u1", [f"later {i}" for i in range(50)],
                             unit(rng, 50, 384))
        async with database.session_scope() as session:
            await session.execute(sa.delete(Memory).where(Memory.id.in_(first[:20])))
        await index.catch_up_fully()
        # The same copy, grown by exactly the new rows; the deleted ones zeroed in it.
        assert index.vectors.device is device
        assert device.uploaded_rows == device.size == 350
        dead = [index.state.slots.ids.index(m) for m in first[:20]]
        assert not device.rows(np.asarray(dead)).any()
        assert device.live_count == 330
        allowed = index.allowed(ProjectScope(project), CURRENT)
        stored = index.vectors.vectors()
        for query in unit(rng, 5, 384):
            found = index.dense(query, allowed, 10)
            assert [index.state.slots.slot_of[m] for m, _ in found] == \
                brute_force(stored, query, allowed, 10)
        assert set(later) <= {index.state.slots.ids[s] for s in allowed.tolist()}
    finally:
        await index.aclose(save=False)


@pytest.fixture(params=["torch", "faiss"])
async def device_app(request: pytest.FixtureRequest, settings: Settings,
                     embedder: SentenceTransformerEmbedder,
                     tmp_path: Path) -> AsyncIterator[FastAPI]:
    """Another API process on the same database whose index keeps a device copy on the CPU
    and sends every search to it."""
    search = settings.search.model_copy(update={
        "snapshot_dir": tmp_path / "device", "device": "cpu", "vector_backend": request.param,
        "host_max": 0, "batch_window_ms": 5.0})
    application = create_app(settings.model_copy(update={"search": search}), embedder=embedder)
    async with application.router.lifespan_context(application):
        yield application


TEXTS = [
    ("I keep my bicycle in the garage.", "home"), ("My favourite tea is oolong.", "food"),
    ("We had ramen in Tokyo last spring.", "food"), ("The router blinks when wifi drops.", "home"),
    ("I am learning the cello on Tuesdays.", "hobby"), ("Paella is best with saffron.", "food"),
    ("My sister lives in Lisbon.", "family"), ("I go bouldering twice a week.", "hobby"),
]


async def test_search_through_the_api_with_a_device_copy(
        client: httpx.AsyncClient, device_app: FastAPI, api_key: str) -> None:
    for day, (text, topic) in enumerate(TEXTS, 1):
        added = await client.post("/v1/memories", json={
            "user_id": "u1", "infer": False, "metadata": {"topic": topic},
            "messages": [{"role": "user", "content": text}],
            "observed_at": f"2024-05-{day:02d}T12:00:00Z"})
        assert added.status_code == 201, added.text
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=device_app),
                                 base_url="http://test",
                                 headers={"Authorization": f"Bearer {api_key}"}) as scanned:
        async def hits(http: httpx.AsyncClient, **body: Any) -> list[tuple[str, float]]:
            response = await http.post("/v1/memories/search", json={"top_k": 5, **body})
            assert response.status_code == 200, response.text
            return [(hit["id"], hit["score"]) for hit in response.json()["results"]]

        asks = [{"query": "what do I drink", "user_id": "u1"},
                {"query": "food I ate while travelling", "user_id": "u1", "ranking": "dense"},
                {"query": "food", "filters": {"metadata.topic": "food"}, "ranking": "dense"},
                {"query": "where is the bike", "user_id": "u1", "ranking": "hybrid"}]
        expected = [await hits(client, **ask) for ask in asks]
        # Concurrently, so searches may share scans (the micro-batches a GPU wants).
        found = await asyncio.gather(*(hits(scanned, **ask) for ask in asks))
        for mine, theirs in zip(found, expected, strict=True):
            assert [hit for hit, _ in mine] == [hit for hit, _ in theirs]
            assert [score for _, score in mine] == pytest.approx(
                [score for _, score in theirs], abs=1e-4)
        index = device_app.state.resources.index
        assert index is not None
        assert index.vectors.device is not None
        assert index._batcher.batches >= 1  # the dense lists came from the device copy
        food = {hit for hit, _ in expected[2]}
        assert len(food) == 3  # the filter, applied as the mask: only the food memories
