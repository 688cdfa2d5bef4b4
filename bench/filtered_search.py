"""Filtered vector search in Postgres: pgvector's default iterative-scan budget vs ours.

Loads N memories with random unit vectors straight into a fresh bundled Postgres (bulk
path: rows first, HNSW index after, so no embedding model is involved), then times
``app.store.repositories.memories.nearest`` for filters of different selectivity, once with
pgvector's default ``hnsw.max_scan_tuples`` (20,000: the index walks far past rejected rows)
and once with the service's bound (after which an exact scan through the filter indexes
answers). Both variants run in one process on the same data; prints one JSON document.

Run from the repository root: ``python -m bench.filtered_search --n 100000``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, cast

import numpy as np
import sqlalchemy as sa

from app.config import DatabaseSettings, Settings
from app.domain import Filter
from app.retrieve.filters import parse_filters
from app.store.db import open_database
from app.store.ids import uuid7
from app.store.models import Memory, Project
from app.store.repositories import memories as repository
from bench.managed_server import machine_info, progress

USERS = 10
TOPICS = ["food", "travel", "work", "health", "family"]
PGVECTOR_DEFAULT_MAX_SCAN_TUPLES = 20_000
FILTERS: dict[str, dict[str, Any] | None] = {
    "none (100%)": None,
    "user_id (10%)": {"user_id": "u3"},
    "metadata.topic (20%)": {"metadata.topic": "food"},
    "user_id AND metadata.topic (2%)": {"user_id": "u3", "metadata.topic": "health"},
    "user_id AND metadata.topic AND metadata.day (0.2%)": {
        "user_id": "u3", "metadata.topic": "health", "metadata.day": {"lt": 3}},
}


async def load(database: Any, n: int, seed: int) -> uuid.UUID:
    rng = np.random.default_rng(seed)
    project_id = uuid7()
    async with database.session_scope() as session:
        session.add(Project(id=project_id, name="bench"))
    async with database.engine.begin() as connection:
        await connection.exec_driver_sql("DROP INDEX ix_memories_embedding_hnsw")
    table = cast(sa.Table, Memory.__table__)
    for start in range(0, n, 2000):
        size = min(2000, n - start)
        vectors = rng.normal(size=(size, 384)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        users = rng.integers(0, USERS, size)
        topics = rng.integers(0, len(TOPICS), size)
        days = rng.integers(0, 30, size)
        rows = [{"id": uuid7(), "project_id": project_id, "user_id": f"u{users[i]}",
                 "text": f"memory {start + i}", "content_hash": uuid.uuid4().hex,
                 "metadata": {"topic": TOPICS[topics[i]], "day": int(days[i])},
                 "embedding": vectors[i].tolist()} for i in range(size)]
        async with database.session_scope() as session:
            await session.execute(sa.insert(table), rows)
    started = time.perf_counter()
    async with database.engine.begin() as connection:
        await connection.exec_driver_sql("SET maintenance_work_mem = '1GB'")
        await connection.exec_driver_sql(
            "CREATE INDEX ix_memories_embedding_hnsw ON memories USING hnsw "
            "(embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)")
    progress(f"HNSW index over {n} rows built in {time.perf_counter() - started:.1f} s")
    async with database.engine.connect() as connection:
        connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
        await connection.exec_driver_sql("VACUUM ANALYZE memories")
    return project_id


async def time_filter(database: Any, project_id: uuid.UUID, tree: Filter | None,
                      queries: np.ndarray, top_k: int) -> dict[str, Any]:
    latencies, hits = [], []
    for query in queries:
        async with database.session_scope() as session:
            started = time.perf_counter()
            rows = await repository.nearest(session, project_id, query.tolist(), tree, top_k,
                                            None)
            latencies.append((time.perf_counter() - started) * 1000)
            hits.append(len(rows))
    latencies = sorted(latencies[3:])  # the first few warm caches
    return {"p50_ms": round(statistics.median(latencies), 2),
            "p95_ms": round(latencies[int(0.95 * (len(latencies) - 1))], 2),
            "mean_hits": round(statistics.mean(hits), 2)}


async def run(args: argparse.Namespace, home: Path) -> dict[str, Any]:
    settings = Settings(data_dir=home / "data", db=DatabaseSettings())
    database = await open_database(settings, migrate_schema=True)
    try:
        progress(f"loading {args.n} rows")
        project_id = await load(database, args.n, args.seed)
        rng = np.random.default_rng(args.seed + 1)
        queries = rng.normal(size=(args.queries + 3, 384)).astype(np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        results: dict[str, Any] = {}
        ours = repository.MAX_SCAN_TUPLES
        for name, raw in FILTERS.items():
            tree = parse_filters(raw)
            entry: dict[str, Any] = {}
            for label, budget in (("pgvector_default", PGVECTOR_DEFAULT_MAX_SCAN_TUPLES),
                                  ("anamnesis", ours)):
                repository.MAX_SCAN_TUPLES = budget
                entry[label] = await time_filter(database, project_id, tree, queries,
                                                 args.top_k)
            repository.MAX_SCAN_TUPLES = ours
            entry["p50_ratio_ours_vs_default"] = round(
                entry["anamnesis"]["p50_ms"] / entry["pgvector_default"]["p50_ms"], 3)
            results[name] = entry
            progress(f"{name}: {entry}")
    finally:
        await database.aclose()
    return {"benchmark": "filtered_search", "machine": machine_info(), "rows": args.n,
            "queries": args.queries, "top_k": args.top_k,
            "max_scan_tuples": {"pgvector_default": PGVECTOR_DEFAULT_MAX_SCAN_TUPLES,
                                "anamnesis": repository.MAX_SCAN_TUPLES},
            "filters": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=50_000, help="rows to load")
    parser.add_argument("--queries", type=int, default=40, help="queries per filter and variant")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="anamnesis-bench-"))
    home.chmod(0o755)  # the bundled Postgres runs as another user when we are root
    try:
        report = asyncio.run(run(args, home))
    finally:
        shutil.rmtree(home, ignore_errors=True)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
