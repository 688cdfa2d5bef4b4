"""The embedding model on each backend, in this process, side by side: one query at a time,
concurrent queries through the service's micro-batcher (``QueryEmbeddings``, with and
without its window), and ingestion batches; plus how far the backends' vectors are apart.

Loads the model through the service's own entry point (``SentenceTransformerEmbedder.load``,
what ``load_embedder`` calls) once per ``--backend``, with the service's thread policy unless
``--threads``, then measures the backends in turn, ``--repeat`` rounds, and reports medians.
Texts are ``bench.http_load``'s synthetic memories and questions. Prints JSON on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from app.config import EmbeddingSettings
from app.embeddings import SentenceTransformerEmbedder
from app.retrieve.query_embeddings import QueryEmbeddings
from bench.managed_server import emit_report, machine_info, progress, set_progress_label
from bench.synthetic import TOPICS, memory_text, query_text


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", action="append", choices=["onnx", "torch"],
                        help="backends to compare (repeatable; default onnx and torch)")
    parser.add_argument("--model", help="embedding.model (default: the bundled MiniLM)")
    parser.add_argument("--threads", type=int, help="embedding.threads (default: the "
                        "service's, half the cores)")
    parser.add_argument("--queries", type=int, default=200, help="single queries timed")
    parser.add_argument("--concurrency", type=int, default=16,
                        help="queries asked at once in the concurrent variants")
    parser.add_argument("--rounds", type=int, default=20, help="concurrent rounds timed")
    parser.add_argument("--window-ms", type=float, default=2.0,
                        help="the micro-batch window of the windowed concurrent variant")
    parser.add_argument("--texts", type=int, default=2048, help="memories embedded in batches")
    parser.add_argument("--batch", type=int, default=64, help="embedding.batch_size")
    parser.add_argument("--models-dir", type=Path,
                        help="where the ONNX export is kept (default: a fresh temporary one, "
                             "so its one-time export is timed as load_s)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds, the backends measured in turn in each (medians reported)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    args.backend = args.backend or ["onnx", "torch"]
    return args


def summary_ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"p50_ms": round(statistics.median(ordered) * 1000, 2),
            "p95_ms": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] * 1000, 2),
            "mean_ms": round(statistics.fmean(ordered) * 1000, 2)}


async def one_at_a_time(embedder: SentenceTransformerEmbedder, questions: list[str],
                        window_s: float) -> dict[str, Any]:
    """Each query asked after the last one's answer: what the window costs a lone search."""
    queries = QueryEmbeddings(embedder, size=0, window_s=window_s)
    times = []
    for text in questions:
        began = time.perf_counter()
        await queries.get(uuid.uuid4(), text)
        times.append(time.perf_counter() - began)
    return {"window_ms": window_s * 1000, "queries": len(times), **summary_ms(times)}


async def concurrent(embedder: SentenceTransformerEmbedder, questions: list[str],
                     clients: int, rounds: int, window_s: float) -> dict[str, Any]:
    """``rounds`` times, ``clients`` queries arriving over about a millisecond."""
    queries = QueryEmbeddings(embedder, size=0, window_s=window_s)
    waits: list[float] = []
    passes = embedder.passes
    started = time.perf_counter()
    for round_number in range(rounds):
        asked = questions[round_number * clients:(round_number + 1) * clients]

        async def one(position: int, text: str) -> None:
            await asyncio.sleep(position * 0.001 / clients)
            began = time.perf_counter()
            await queries.get(uuid.uuid4(), text)
            waits.append(time.perf_counter() - began)

        await asyncio.gather(*(one(i, text) for i, text in enumerate(asked)))
    wall = time.perf_counter() - started
    return {"window_ms": window_s * 1000, "clients": clients, "rounds": rounds,
            "queries_per_s": round(len(waits) / wall, 1),
            "forward_passes": embedder.passes - passes, **summary_ms(waits)}


async def load(backend: str, args: argparse.Namespace,
               models_dir: Path) -> tuple[SentenceTransformerEmbedder, float]:
    progress(f"{backend}: loading")
    settings = EmbeddingSettings(model=args.model, backend=backend, threads=args.threads,
                                 batch_size=args.batch)
    began = time.perf_counter()
    embedder = await asyncio.to_thread(SentenceTransformerEmbedder.load, settings, models_dir)
    return embedder, round(time.perf_counter() - began, 2)


