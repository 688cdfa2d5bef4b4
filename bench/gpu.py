"""The service's own query path on a GPU (or the CPU): text in, top 10 out, one short run.

What runs is the project's code, not a stand-in: the embedder the API uses
(``app.embeddings.SentenceTransformerEmbedder``, its batching worker included) and the
index's device copy (``app.index.device``: ``DeviceVectors`` fed by appends and removals,
filters as masks, ``Batcher`` micro-batches; ``--backend faiss`` scans with
``app.index.vectors.FaissKernel`` when faiss is installed). Neither imports the web or
database stack, so this runs where only numpy, torch and sentence-transformers are.

In one process:

1. load the model (``--model``: a sentence-transformers folder; default the bundled MiniLM);
2. the corpus: ``--n`` synthetic memories (``bench.synthetic``) embedded in batches
   (``--corpus random``: random unit vectors instead, quicker), appended to the device copy in
   the index's catch-up batches, then 1% removed (dead slots);
3. single queries, one at a time: question text → embed → scan (through the ``Batcher``, as
   a search does) → top 10, over every memory and scoped to one of ``--users`` users (their
   slots as the mask: what the slot table hands the index for a user's search);
4. micro-batches: ``--batches`` clients at once, sharing forward passes and scans;
5. the scan alone, queries already embedded, per batch size;
6. exactness: each top 10 against an fp32 brute force over the live rows.

Prints JSON on stdout (progress on stderr).

    python -m bench.gpu --n 20000 --device cpu                  # here: a few minutes on 2 cores
    python -m bench.gpu --pack-model bench/models/minilm-fp16   # the model, small enough to carry
    python -m bench.gpu --model bench/models/minilm-fp16 --n 1000000 --device cuda --out gpu.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from app.embeddings import SentenceTransformerEmbedder
from app.embeddings_torch import TorchEncoder
from app.index.device import Batcher, DeviceVectors, Kernel, resolve_device
from bench.managed_server import machine_info
from bench.synthetic import TOPICS, memory_text, query_text

K = 10
CATCH_UP_BATCH = 5_000  # rows per append: what one catch-up round of the index applies
DEAD_SHARE = 0.01
Array = npt.NDArray[Any]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="memories (default 1M)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--backend", choices=["torch", "faiss"], default="torch",
                        help="the scan's kernel (faiss: needs faiss, with GPU support on a GPU)")
    parser.add_argument("--model", help="a sentence-transformers folder (default: the bundled "
                        "all-MiniLM-L6-v2)")
    parser.add_argument("--half-model", action="store_true",
                        help="run the model in fp16 (the service runs it in fp32)")
    parser.add_argument("--corpus", choices=["embed", "random"], default="embed")
    parser.add_argument("--embed-batch", type=int, default=None,
                        help="texts per forward pass for the corpus (default 256 cpu, 1024 gpu)")
    parser.add_argument("--users", type=int, default=10, help="users the memories belong to")
    parser.add_argument("--queries", type=int, default=200, help="single queries per variant")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument("--window-ms", type=float, default=1.0,
                        help="the Batcher's window (the service's search.batch_window_ms)")
    parser.add_argument("--exact-checks", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--pack-model", type=Path, metavar="DIR",
                        help="save the model in fp16 to DIR (to carry to a GPU box) and exit")
    return parser.parse_args(argv)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def at(share: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))], 3)

    return {"p50_ms": at(0.5), "p95_ms": at(0.95), "mean_ms": round(statistics.mean(values), 3)}


def kernel_for(backend: str) -> Kernel | None:
    if backend == "torch":
        return None
    from app.index.vectors import FaissKernel  # imports faiss: only asked for here

    return FaissKernel()


async def single_queries(embedder: SentenceTransformerEmbedder, device: DeviceVectors,
                         batcher: Batcher, texts: list[str],
                         allowed: Array | None) -> dict[str, Any]:
    totals, embeds, searches = [], [], []
    for text in texts:
        began = time.perf_counter()
        vector = np.asarray((await embedder.embed([text]))[0], dtype=np.float32)
        embedded = time.perf_counter()
        slots, _ = await batcher(device, vector, K, allowed)
        done = time.perf_counter()
        assert len(slots) == K
        totals.append((done - began) * 1000)
        embeds.append((embedded - began) * 1000)
        searches.append((done - embedded) * 1000)
    return {**percentiles(totals), "embed": percentiles(embeds),
            "search": percentiles(searches), "queries": len(texts)}


async def micro_batches(embedder: SentenceTransformerEmbedder, device: DeviceVectors,
                        window_s: float, texts: list[str], clients: int,
                        allowed: Array, rounds: int) -> dict[str, Any]:
    """Rounds of ``clients`` searches at once, each text → embed → scan → top 10."""
    batcher = Batcher(window_s)

    async def one(text: str, mask: Array | None) -> None:
        vector = np.asarray((await embedder.embed([text]))[0], dtype=np.float32)
        slots, _ = await batcher(device, vector, K, mask)
        assert len(slots) == K

    walls = []
    for index in range(rounds):
        chosen = [texts[(index * clients + c) % len(texts)] for c in range(clients)]
        began = time.perf_counter()
        # Half the clients search everything, half one user's memories: masks differ.
        await asyncio.gather(*(one(text, None if c % 2 else allowed)
                               for c, text in enumerate(chosen)))
        walls.append((time.perf_counter() - began) * 1000)
    return {"clients": clients, "rounds": rounds, "round": percentiles(walls),
            "qps": round(clients * rounds / (sum(walls) / 1000), 1),
            "scans_per_round": round(batcher.batches / rounds, 2)}


def scan_only(device: DeviceVectors, vectors: Array,
              batch: int, allowed: Array | None, repeats: int) -> dict[str, float]:
    queries = vectors[:batch]
    masks = [allowed] * batch
    for _ in range(3):
        device.search_many(queries, K, masks)
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        device.search_many(queries, K, masks)  # returns host arrays: the device is synced
        times.append((time.perf_counter() - began) * 1000)
    return {"median_ms": round(statistics.median(times), 4), "min_ms": round(min(times), 4)}


def recall(device: DeviceVectors, corpus: Array, live: Array,
           queries: Array, allowed: Array | None) -> float:
    """Mean share of the fp32 brute-force top 10 (over the live, allowed rows) found."""
    among = live if allowed is None else np.intersect1d(live, allowed)
    found = device.search_many(queries, K, [allowed] * len(queries))
    shares = []
    for query, (slots, _) in zip(queries, found, strict=True):
        scores = (corpus @ query)[among]  # (not corpus[among]: a copy of it per query)
        exact = among[np.argsort(-scores, kind="stable")[:K]]
        shares.append(len(set(exact.tolist()) & set(slots.tolist())) / K)
    return round(float(np.mean(shares)), 4)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    began = time.perf_counter()
    device_name = resolve_device(args.device)
    models = Path(tempfile.mkdtemp(prefix="bench-gpu-models-"))
    embedder = SentenceTransformerEmbedder.open(args.model, models, device=device_name,
                                                batch_size=args.embed_batch or (
                                                    256 if device_name == "cpu" else 1024))
    assert isinstance(embedder.encoder, TorchEncoder)  # open's default backend
    if args.pack_model:
        embedder.encoder.model.half().save(str(args.pack_model))
        size = sum(f.stat().st_size for f in args.pack_model.rglob("*") if f.is_file())
        print(json.dumps({"packed": str(args.pack_model), "bytes": size}))
        return 0
    embedder.encoder.model.to(torch.float16 if args.half_model else torch.float32)
    report: dict[str, Any] = {
        "benchmark": "gpu", "n": args.n, "k": K, "device": device_name,
        "device_name": torch.cuda.get_device_name(torch.device(device_name))
        if device_name.startswith("cuda") else None, "machine": machine_info(),
        "backend": args.backend, "torch": torch.__version__,
        "model": embedder.model_name, "model_dtype": "fp16" if args.half_model else "fp32",
        "dimension": embedder.dimension, "corpus": args.corpus, "users": args.users,
        "window_ms": args.window_ms, "torch_threads": torch.get_num_threads()}

    rng = random.Random(args.seed)
    log(f"corpus: {args.n} memories ({args.corpus})")
    load: dict[str, Any] = {}
    stamp = time.perf_counter()
    if args.corpus == "embed":
        texts = [memory_text(rng, TOPICS[i % len(TOPICS)]) for i in range(args.n)]
        parts = []
        step = max(embedder.batch_size * 16, 4096)
        for start in range(0, args.n, step):
            parts.append(embedder.encode_array(texts[start:start + step]))
            log(f"  embedded {min(args.n, start + step)}/{args.n}")
        corpus = np.concatenate(parts)
        del texts, parts
        load["embed_s"] = round(time.perf_counter() - stamp, 2)
        load["embed_texts_per_s"] = round(args.n / load["embed_s"], 1)
    else:
        generator = np.random.default_rng(args.seed)
        corpus = generator.standard_normal((args.n, embedder.dimension), dtype=np.float32)
        corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)

    device = DeviceVectors(embedder.dimension, device_name, kernel=kernel_for(args.backend))
    stamp = time.perf_counter()
    for start in range(0, args.n, CATCH_UP_BATCH):
        device.add(corpus[start:start + CATCH_UP_BATCH])
    dead = np.sort(np.random.default_rng(args.seed).choice(
        args.n, int(args.n * DEAD_SHARE), replace=False))
    device.remove(dead)
    if device_name.startswith("cuda"):
        torch.cuda.synchronize()
    load.update({"append_s": round(time.perf_counter() - stamp, 3),
                 "appends": -(-args.n // CATCH_UP_BATCH), "uploaded_rows": device.uploaded_rows,
                 "reallocations": device.reallocations, "dead": len(dead),
                 "scan": device.describe()})
    report["load"] = load
    live = np.setdiff1d(np.arange(args.n), dead)
    # User u holds slots u, u + users, …: the sorted slots the slot table would allow.
    user = np.arange(0, args.n, args.users, dtype=np.int64)
    user = np.setdiff1d(user, dead)
    report["scoped_allowed"] = len(user)

    questions = [query_text(rng) for _ in range(max(args.queries, *args.batches))]
    log("single queries")
    asyncio.run(run_queries(report, embedder, device, args, questions, user))

    vectors = embedder.encode_array(questions[:max([*args.batches, args.exact_checks])])
    repeats = 50 if device_name.startswith("cuda") else 10
    report["scan_only"] = [
        {"batch": batch, "unfiltered": scan_only(device, vectors, batch, None, repeats),
         "scoped": scan_only(device, vectors, batch, user, repeats)}
        for batch in args.batches if batch <= len(vectors)]
    checks = vectors[:args.exact_checks]
    report["recall_at_10_vs_fp32_exact"] = {
        "unfiltered": recall(device, corpus, live, checks, None),
        "scoped": recall(device, corpus, live, checks, user)}
    report["wall_s"] = round(time.perf_counter() - began, 1)
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


async def run_queries(report: dict[str, Any], embedder: SentenceTransformerEmbedder,
                      device: DeviceVectors, args: argparse.Namespace, questions: list[str],
                      user: Array) -> None:
    window = args.window_ms / 1000
    batcher = Batcher(window)
    await single_queries(embedder, device, batcher, questions[:10], None)  # warm-up
    singles = questions[:args.queries]
    report["single"] = {
        "unfiltered": await single_queries(embedder, device, batcher, singles, None),
        "scoped": await single_queries(embedder, device, batcher, singles, user)}
    log("micro-batches")
    report["micro_batches"] = [await micro_batches(embedder, device, window, questions,
                                                   clients, user,
                                                   max(3, args.queries // clients))
                               for clients in args.batches]
    await embedder.aclose()


if __name__ == "__main__":
    raise SystemExit(main())
