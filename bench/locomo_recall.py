"""LoCoMo retrieval recall without an LLM: every turn a memory, every question a search.

Each conversation of the dev split becomes one user, posted ``infer: false`` two ways
(``--post``, both by default, each to its own user): ``session``, one add per session (its
turns in order), and ``message``, one add per turn, as most agents post; ``observed_at`` the
session's date, per-message metadata ``dia_id``, ``session``, ``speaker``. Either way each
memory's context holds the turn before it (taken from the scope's history). Every question
of categories 1 to 4 then searches its own conversation, once per ranking (``dense``,
``lexical``, ``hybrid``), and counts as hit at k when the top k turns include one of its
evidence turns ("any") or all of them ("all"). Overall and per category, for each server
configuration asked for (``--index memory`` the in-process FAISS + BM25, ``--index postgres``
pgvector + Postgres full-text) and embedding model asked for (``--embedder``), side by side
in one run. Prints JSON on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx

from app.embeddings import DEFAULT_MODEL, MINILM, MPNET, model_identity
from bench.locomo_data import default_data_path, session_time
from bench.managed_server import (
    ManagedServer,
    emit_report,
    machine_info,
    progress,
    set_progress_label,
)
from bench.timed_requests import latency_summary

KS = (1, 5, 10, 20)
CATEGORIES = {1: "multi_hop", 2: "temporal", 3: "open_domain", 4: "single_hop"}
RANKINGS = ("dense", "lexical", "hybrid")
DIMENSIONS = {MINILM: 384, MPNET: 768}
# Measured by the author over the same turns (all-MiniLM-L6-v2, plain BM25).
REFERENCE = {"dense": 0.537, "bm25": 0.567, "rrf_dense_bm25": 0.627}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=default_data_path())
    parser.add_argument("--index", action="append", choices=["memory", "postgres"],
                        help="server configuration(s) to measure (repeatable; default both)")
    parser.add_argument("--base-url", help="measure a running server instead of starting one")
    parser.add_argument("--api-key", default=os.environ.get("ANAMNESIS_API_KEY"))
    parser.add_argument("--post", action="append", choices=["session", "message"],
                        help="how turns are posted: one add per session or per message "
                        "(repeatable; default both)")
    parser.add_argument("--embedder", action="append", metavar="MODEL[=DIM]",
                        help="embedding model(s) to measure, each on its own server "
                        "(repeatable): all-MiniLM-L6-v2 (the default), all-mpnet-base-v2, or "
                        "a model folder with its dimension")
    parser.add_argument("--embedding-backend", action="append", dest="backends",
                        choices=["auto", "onnx", "torch"],
                        help="run each configuration on these embedding backends in turn "
                        "(repeatable; default the server's): the same model's vectors on ONNX "
                        "Runtime and torch, side by side")
    parser.add_argument("--conversations", type=int, default=None,
                        help="only the first N conversations")
    parser.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--startup-timeout", type=float, default=600.0)
    parser.add_argument("--keep-data", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.data is None or not args.data.is_file():
        parser.error("LoCoMo data not found: pass --data PATH/locomo_dev.json")
    if args.base_url and not args.api_key:
        parser.error("--base-url needs --api-key")
    args.indexes = ["given"] if args.base_url else (args.index or ["memory", "postgres"])
    args.post = args.post or ["session", "message"]
    args.embedder = args.embedder or [DEFAULT_MODEL]
    args.backends = args.backends or [None]
    return args


def sessions(sample: dict[str, Any]) -> list[tuple[int, dt.datetime, list[dict[str, Any]]]]:
    conversation = sample["conversation"]
    numbers = sorted(int(key.split("_")[1]) for key in conversation
                     if key.startswith("session_") and key.count("_") == 1)
    return [(n, session_time(conversation[f"session_{n}_date_time"]), conversation[f"session_{n}"])
            for n in numbers]


def message(turn: dict[str, Any], session: int) -> dict[str, Any]:
    text = turn["text"]
    if turn.get("blip_caption"):
        text += f" [shares a photo: {turn['blip_caption']}]"
    return {"role": "user", "content": text, "name": turn["speaker"],
            "metadata": {"dia_id": turn["dia_id"], "session": session,
                         "speaker": turn["speaker"]}}


async def ingest(client: httpx.AsyncClient, samples: list[dict[str, Any]], tag: str,
                 post: str) -> tuple[dict[str, str], dict[str, Any]]:
    """Posts every session, in one add or one add per turn; returns memory id → dia_id and
    the load's numbers."""
    turn_of: dict[str, str] = {}
    began = time.perf_counter()
    turns = adds = 0
    for sample in samples:
        user = f"{sample['sample_id']}-{tag}"
        for number, when, turns_ in sessions(sample):
            batches = [turns_] if post == "session" else [[turn] for turn in turns_]
            for batch in batches:
                body = {"messages": [message(t, number) for t in batch], "user_id": user,
                        "infer": False, "observed_at": when.isoformat(),
                        "metadata": {"source": "locomo",
                                     "session_date": when.date().isoformat()}}
                response = await client.post("/v1/memories", json=body)
                response.raise_for_status()
                adds += 1
                for turn, result in zip(batch, response.json()["results"], strict=True):
                    turn_of.setdefault(result["id"], turn["dia_id"])
            turns += len(turns_)
    wall = time.perf_counter() - began
    return turn_of, {"turns": turns, "adds": adds, "memories": len(turn_of),
                     "wall_s": round(wall, 1), "turns_per_s": round(turns / wall, 1)}


