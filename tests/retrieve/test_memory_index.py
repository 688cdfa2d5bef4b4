"""The in-process index (FAISS + BM25 fed by the change log) against the real Postgres: it
follows every kind of change, restarts from its snapshot to the same state a fresh build
reaches, answers filtered searches exactly on flat and HNSW indexes, and two API processes
on one database agree."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from app.config import SearchSettings, Settings
from app.domain import CURRENT, EVERY, ProjectScope, Scope, content_hash
from app.embeddings import SentenceTransformerEmbedder
from app.index.candidates import CandidateQuery
from app.index.device import Batcher
from app.index.memory_index import MemoryIndex
from app.index.vectors import VectorIndex, VectorOptions
from app.main import create_app
from app.store.db import Database
from app.store.models import Memory
from app.store.repositories import memories as repository
from app.store.repositories.memories import NewMemory
from tests.conftest import project_key
from tests.consolidate.scripted_brain import Brain, FactSpec, ends
from tests.consolidate.test_consolidation_api import consolidate

DIM = 384


def unit(rng: np.random.Generator, n: int) -> np.ndarray:  # type: ignore[type-arg]
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


async def insert(database: Database, project_id: uuid.UUID, user: str, texts: list[str],
                 vectors: np.ndarray, **extra: Any) -> list[uuid.UUID]:  # type: ignore[type-arg]
    async with database.session_scope() as session:
        inserted = await repository.insert_new(session, project_id, Scope(user_id=user), [
            NewMemory(text, content_hash(text), {"n": i, "name": ("Ann", "Bo", None)[i % 3]},
                      vector.tolist(), **extra)
            for i, (text, vector) in enumerate(zip(texts, vectors, strict=True))])
    return [inserted[content_hash(text)] for text in texts]


def state(index: MemoryIndex, project_id: uuid.UUID) -> dict[uuid.UUID, Any]:
    """Every searchable memory of the project as the index holds it."""
    slots = index.allowed(ProjectScope(project_id), EVERY)
    vectors = index.vectors.vectors()
    table = index.state.slots
    return {table.ids[s]: (np.round(vectors[s], 5).tobytes(), int(table.column("valid")[s]),
                           int(table.column("invalid")[s]), int(table.column("expires")[s]),
                           int(table.column("scope.user_id")[s]) >= 0,
                           table.speakers.get(int(table.column("speaker")[s])),
                           int(table.column("words")[s]))
            for s in slots.tolist()}


def searches(index: MemoryIndex, project_id: uuid.UUID, query: np.ndarray,  # type: ignore[type-arg]
             words: str) -> tuple[Any, Any]:
    allowed = index.allowed(ProjectScope(project_id), CURRENT)
    lexical = [(m, round(s, 4)) for m, s in index.lexical_search(project_id, words, allowed, 30)]
    # Equal scores may come in either order, and the last ones may be cut anywhere.
    lexical = sorted((item for item in lexical if item[1] > lexical[-1][1]),
                     key=lambda item: (-item[1], item[0]))
    return index.dense(query, allowed, 10), lexical


@pytest.fixture
async def project(database: Database, clean: None) -> uuid.UUID:
    _, project_id = await project_key(database, f"index-{uuid.uuid4().hex[:8]}")
    return project_id


async def test_restart_from_snapshot_and_change_log_equals_a_fresh_build(
        database: Database, project: uuid.UUID, tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    settings = SearchSettings(poll_interval_s=60)
    texts = [f"memory number {i} about topic {i % 7}" for i in range(60)]
    ids = await insert(database, project, "u1", texts, unit(rng, 60))
    first = MemoryIndex(database, DIM, "test-model", settings, tmp_path / "snap")
    await first.start()
    await first.aclose()  # saves the snapshot
    assert (tmp_path / "snap" / "meta.json").is_file()

    # Changes the snapshot has not seen: adds, an update, a deletion, a supersession, expiry.
    added = await insert(database, project, "u2", [f"later memory {i}" for i in range(10)],
                         unit(rng, 10))
    async with database.session_scope() as session:
        changed = await repository.get(session, project, ids[0], for_update=True)
        assert changed is not None
        await repository.update_content(session, changed, text="memory number zero rewritten",
                                        content_hash=content_hash("zero rewritten"),
                                        embedding=unit(rng, 1)[0].tolist(), metadata=None)
        await session.execute(sa.delete(Memory).where(Memory.id.in_([ids[1], added[0]])))
        old = await repository.get(session, project, ids[2], for_update=True)
        assert old is not None
        await repository.supersede(session, old, by=ids[3], invalid_at=datetime.now(UTC))
        await session.execute(sa.update(Memory).where(Memory.id == ids[4]).values(
            expires_at=datetime.now(UTC) - timedelta(seconds=1)))

    restarted = MemoryIndex(database, DIM, "test-model", settings, tmp_path / "snap")
    await restarted.start()
    fresh = MemoryIndex(database, DIM, "test-model", settings, None)
    await fresh.start()
    try:
        assert state(restarted, project) == state(fresh, project)
        query = unit(rng, 1)[0]
        assert searches(restarted, project, query, "memory topic 3 rewritten") == \
            searches(fresh, project, query, "memory topic 3 rewritten")
        # A deleted memory's vector is gone from the index at once, not at compaction.
        deleted_slot = restarted.state.slots.ids.index(ids[1])
        assert not restarted.vectors.vectors()[deleted_slot].any()
        live = set(state(fresh, project))
        assert ids[1] not in live
        assert added[0] not in live
        assert ids[0] in live
        current = {restarted.state.slots.ids[s]
                   for s in restarted.allowed(ProjectScope(project), CURRENT).tolist()}
        assert ids[2] not in current
        assert ids[4] not in current
        assert ids[3] in current
        lexical = restarted.lexical_search(project, "rewritten", restarted.allowed(
            ProjectScope(project), CURRENT), 5)
        assert [m for m, _ in lexical] == [ids[0]]

        # Compaction drops the dead slots and answers the same.
        before = state(restarted, project), searches(restarted, project, query, "memory topic 3")
        assert restarted.state.dead > 0
        await restarted.compact()
        assert restarted.state.dead == 0
        assert restarted.vectors.size == restarted.live
        assert (state(restarted, project),
                searches(restarted, project, query, "memory topic 3")) == before
        # (speakers and word counts are in ``state``: "memory number 7 about topic 0",
        # "later memory 3", "memory number zero rewritten")
        kept = state(restarted, project).values()
        assert {said[5] for said in kept} == {"ann", "bo", None}
        assert {said[6] for said in kept} == {6, 3, 4}
    finally:
        await restarted.aclose(save=False)
        await fresh.aclose(save=False)


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
async def test_filtered_search_is_exact(database: Database, project: uuid.UUID,
                                        kind: str) -> None:
    """A big scope, a small one and a metadata-like subset: each search returns the brute
    force top 10 of what matches, on a flat index and on HNSW (past flat_max)."""
    rng = np.random.default_rng(11)
    big = await insert(database, project, "big", [f"big {i}" for i in range(1500)],
                       unit(rng, 1500))
    small = await insert(database, project, "small", [f"small {i}" for i in range(30)],
                         unit(rng, 30))
    settings = SearchSettings(flat_max=100 if kind == "hnsw" else 1_000_000, exact_max=200,
                              hnsw_ef_search=400, poll_interval_s=60)
    index = MemoryIndex(database, DIM, "test-model", settings, None)
    await index.start()
    try:
        assert index.vectors.kind == kind
        async with database.session_scope() as session:
            rows = await repository.live_by_ids(session, project, big + small)
        vectors = {row.id: np.asarray(row.embedding, dtype=np.float32) for row in rows.values()}
        for _ in range(5):
            query = unit(rng, 1)[0]
            for ids, view, among in (
                    (big, (ProjectScope(project, user_id="big"), CURRENT), None),
                    (small, (ProjectScope(project, user_id="small"), CURRENT), None),
                    (big[::50], (ProjectScope(project), CURRENT), big[::50]),
                    (big[:700], (ProjectScope(project), CURRENT), big[:700])):
                expected = sorted(ids, key=lambda m: -float(vectors[m] @ query))[:10]
                found = index.dense(query, index.allowed(*view, among), 10)
                assert [m for m, _ in found] == expected
                for memory_id, score in found:
                    assert score == pytest.approx(float(vectors[memory_id] @ query), abs=1e-4)
    finally:
        await index.aclose(save=False)


async def test_every_kind_of_change_reaches_search(client: httpx.AsyncClient,
                                                   brain: Brain) -> None:
    async def found(query: str, ranking: str = "hybrid", **extra: Any) -> list[str]:
        response = await client.post("/v1/memories/search", json={
            "query": query, "user_id": "u1", "top_k": 10, "ranking": ranking, **extra})
        assert response.status_code == 200, response.text
        return [hit["memory"] for hit in response.json()["results"]]

    ids = []
    for day, text in enumerate(("I keep my bicycle in the garage.",
                                "My favourite tea is oolong."), 1):
        added = await client.post("/v1/memories", json={  # days apart: not each other's context
            "user_id": "u1", "infer": False, "messages": [{"role": "user", "content": text}],
            "observed_at": f"2024-05-{day:02d}T12:00:00Z"})
        assert added.status_code == 201
        ids.append(added.json()["results"][0]["id"])
    bike, tea = ids
    assert "I keep my bicycle in the garage." in await found("bicycle", "lexical")

    patched = await client.patch(f"/v1/memories/{bike}",
                                 json={"text": "I keep my kayak in the garage."})
    assert patched.status_code == 200
    assert await found("bicycle", "lexical") == []
    assert (await found("kayak", "lexical")) == ["I keep my kayak in the garage."]

    assert (await client.delete(f"/v1/memories/{tea}")).status_code == 200
    assert "My favourite tea is oolong." not in await found("oolong tea", "dense")

    brain.facts = {"I live in Paris since January 2023.": [
                       FactSpec("User lives in Paris", "since January 2023")],
                   "I moved to Berlin in January 2024.": [
                       FactSpec("User lives in Berlin", "in January 2024")]}
    brain.still_true = ends(("User lives in Berlin", "User lives in Paris"))
    await consolidate(client, "I live in Paris since January 2023.",
                      observed_at="2023-02-01T00:00:00Z")
    await consolidate(client, "I moved to Berlin in January 2024.",
                      observed_at="2024-02-01T00:00:00Z")
    assert "User lives in Paris" not in await found("where does the user live")
    assert "User lives in Berlin" in await found("where does the user live")
    assert "User lives in Paris" in await found("where does the user live",
                                                include_superseded=True)
    assert "User lives in Paris" in await found("where does the user live",
                                                as_of="2023-06-01T00:00:00Z")

    assert (await client.delete("/v1/memories", params={"user_id": "u1"})).status_code == 200
    assert await found("garage kayak Berlin") == []


@pytest.fixture
async def second_app(settings: Settings, embedder: SentenceTransformerEmbedder,
                     tmp_path: Path) -> AsyncIterator[FastAPI]:
    """Another API process's worth of state on the same database: its own index."""
    configured = settings.model_copy(update={"search": settings.search.model_copy(
        update={"snapshot_dir": tmp_path / "second"})})
    application = create_app(configured, embedder=embedder)
    async with application.router.lifespan_context(application):
        yield application


