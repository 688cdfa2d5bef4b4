"""Search latency over HTTP, the in-process FAISS index beside the pgvector path, one run.

``bench.http_load``'s sizes are loaded once, through a server with the first ``--index``
(``memory``: FAISS + BM25 in the API process; ``postgres``: pgvector's HNSW + Postgres
full-text), then the server is restarted on the same data with each ``--index`` in turn and
searched (sequential and concurrent, plain and filtered; the server's RSS; the server's own
steps, the query embedding among them, from ``Server-Timing``; time from add to searchable).
A last restart times the memory index's load from its snapshot (``index_ready``, from the
server log: each start's source, seconds, memories). With ``--embedding-backend`` given twice
(``onnx``, ``torch``) every index runs on each backend in turn, on the same data, so the
query embedding's two backends are compared in one run. ``side_by_side`` puts the two
indexes' medians (or, with two backends, the two backends' per index) next to each other.
Prints JSON on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import re
import time
from typing import Any

import httpx

from bench.http_load import parse_args as http_load_args
from bench.http_load import run_size
from bench.managed_server import (
    ManagedServer,
    emit_report,
    machine_info,
    progress,
    rss_mb,
    set_progress_label,
)

INDEX_READY = re.compile(r"memory index ready from (\w+) in ([\d.]+)s: (\d+) memories, "
                         r"(\w+) index")
VARIANTS = ("sequential", "concurrent", "concurrent_wide", "filtered_sequential",
            "filtered_concurrent")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    argv = list(argv or [])
    indexes: list[str] = []
    backends: list[str] = []
    rest = []
    iterator = iter(argv)
    for item in iterator:
        for flag, into in (("--index", indexes), ("--embedding-backend", backends)):
            if item == flag:
                into.append(next(iterator))
                break
            if item.startswith(flag + "="):
                into.append(item.split("=", 1)[1])
                break
        else:
            rest.append(item)
    args = http_load_args(rest)
    if args.base_url:
        raise SystemExit("bench.latency starts its own servers; use bench.http_load for a "
                         "running one")
    args.indexes = indexes or ["memory", "postgres"]
    if any(index not in ("memory", "postgres") for index in args.indexes):
        raise SystemExit("--index is memory or postgres")
    if any(backend not in ("auto", "onnx", "torch") for backend in backends):
        raise SystemExit("--embedding-backend is auto, onnx or torch")
    args.backends = backends
    return args


def configurations(args: argparse.Namespace) -> list[tuple[str, str, str | None]]:
    """(name, index, embedding backend) in the order they run; named by the index alone
    unless several backends are compared."""
    backends: list[str | None] = list(args.backends) or [None]
    return [(index if len(backends) == 1 else f"{index}/{backend}", index, backend)
            for backend in backends for index in args.indexes]


def index_lines(log: str) -> list[dict[str, Any]]:
    return [{"source": m[1], "seconds": float(m[2]), "memories": int(m[3]), "kind": m[4]}
            for m in INDEX_READY.finditer(log)]


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Loads every size once, through a server on the first ``--index``; then, for each
    index, restarts the server on the same data with that index and searches."""
    server = ManagedServer(args.startup_timeout, args.keep_data, query_cache=args.query_cache)
    results: dict[str, Any] = {}
    keys: list[str] = []
    tags = [f"s{number}" for number in range(len(args.n))]
    try:
        for position, (name, index, backend) in enumerate(configurations(args)):
            server.env["ANAMNESIS_SEARCH__INDEX"] = index
            if backend is not None:
                server.env["ANAMNESIS_EMBEDDING__BACKEND"] = backend
            if position == 0:
                server.start()
            else:
                progress(f"{name}: restarting on the same data")
                server.restart()
            args.base_url = server.base_url
            ready = httpx.get(f"{server.base_url}/ready", timeout=10).json()
            result: dict[str, Any] = {"index": index,
                                      "embedding_backend": ready.get("embedding_backend"),
                                      "startup_s": server.startup_s,
                                      "rss_mb_at_ready": rss_mb(server.pid), "runs": []}
            for number, n in enumerate(args.n):
                if position == 0:
                    keys.append(server.create_key(f"bench-{n}"))
                result["runs"].append(asyncio.run(run_size(
                    n, keys[number], args, server.pid, trust_env=False,
                    seed=args.seed + 1000 * number, tag=tags[number], loaded=position > 0)))
            results[name] = result
        progress("restarting once more to time the memory index's load from its snapshot")
        server.env["ANAMNESIS_SEARCH__INDEX"] = "memory"
        first_backend = configurations(args)[0][2]
        if first_backend is not None:  # and a start with the ONNX export already made
            server.env["ANAMNESIS_EMBEDDING__BACKEND"] = first_backend
        server.restart()
        results["index_ready"] = index_lines(server.log_tail(10_000_000))
        results["restart_startup_s"] = server.startup_s
        results["restart_rss_mb_at_ready"] = rss_mb(server.pid)
    finally:
        server.stop()
        args.base_url = None
    return results