def table(rows: list[tuple[int, dict[int, tuple[bool, bool]]]]) -> dict[str, Any]:
    groups: dict[str, list[dict[int, tuple[bool, bool]]]] = defaultdict(list)
    for category, hits in rows:
        groups["overall"].append(hits)
        groups[CATEGORIES[category]].append(hits)
    return {name: {"questions": len(group),
                   **{f"recall@{k}": {"any": round(sum(h[k][0] for h in group) / len(group), 3),
                                      "all": round(sum(h[k][1] for h in group) / len(group), 3)}
                      for k in KS}}
            for name, group in groups.items()}


async def ask(client: httpx.AsyncClient, samples: list[dict[str, Any]], tag: str,
              turn_of: dict[str, str]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for ranking in RANKINGS:
        rows: list[tuple[int, dict[int, tuple[bool, bool]]]] = []
        latencies: list[float] = []
        for sample in samples:
            user = f"{sample['sample_id']}-{tag}"
            for qa in sample["qa"]:
                if qa.get("category") not in CATEGORIES or not qa.get("evidence"):
                    continue
                began = time.perf_counter()
                response = await client.post("/v1/memories/search", json={
                    "query": qa["question"], "user_id": user, "top_k": max(KS),
                    "ranking": ranking})
                latencies.append(time.perf_counter() - began)
                response.raise_for_status()
                found = [turn_of.get(hit["id"]) for hit in response.json()["results"]]
                evidence = set(qa["evidence"])
                rows.append((qa["category"], {
                    k: (bool(evidence & set(found[:k])), evidence <= set(found[:k]))
                    for k in KS}))
        results[ranking] = {**table(rows), "search_latency": latency_summary(latencies)}
        progress(f"{ranking}: recall@10 any {results[ranking]['overall']['recall@10']['any']}")
    return results


async def measure(base_url: str, api_key: str, samples: list[dict[str, Any]],
                  trust_env: bool, posts: list[str]) -> dict[str, Any]:
    measured: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=base_url, trust_env=trust_env,
                                 headers={"Authorization": f"Bearer {api_key}"},
                                 timeout=httpx.Timeout(120.0, connect=10.0)) as client:
        for post in posts:
            tag = uuid.uuid4().hex[:8]
            turn_of, load = await ingest(client, samples, tag, post)
            progress(f"posted by {post}: {load['turns']} turns in {load['wall_s']}s; asking")
            # one unmeasured search per ranking, so the first measured one is warm
            for ranking in RANKINGS:
                await client.post("/v1/memories/search", json={
                    "query": "warm up", "user_id": f"{samples[0]['sample_id']}-{tag}",
                    "ranking": ranking})
            measured[post] = {"load": load,
                              "rankings": await ask(client, samples, tag, turn_of)}
    return measured


def main(argv: list[str] | None = None) -> int:
    set_progress_label("locomo_recall")
    args = parse_args(argv)
    samples = json.loads(args.data.read_text())[:args.conversations]
    report: dict[str, Any] = {
        "benchmark": "locomo_recall",
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "config": {"data": str(args.data), "conversations": [s["sample_id"] for s in samples],
                   "questions": sum(1 for s in samples for q in s["qa"]
                                    if q.get("category") in CATEGORIES and q.get("evidence")),
                   "ks": KS, "posts": args.post, "server_env": args.server_env,
                   "embedding_backends": [b for b in args.backends if b]},
        "reference_recall@10_any": REFERENCE,
        "indexes": {},
    }
    configurations = [(index, None, None) for index in args.indexes] if args.base_url else [
        (index, model, backend) for model in args.embedder for backend in args.backends
        for index in args.indexes]
    for index, model, backend in configurations:
        began = time.perf_counter()
        ran_on = None
        if index == "given":
            result = asyncio.run(measure(args.base_url, args.api_key, samples, True,
                                         args.post))
        else:
            env = dict(item.split("=", 1) for item in args.server_env)
            env["ANAMNESIS_SEARCH__INDEX"] = index
            if model != DEFAULT_MODEL:
                name, _, dimension = str(model).partition("=")
                env["ANAMNESIS_EMBEDDING__MODEL"] = name
                env["ANAMNESIS_EMBEDDING__DIMENSION"] = dimension or str(DIMENSIONS[name])
                index = f"{index}+{model_identity(name)}"
            if backend is not None:
                env["ANAMNESIS_EMBEDDING__BACKEND"] = backend
                index = f"{index}/{backend}"
            server = ManagedServer(args.startup_timeout, args.keep_data, env=env)
            try:
                server.start()
                ran_on = httpx.get(f"{server.base_url}/ready", timeout=10).json().get(
                    "embedding_backend")
                key = server.create_key(f"locomo-{index}")
                result = asyncio.run(measure(server.base_url, key, samples, False, args.post))
            finally:
                server.stop()
        report["indexes"][index] = {"posts": result, "embedding_backend": ran_on,
                                    "duration_s": round(time.perf_counter() - began, 1)}
    report["summary_recall@10_any"] = {
        index: {post: {ranking: r["rankings"][ranking]["overall"]["recall@10"]["any"]
                       for ranking in RANKINGS} for post, r in found["posts"].items()}
        for index, found in report["indexes"].items()}
    report["summary_search_p50_ms"] = {
        index: {post: {ranking: r["rankings"][ranking]["search_latency"].get("p50_ms")
                       for ranking in RANKINGS} for post, r in found["posts"].items()}
        for index, found in report["indexes"].items()}
    emit_report(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