async def test_two_api_processes_on_one_database_agree(client: httpx.AsyncClient,
                                                       second_app: FastAPI,
                                                       api_key: str) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=second_app),
                                 base_url="http://test",
                                 headers={"Authorization": f"Bearer {api_key}"}) as other:
        async def found(http: httpx.AsyncClient, query: str) -> list[str]:
            response = await http.post("/v1/memories/search",
                                       json={"query": query, "user_id": "u1"})
            return [hit["memory"] for hit in response.json()["results"]]

        written = await client.post("/v1/memories", json={
            "user_id": "u1", "infer": False,
            "messages": [{"role": "user", "content": "The spare key is under the blue pot."}]})
        memory_id = written.json()["results"][0]["id"]
        # Written through one, searched at once through the other.
        assert await found(other, "where is the spare key") == [
            "The spare key is under the blue pot."]
        assert (await other.delete(f"/v1/memories/{memory_id}")).status_code == 200
        assert await found(client, "where is the spare key") == []


HYBRID_SET = [
    "Invoice 58213 was paid in full.",
    "Invoice 58231 is still open.",
    "Invoice 85213 was disputed by the client.",
    "Invoice 52813 needs a signature.",
    "Invoice 13852 went to the wrong address.",
    "I adopted a dog named Rex from the shelter last spring.",
    "My sister sends me photos of wildflowers from her hikes.",
    "The router in the hallway blinks when the internet drops.",
]