def side_by_side(results: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    """The memory index beside pgvector; with two backends, the first beside the second on
    each index."""
    if len(args.backends) >= 2:
        first, second = args.backends[:2]
        pairs = [(f"{index}/{first}", f"{index}/{second}", first, second, index)
                 for index in args.indexes]
    else:
        pairs = [("memory", "postgres", "memory", "postgres", None)]
    rows: list[dict[str, Any]] = []
    for left, right, a_name, b_name, index in pairs:
        if not {left, right} <= set(results):
            continue
        for ours, theirs in zip(results[left]["runs"], results[right]["runs"], strict=True):
            for variant in VARIANTS:
                a, b = ours["search"][variant], theirs["search"][variant]
                rows.append({
                    **({"index": index} if index else {}), "n": ours["n"], "variant": variant,
                    f"{a_name}_p50_ms": a["p50_ms"], f"{b_name}_p50_ms": b["p50_ms"],
                    f"{a_name}_p95_ms": a["p95_ms"], f"{b_name}_p95_ms": b["p95_ms"],
                    f"{a_name}_qps": a["qps"], f"{b_name}_qps": b["qps"],
                    f"{a_name}_embed_p50_ms": a.get("server_steps_p50_ms", {}).get("embed"),
                    f"{b_name}_embed_p50_ms": b.get("server_steps_p50_ms", {}).get("embed"),
                    f"p50_ratio_{a_name}_over_{b_name}": round(a["p50_ms"] / b["p50_ms"], 3)
                    if a["p50_ms"] and b["p50_ms"] else None})
    return rows


def main(argv: list[str] | None = None) -> int:
    set_progress_label("latency")
    import sys

    args = parse_args(argv if argv is not None else sys.argv[1:])
    started = time.perf_counter()
    report: dict[str, Any] = {
        "benchmark": "latency",
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "config": {"sizes": args.n, "indexes": args.indexes,
                   "embedding_backends": args.backends or None,
                   "embed_window_ms": os.environ.get("ANAMNESIS_SEARCH__EMBED_WINDOW_MS"),
                   "batch": args.batch,
                   "queries": args.queries, "concurrency": args.concurrency,
                   "wide_concurrency": args.wide_concurrency,
                   "load_concurrency": args.load_concurrency, "seed": args.seed, "top_k": 10,
                   "query_cache": args.query_cache},
        "indexes": {},
    }
    measured = measure(args)
    report["index_ready"] = measured.pop("index_ready")
    report["restart_startup_s"] = measured.pop("restart_startup_s")
    report["restart_rss_mb_at_ready"] = measured.pop("restart_rss_mb_at_ready")
    report["indexes"] = measured
    report["side_by_side"] = side_by_side(measured, args)
    report["duration_s"] = round(time.perf_counter() - started, 1)
    emit_report(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
