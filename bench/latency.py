"""Search latency over HTTP, the in-process FAISS index beside the pgvector path, one run.

``bench.http_load``'s sizes are loaded once, through a server with the first ``--index``
(``memory``: FAISS + BM25 in the API process; ``postgres``: pgvector's HNSW + Postgres
full-text), then the server is restarted on the same data with each ``--index`` in turn and
searched (sequential and concurrent, plain and filtered; the server's RSS; the server's own
steps, the query embedding among them, from ``Server-Timing``; time from add to searchable).
A last restart times the memory index's load from its snapshot (``index_ready``, from the
server log: each start's source, seconds, memories). ``side_by_side`` puts the two
configurations' medians next to each other.
Prints JSON on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import re
import time
from typing import Any

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
    indexes = []
    rest = []
    iterator = iter(argv)
    for item in iterator:
        if item == "--index":
            indexes.append(next(iterator))
        elif item.startswith("--index="):
            indexes.append(item.split("=", 1)[1])
        else:
            rest.append(item)
    args = http_load_args(rest)
    if args.base_url:
        raise SystemExit("bench.latency starts its own servers; use bench.http_load for a "
                         "running one")
    args.indexes = indexes or ["memory", "postgres"]
    if any(index not in ("memory", "postgres") for index in args.indexes):
        raise SystemExit("--index is memory or postgres")
    return args


def index_lines(log: str) -> list[dict[str, Any]]:
    return [{"source": m[1], "seconds": float(m[2]), "memories": int(m[3]), "kind": m[4]}
            for m in INDEX_READY.finditer(log)]


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Loads every size once, through a server on the first ``--index``; then, for each
    index, restarts the server on the same data with that index and searches."""
    first = args.indexes[0]
    server = ManagedServer(args.startup_timeout, args.keep_data,
                           env={"ANAMNESIS_SEARCH__INDEX": first},
                           query_cache=args.query_cache)
    results: dict[str, Any] = {}
    keys: list[str] = []
    tags = [f"s{number}" for number in range(len(args.n))]
    try:
        for position, index in enumerate(args.indexes):
            server.env["ANAMNESIS_SEARCH__INDEX"] = index
            if position == 0:
                server.start()
            else:
                progress(f"{index}: restarting on the same data")
                server.restart()
            args.base_url = server.base_url
            result: dict[str, Any] = {"index": index, "startup_s": server.startup_s,
                                      "rss_mb_at_ready": rss_mb(server.pid), "runs": []}
            for number, n in enumerate(args.n):
                if position == 0:
                    keys.append(server.create_key(f"bench-{n}"))
                result["runs"].append(asyncio.run(run_size(
                    n, keys[number], args, server.pid, trust_env=False,
                    seed=args.seed + 1000 * number, tag=tags[number], loaded=position > 0)))
            results[index] = result
        progress("restarting once more to time the memory index's load from its snapshot")
        server.env["ANAMNESIS_SEARCH__INDEX"] = "memory"
        server.restart()
        results["index_ready"] = index_lines(server.log_tail(10_000_000))
        results["restart_startup_s"] = server.startup_s
    finally:
        server.stop()
        args.base_url = None
    return results


def side_by_side(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if not {"memory", "postgres"} <= set(results):
        return rows
    for ours, theirs in zip(results["memory"]["runs"], results["postgres"]["runs"],
                            strict=True):
        for variant in VARIANTS:
            a, b = ours["search"][variant], theirs["search"][variant]
            rows.append({
                "n": ours["n"], "variant": variant,
                "memory_p50_ms": a["p50_ms"], "postgres_p50_ms": b["p50_ms"],
                "memory_p95_ms": a["p95_ms"], "postgres_p95_ms": b["p95_ms"],
                "memory_qps": a["qps"], "postgres_qps": b["qps"],
                "p50_ratio_memory_over_postgres": round(a["p50_ms"] / b["p50_ms"], 3)
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
        "config": {"sizes": args.n, "indexes": args.indexes, "batch": args.batch,
                   "queries": args.queries, "concurrency": args.concurrency,
                   "wide_concurrency": args.wide_concurrency,
                   "load_concurrency": args.load_concurrency, "seed": args.seed, "top_k": 10,
                   "query_cache": args.query_cache},
        "indexes": {},
    }
    measured = measure(args)
    report["index_ready"] = measured.pop("index_ready")
    report["restart_startup_s"] = measured.pop("restart_startup_s")
    report["indexes"] = measured
    report["side_by_side"] = side_by_side(measured)
    report["duration_s"] = round(time.perf_counter() - started, 1)
    emit_report(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