async def test_hybrid_finds_what_each_signal_alone_misses(client: httpx.AsyncClient) -> None:
    for day, text in enumerate(HYBRID_SET, 1):  # days apart: no memory is another's context
        added = await client.post("/v1/memories", json={
            "user_id": "u1", "infer": False, "messages": [{"role": "user", "content": text}],
            "observed_at": f"2024-05-{day:02d}T12:00:00Z"})
        assert added.status_code == 201

    async def top(query: str, ranking: str, k: int) -> list[str]:
        response = await client.post("/v1/memories/search", json={
            "query": query, "user_id": "u1", "top_k": k, "ranking": ranking})
        return [hit["memory"] for hit in response.json()["results"]]

    keyword, paraphrase = HYBRID_SET[0], HYBRID_SET[5]
    # The number is the point; to the embedding, 58231 and 58213 are nearly the same.
    query = "status of invoice 58213"
    assert await top(query, "dense", 1) == [HYBRID_SET[1]]
    assert await top(query, "lexical", 1) == [keyword]
    assert await top(query, "hybrid", 1) == [keyword]
    # A paraphrase sharing no word with the memory: lexical finds nothing.
    assert paraphrase not in await top("canine companion", "lexical", 2)
    assert await top("canine companion", "dense", 1) == [paraphrase]
    assert await top("canine companion", "hybrid", 1) == [paraphrase]

    response = await client.post("/v1/memories/search", json={
        "query": query, "user_id": "u1", "top_k": 1, "explain": True})
    [hit] = response.json()["results"]
    explain = hit["explain"]
    assert explain["lexical"]["rank"] == 1
    assert explain["dense"]["rank"] == 2
    assert explain["dense"]["score"] == pytest.approx(hit["similarity"], abs=1e-6)
    assert explain["fused"] == pytest.approx(hit["score"], abs=1e-3)


