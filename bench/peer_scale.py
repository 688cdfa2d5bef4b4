"""Anamnesis beside Mem0 OSS at a million memories, in one run on one machine.

* **Anamnesis**: a server (embedded defaults, fresh data directory) and ``anamnesis import``
  of ``bench.transfer``'s export-shaped file of N memories with their vectors (timed: the
  bulk load), then until the server's in-process index has read them all (``/metrics``),
  its RSS, scoped searches over HTTP (sequential, then ``--concurrency`` clients), a restart
  (``/ready`` time and RSS at N) and the sequential searches again.
* **Mem0** 2.x in this process, its FAISS vector store, populated through the store's own
  batch ``insert`` with the same ids, texts, users and vectors (its ``add`` rewrites the
  whole index per call), then the same questions through ``Memory.search`` with the same
  user filter (its huggingface embedder on the same all-MiniLM-L6-v2 files).

The vectors are random unit vectors (``bench.transfer``): their meaning does not change either
side's speed, and both sides hold the same ones; the questions are embedded for real by each.
``mean_hits`` shows how many of the ten asked for each returns. Prints JSON.

    .venv/bin/pip install mem0ai   # the peer; not a project dependency
    .venv/bin/python -m bench.peer_scale --n 1000000 --out bench/results/peer_1m.json
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.consolidation_peers import mem0_installed
from bench.managed_server import (
    ManagedServer,
    emit_report,
    machine_info,
    progress,
    rss_mb,
    set_progress_label,
)
from bench.peer import K, mem0, mem0_search, mem0_version
from bench.synthetic import query_text
from bench.timed_requests import latency_summary
from bench.transfer import USERS, run_cli, write_export

PROJECT = "scale"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--catch-up-timeout", type=float, default=3600.0)
    parser.add_argument("--startup-timeout", type=float, default=900.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if not mem0_installed():
        parser.error("mem0ai is not installed (pip install mem0ai): it is the peer")
    return args


def metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


async def caught_up(client: httpx.AsyncClient, n: int, timeout_s: float) -> float:
    """Seconds until the server's index holds ``n`` memories and lags no change."""
    began = time.perf_counter()
    while time.perf_counter() - began < timeout_s:
        text = (await client.get("/metrics")).text
        held, lag = metric(text, "anamnesis_index_memories"), metric(
            text, "anamnesis_index_lag_changes")
        if held is not None and held >= n and lag == 0:
            return round(time.perf_counter() - began, 1)
        await asyncio.sleep(2)
    raise RuntimeError(f"the server's index did not read {n} memories in {timeout_s}s")


async def ours_search(client: httpx.AsyncClient, queries: list[tuple[str, str]],
                      clients: int) -> dict[str, Any]:
    times: list[float] = []
    hits: list[int] = []
    steps: dict[str, list[float]] = {}
    todo = list(queries)

    async def worker() -> None:
        while todo:
            text, user = todo.pop()
            began = time.perf_counter()
            response = await client.post("/v1/memories/search",
                                         json={"query": text, "user_id": user, "top_k": K})
            times.append(time.perf_counter() - began)
            response.raise_for_status()
            hits.append(len(response.json()["results"]))
            for part in response.headers.get("server-timing", "").split(","):
                name, _, duration = part.strip().partition(";dur=")
                if duration:
                    steps.setdefault(name, []).append(float(duration))

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    wall = time.perf_counter() - began
    return {"clients": clients, **latency_summary(times), "qps": round(len(times) / wall, 1),
            "mean_hits": round(sum(hits) / len(hits), 2),
            # The server's own steps (Server-Timing), median of each.
            "server_steps_p50_ms": {name: round(statistics.median(values), 2)
                                    for name, values in steps.items()}}


async def anamnesis_side(server: ManagedServer, path: Path, args: argparse.Namespace,
                         queries: list[tuple[str, str]]) -> dict[str, Any]:
    key = server.create_key(PROJECT)
    progress(f"anamnesis import of {args.n} memories with vectors")
    wall, out = await asyncio.to_thread(run_cli, server, "import", str(path), "--project",
                                        PROJECT, "--json")
    receipt = json.loads(out)
    result: dict[str, Any] = {"import": {
        "wall_s": round(wall, 1), "check_s": receipt["check_s"], "write_s": receipt["write_s"],
        "index_s": receipt["index_s"], "memories_per_s_wall": round(args.n / wall, 1),
        "inserted": receipt["records"]["memory"]["inserted"]}}
    async with httpx.AsyncClient(base_url=server.base_url, trust_env=False, timeout=600.0,
                                 headers={"Authorization": f"Bearer {key}"}) as client:
        progress("waiting for the server's index to read every memory")
        result["index_caught_up_after_import_s"] = await caught_up(client, args.n,
                                                                   args.catch_up_timeout)
        result["rss_mb_loaded"] = rss_mb(server.pid)
        await ours_search(client, queries[:10], 1)  # warm-up
        result["search_sequential"] = await ours_search(client, queries, 1)
        result["search_concurrent"] = await ours_search(client, queries, args.concurrency)
        progress(f"search p50 {result['search_sequential']['p50_ms']} ms; restarting")
        await asyncio.to_thread(server.restart)
        result["restart_ready_s"] = server.startup_s
        result["rss_mb_at_ready"] = rss_mb(server.pid)
        await ours_search(client, queries[:10], 1)
        result["search_sequential_after_restart"] = await ours_search(client, queries, 1)
    return result