async def one_round(embedder: SentenceTransformerEmbedder, args: argparse.Namespace,
                    questions: list[str], memories: list[str]) -> tuple[dict[str, Any],
                                                                         np.ndarray]:
    for text in questions[:10]:
        await embedder.embed([text])
    result: dict[str, Any] = {}
    windows = (0.0, args.window_ms / 1000)
    result["single_query"] = [await one_at_a_time(embedder, questions[:args.queries], window)
                              for window in windows]
    result["concurrent"] = [
        await concurrent(embedder, questions, args.concurrency, args.rounds, window)
        for window in windows]
    began = time.perf_counter()
    vectors = await embedder.embed(memories)
    result["ingest"] = {"texts": len(memories), "batch_size": args.batch,
                        "texts_per_s": round(len(memories) / (time.perf_counter() - began), 1)}
    return result, np.asarray(vectors, dtype=np.float32)


def medians(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Each number's median over the rounds (the rounds' own numbers kept beside)."""
    def merge(values: list[Any]) -> Any:
        if isinstance(values[0], dict):
            return {key: merge([v[key] for v in values]) for key in values[0]}
        if isinstance(values[0], list):
            return [merge(list(group)) for group in zip(*values, strict=True)]
        return statistics.median(values) if isinstance(values[0], int | float) else values[0]

    return merge(rounds)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Both backends loaded, then measured in turn ``--repeat`` times (A B A B …), so a
    machine whose speed drifts slows both alike; medians of the rounds are reported."""
    rng = random.Random(args.seed)
    need = max(args.queries, args.concurrency * args.rounds)
    questions = [query_text(rng) for _ in range(need)]
    memories = [memory_text(rng, rng.choice(TOPICS)) for _ in range(args.texts)]
    models_dir = args.models_dir or Path(tempfile.mkdtemp(prefix="anamnesis-embedding-"))
    loaded = {backend: await load(backend, args, models_dir) for backend in args.backend}
    rounds: dict[str, list[dict[str, Any]]] = {backend: [] for backend in args.backend}
    vectors: dict[str, np.ndarray] = {}
    for number in range(args.repeat):
        for backend, (embedder, _) in loaded.items():
            progress(f"{backend}: round {number + 1} of {args.repeat}")
            result, vectors[backend] = await one_round(embedder, args, questions, memories)
            rounds[backend].append(result)
    backends: dict[str, Any] = {}
    for backend, (embedder, load_s) in loaded.items():
        backends[backend] = {"backend": embedder.backend, "model": embedder.model_name,
                             "load_s": load_s, **medians(rounds[backend]),
                             "rounds": rounds[backend]}
        await embedder.aclose()
    report: dict[str, Any] = {"backends": backends}
    if {"onnx", "torch"} <= set(vectors):
        cosines = (vectors["onnx"] * vectors["torch"]).sum(axis=1)
        report["agreement"] = {"texts": len(memories), "min_cosine": round(float(
            cosines.min()), 6), "mean_cosine": round(float(cosines.mean()), 6)}
        onnx, torch = backends["onnx"], backends["torch"]
        single = [b["single_query"][0]["p50_ms"] for b in (onnx, torch)]
        report["side_by_side"] = {
            "single_query_p50_ms": single,
            "single_query_windowed_p50_ms": [b["single_query"][1]["p50_ms"]
                                             for b in (onnx, torch)],
            "concurrent_queries_per_s": [[c["queries_per_s"] for c in b["concurrent"]]
                                         for b in (onnx, torch)],
            "ingest_texts_per_s": [onnx["ingest"]["texts_per_s"],
                                   torch["ingest"]["texts_per_s"]],
            "speedup_single_query": round(single[1] / single[0], 2),
            "speedup_ingest": round(onnx["ingest"]["texts_per_s"]
                                    / torch["ingest"]["texts_per_s"], 2),
            "order": "onnx, torch; per backend: without, with the window"}
    return report


def main(argv: list[str] | None = None) -> int:
    set_progress_label("embedding")
    args = parse_args(argv if argv is not None else sys.argv[1:])
    started = time.perf_counter()
    report: dict[str, Any] = {
        "benchmark": "embedding",
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "config": {key: (str(value) if isinstance(value, Path) else value)
                   for key, value in vars(args).items() if key != "out"},
    }
    report.update(asyncio.run(run(args)))
    report["duration_s"] = round(time.perf_counter() - started, 1)
    emit_report(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