async def test_concurrent_searches_go_as_one_batch() -> None:
    """The device copy's micro-batching (here on the CPU: the same code): concurrent searches
    within the window are one scan, each with its own mask, and each gets what it would have
    got alone; searches of two indexes (before and after a compaction) are batched apart."""
    rng = np.random.default_rng(5)
    options = VectorOptions(device="cpu", vector_backend="torch", host_max=0)
    vectors, other = VectorIndex(DIM, options), VectorIndex(DIM, options)
    vectors.add(unit(rng, 500))
    other.add(unit(rng, 50))
    batcher = Batcher(window_s=0.05)
    queries = unit(rng, 20)
    masks = [None if i % 2 else np.arange(i, 500, 3, dtype=np.int64) for i in range(20)]
    together = await asyncio.gather(*(batcher(vectors, q, 5, m)
                                      for q, m in zip(queries, masks, strict=True)))
    assert batcher.batches == 1
    for query, mask, (slots, scores) in zip(queries, masks, together, strict=True):
        [(alone_slots, alone_scores)] = vectors.search_many(query[None, :], 5, [mask])
        assert slots.tolist() == alone_slots.tolist()
        assert np.allclose(scores, alone_scores)
        if mask is not None:
            assert np.isin(slots, mask).all()
    mine, theirs = await asyncio.gather(batcher(vectors, queries[0], 3),
                                        batcher(other, queries[0], 3))
    assert batcher.batches == 3
    assert len(mine[0]) == len(theirs[0]) == 3
    assert theirs[0].tolist() == other.search_many(queries[:1], 3, [None])[0][0].tolist()