def memories_of(path: Path) -> tuple[list[str], list[dict[str, Any]], np.ndarray]:
    """Ids, Mem0 payloads and vectors of the file's memories, as Mem0 stores an add."""
    ids, payloads, vectors = [], [], []
    with path.open("rb") as lines:
        for raw in lines:
            if not raw.startswith(b'{"record":"memory"'):
                continue
            memory = json.loads(raw)
            ids.append(memory["id"])
            payloads.append({"data": memory["text"], "user_id": memory["user_id"],
                             "hash": hashlib.md5(memory["text"].encode()).hexdigest(),
                             "created_at": memory["created_at"]})
            vectors.append(np.frombuffer(base64.b64decode(memory["embedding"]), dtype="<f4"))
    return ids, payloads, np.vstack(vectors)


def mem0_side(path: Path, workdir: Path, queries: list[tuple[str, str]]) -> dict[str, Any]:
    progress("mem0: reading the same memories")
    ids, payloads, vectors = memories_of(path)
    memory = mem0(workdir)
    progress(f"mem0: inserting {len(ids)} vectors through its store's batch insert")
    began = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        memory.vector_store.insert(vectors=vectors, payloads=payloads, ids=ids)
    result: dict[str, Any] = {"insert_s": round(time.perf_counter() - began, 1)}
    del vectors, payloads
    times, hits = [], []
    with contextlib.redirect_stdout(sys.stderr):
        for text, user in queries[:10]:
            mem0_search(memory, text, user)
        for text, user in queries:
            began = time.perf_counter()
            found = mem0_search(memory, text, user)
            times.append(time.perf_counter() - began)
            hits.append(len(found["results"] if isinstance(found, dict) else found))
    result["search_sequential"] = {"clients": 1, **latency_summary(times),
                                   "mean_hits": round(sum(hits) / len(hits), 2)}
    return result


def main(argv: list[str] | None = None) -> int:
    set_progress_label("peer_scale")
    args = parse_args(argv)
    rng = random.Random(args.seed)
    queries = [(query_text(rng), rng.choice(USERS)) for _ in range(args.queries)]
    report: dict[str, Any] = {
        "benchmark": "peer_scale",
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "config": {"n": args.n, "users": len(USERS), "queries": args.queries, "top_k": K,
                   "concurrency": args.concurrency, "anamnesis_query_cache": False,
                   "vectors": "random unit vectors, the same on both sides"},
        "peer": {"name": "mem0ai", "version": mem0_version(),
                 "setup": "Memory.from_config, faiss vector store populated by its batch "
                          "insert, huggingface embedder on the same all-MiniLM-L6-v2 files"}}
    server = ManagedServer(args.startup_timeout, False)  # query cache off, as Mem0 has none
    workdir = Path(tempfile.mkdtemp(prefix="anamnesis-bench-scale-"))
    workdir.chmod(0o755)
    try:
        path = workdir / "scale.ndjson"
        progress(f"writing {args.n} memories to {path}")
        report["file"] = write_export(path, args.n, vectors=True, seed=args.seed)
        server.start()
        report["anamnesis"] = asyncio.run(anamnesis_side(server, path, args, queries))
        server.stop()  # Mem0 gets the machine to itself, as Anamnesis had
        report["mem0"] = mem0_side(path, workdir, queries)
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    ours, theirs = report["anamnesis"], report["mem0"]
    report["side_by_side"] = {
        "search_p50_ms": [ours["search_sequential"]["p50_ms"],
                          theirs["search_sequential"]["p50_ms"]],
        "theirs_p50_over_ours": round(theirs["search_sequential"]["p50_ms"]
                                      / ours["search_sequential"]["p50_ms"], 2),
        "mean_hits": [ours["search_sequential"]["mean_hits"],
                      theirs["search_sequential"]["mean_hits"]],
        "load_s": [ours["import"]["wall_s"], theirs["insert_s"]]}
    emit_report(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