@pytest.fixture
def other_process(database_url: str, tmp_path: Path) -> Iterator[str]:
    """A real second API process (``anamnesis serve``) on the test database."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "ANAMNESIS_DB__URL": database_url, "ANAMNESIS_DATA_DIR": str(tmp_path),
           "ANAMNESIS_DB__MIGRATE_ON_START": "false", "ANAMNESIS_LOG_LEVEL": "WARNING"}
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
                               env=env, stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the second API process did not get ready"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base_url}/ready", timeout=2).status_code == 200:
                    break
            time.sleep(0.25)
        yield base_url
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.close()


async def test_a_separate_api_process_converges(client: httpx.AsyncClient, other_process: str,
                                                api_key: str) -> None:
    """Writes through this process are found by the other one's own index, and back."""
    async with httpx.AsyncClient(base_url=other_process, trust_env=False, timeout=30,
                                 headers={"Authorization": f"Bearer {api_key}"}) as other:
        async def found(http: httpx.AsyncClient, query: str) -> list[str]:
            response = await http.post("/v1/memories/search",
                                       json={"query": query, "user_id": "u1"})
            assert response.status_code == 200, response.text
            return [hit["memory"] for hit in response.json()["results"]]

        for writer, reader, text in ((client, other, "The canoe paddles hang in the shed."),
                                     (other, client, "The tent poles are in the attic.")):
            written = await writer.post("/v1/memories", json={
                "user_id": "u1", "infer": False,
                "messages": [{"role": "user", "content": text}]})
            assert written.status_code == 201, written.text
            assert text in await found(reader, text)
        memory_id = written.json()["results"][0]["id"]
        assert (await client.delete(f"/v1/memories/{memory_id}")).status_code == 200
        assert "The tent poles are in the attic." not in await found(other, "tent poles attic")


@pytest.mark.parametrize("gap_timeout_s", [60.0, 0.001])
async def test_a_change_that_commits_late_is_applied_not_skipped(
        database: Database, project: uuid.UUID, gap_timeout_s: float) -> None:
    """A transaction takes its change-log number when it writes and shows it when it commits;
    a later one can commit first. The index applies the later one, and the earlier one when
    it commits: waited for below the position, or, once the wait ran out, checked again."""
    rng = np.random.default_rng(11)
    index = MemoryIndex(database, DIM, "test-model",
                        SearchSettings(poll_interval_s=60, gap_timeout_s=gap_timeout_s), None)
    await index.start(poll=False)
    passed_over = set(index.state.cursor.late)  # holes left by earlier tests' rolled-back writes
    try:
        async with database.session_scope() as slow:  # open until the end of the block
            inserted = await repository.insert_new(slow, project, Scope(user_id="u1"), [
                NewMemory("written first, committed last", content_hash("first"), {},
                          unit(rng, 1)[0].tolist())])
            early = inserted[content_hash("first")]
            [late] = await insert(database, project, "u1", ["written last, committed first"],
                                  unit(rng, 1))
            await index.catch_up_fully()
            if gap_timeout_s < 1:
                await asyncio.sleep(0.01)
                await index.catch_up_fully()  # the wait ran out: the position moves past
            held = {index.state.slots.ids[s]
                    for s in index.allowed(ProjectScope(project), CURRENT).tolist()}
            assert held == {late}
            # Waited for below the position, or passed over and checked again.
            assert bool(index.state.cursor.holes) == (gap_timeout_s > 1)
            assert bool(set(index.state.cursor.late) - passed_over) == (gap_timeout_s < 1)
        await index.catch_up_fully()
        held = {index.state.slots.ids[s]
                for s in index.allowed(ProjectScope(project), CURRENT).tolist()}
        assert held == {early, late}
    finally:
        await index.aclose(save=False)


async def test_a_vector_of_another_model_is_answered_by_postgres(database: Database,
                                                                  project: uuid.UUID) -> None:
    """While a process switches model, a query embedded by the other model than the index's
    takes its candidates from Postgres, never from the index's vectors."""
    rng = np.random.default_rng(5)
    ids = await insert(database, project, "switch", ["tea", "trains", "tulips"], unit(rng, 3))
    index = MemoryIndex(database, DIM, "test-model", SearchSettings(poll_interval_s=60), None)
    await index.start()
    try:
        for model, from_index in (("test-model", True), ("another-model", False)):
            query = CandidateQuery(ProjectScope(project, user_id="switch"), CURRENT, None,
                                   unit(rng, 1)[0], "tea", 10, "dense", time.monotonic(),
                                   model=model)
            async with database.session_scope() as session:
                found = await index.candidates(session, query)
            assert (type(found).__name__ == "FromIndex") is from_index
            assert found.dense is not None
            assert {m for m, _ in found.dense} == set(ids)
    finally:
        await index.aclose(save=False)
