"""HTTP load benchmark: add throughput and search latency of a running Anamnesis server.

For each ``--n`` it loads N synthetic memories (``infer=false``) spread over ten users, then
times searches scoped to one user: one client at a time, then ``--concurrency`` clients, each
with and without a metadata filter. With ``--facts-share F`` that share of the memories is
imported as facts (``/v1/import``: a fact needs no model that way), so the default search
ranks both kinds, and one more variant searches the messages alone: what searching both
costs. Prints one JSON document on stdout; progress goes to stderr.

Without ``--base-url`` it starts its own server on a free port with a fresh data directory
(the embedded Postgres), gives every N its own project key, and stops the server at the end.
Run from the repository root: `python -m bench.http_load --n 10000`. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import math
import os
import random
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.managed_server import ManagedServer, emit_report, machine_info, progress, rss_mb
from bench.synthetic import AddRequest, add_requests, query_text
from bench.timed_requests import Tally, latency_summary, run_pool, timed_post

USERS_PER_RUN = 10
WARMUP_QUERIES = 10
FILTER_TOPIC = "food"
async def load(
    client: httpx.AsyncClient, requests: list[AddRequest], in_flight: int
) -> dict[str, Any]:
    tally = Tally()
    events: Counter[str] = Counter()
    accepted = 0

    async def send(request: AddRequest) -> None:
        nonlocal accepted
        payload = await timed_post(client, "/v1/memories", request.body(), tally, expect=201)
        if payload is not None:
            accepted += len(request.texts)
            for result in payload.get("results", []):
                events[str(result.get("event"))] += 1

    wall = await run_pool(requests, in_flight, send)
    return load_report(requests, accepted, events, wall, tally)


async def load_facts(
    client: httpx.AsyncClient, requests: list[AddRequest], in_flight: int
) -> dict[str, Any]:
    """Each request's texts imported as facts, one NDJSON body per request."""
    tally = Tally()
    accepted = 0

    async def send(request: AddRequest) -> None:
        nonlocal accepted
        payload = await timed_post(client, "/v1/import", request.import_body(), tally,
                                   expect=200)
        if payload is not None:
            accepted += payload["records"].get("memory", {}).get("inserted", 0)

    wall = await run_pool(requests, in_flight, send)
    return load_report(requests, accepted, Counter(IMPORTED=accepted), wall, tally)


def load_report(requests: list[AddRequest], accepted: int, events: Counter[str], wall: float,
                tally: Tally) -> dict[str, Any]:
    return {
        "requests": len(requests),
        "messages": sum(len(r.texts) for r in requests),
        "accepted": accepted,
        "events": dict(events),
        "wall_s": round(wall, 3),
        "memories_per_s": round(accepted / wall, 1) if wall else None,
        "request_latency": latency_summary(tally.latencies_s),
        **tally.errors_json(),
    }


@dataclass(frozen=True)
class Query:
    text: str
    user_id: str

    def body(self, filtered: bool, kind: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"query": self.text, "top_k": 10, "user_id": self.user_id}
        filters = ({"metadata.topic": FILTER_TOPIC} if filtered else {}) | (
            {"kind": kind} if kind else {})
        if filters:
            body["filters"] = filters
        return body


async def search(
    client: httpx.AsyncClient, queries: list[Query], clients: int, filtered: bool,
    kind: str | None = None,
) -> dict[str, Any]:
    tally = Tally()
    hits: list[int] = []
    violations = 0
    checked = 0

    async def ask(query: Query) -> None:
        nonlocal violations, checked
        payload = await timed_post(
            client, "/v1/memories/search", query.body(filtered, kind), tally, expect=200
        )
        if payload is None:
            return
        results = payload.get("results", [])
        hits.append(len(results))
        if filtered:
            for result in results:
                metadata = result.get("metadata")
                if isinstance(metadata, dict):
                    checked += 1
                    violations += metadata.get("topic") != FILTER_TOPIC

    wall = await run_pool(queries, clients, ask)
    return {
        "clients": clients,
        "queries": len(queries),
        "filters": queries[0].body(filtered, kind).get("filters") if queries else None,
        "wall_s": round(wall, 3),
        "qps": round(len(tally.latencies_s) / wall, 1) if wall else None,
        **latency_summary(tally.latencies_s),
        # The server's own steps (Server-Timing), median per step: "embed" is the query
        # embedding (~0 when cached: see --query-cache), the rest the index and Postgres.
        "server_steps_p50_ms": tally.server_steps_p50(),
        "mean_hits": round(sum(hits) / len(hits), 2) if hits else None,
        "empty_results": sum(1 for h in hits if h == 0),
        # Hits whose returned metadata contradicts the filter (only counted when returned).
        "filter_violations": violations if filtered and checked else None,
        **tally.errors_json(),
    }


def make_client(
    base_url: str, api_key: str, connections: int, trust_env: bool
) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url,
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=httpx.Timeout(300.0, connect=10.0),
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        trust_env=trust_env,
    )


async def run_size(
    n: int, api_key: str, args: argparse.Namespace, pid: int | None, trust_env: bool, seed: int,
    *, tag: str | None = None, loaded: bool = False,
) -> dict[str, Any]:
    """``loaded``: the same ``tag`` and ``seed`` were loaded before (another server
    configuration on the same data): search only."""
    tag = tag or uuid.uuid4().hex[:8]
    # Requests go to users in turn; a small N has fewer requests than users, and a user
    # without memories would only measure empty searches.
    user_count = min(USERS_PER_RUN, math.ceil(n / args.batch))
    users = [f"bench-{tag}-n{n}-u{i}" for i in range(user_count)]
    requests = add_requests(n, args.batch, users, seed)
    # The facts' requests spread evenly over each user's requests (users take the requests
    # in turn: the j-th of a user is request j * users + u), so every user holds both kinds.
    is_fact = [math.floor((j + 1) * args.facts_share) > math.floor(j * args.facts_share)
               for j in (index // len(users) for index in range(len(requests)))]
    facts = [request for request, fact in zip(requests, is_fact, strict=True) if fact]
    requests = [request for request, fact in zip(requests, is_fact, strict=True) if not fact]
    rng = random.Random(seed + 1)
    queries = [Query(query_text(rng), rng.choice(users)) for _ in range(args.queries)]
    warmup = [Query(query_text(rng), rng.choice(users)) for _ in range(WARMUP_QUERIES)]
    connections = max(args.concurrency, args.wide_concurrency, args.load_concurrency)
    result: dict[str, Any] = {
        "n": n, "users": len(users), "memories_per_user": round(n / len(users), 1),
        "server_rss_mb": {"before_load": await asyncio.to_thread(rss_mb, pid)},
    }
    async with make_client(args.base_url, api_key, connections, trust_env) as client:
        if not loaded:
            progress(f"n={n}: loading {n} memories in {len(requests)} requests")
            result["load"] = await load(client, requests, args.load_concurrency)
            progress(f"n={n}: load {result['load']['memories_per_s']} memories/s, "
                     f"{result['load']['errors']} errors")
            if facts:
                result["load_facts"] = await load_facts(client, facts, args.load_concurrency)
                progress(f"n={n}: facts imported {result['load_facts']['accepted']}, "
                         f"{result['load_facts']['errors']} errors")
        result["server_rss_mb"]["after_load"] = await asyncio.to_thread(rss_mb, pid)
        await search(client, warmup, 1, filtered=False)
        await search(client, warmup, 1, filtered=True)
        result["search"] = {}
        for name, clients, filtered, kind in (
            ("sequential", 1, False, None),
            ("concurrent", args.concurrency, False, None),
            ("concurrent_wide", args.wide_concurrency, False, None),
            ("filtered_sequential", 1, True, None),
            ("filtered_concurrent", args.concurrency, True, None),
            # both kinds (the default search) against the messages alone, on the same data
            *([("sequential_messages_only", 1, False, "message")] if facts else []),
        ):
            result["search"][name] = await search(client, queries, clients, filtered, kind)
            stats = result["search"][name]
            progress(f"n={n}: search {name}: p50 {stats['p50_ms']} ms, "
                     f"p99 {stats['p99_ms']} ms, {stats['qps']} qps, {stats['errors']} errors")
        result["server_rss_mb"]["after_search"] = await asyncio.to_thread(rss_mb, pid)
        result["add_to_searchable"] = await add_to_searchable(client, users[0], tag)
    return result


async def add_to_searchable(client: httpx.AsyncClient, user: str, tag: str,
                            rounds: int = 20) -> dict[str, Any]:
    """From sending an add to the first search that returns the new memory: each round adds
    one memory with a unique word and searches for that word until it is found."""
    waits: list[float] = []
    searches: list[int] = []
    for round_ in range(rounds):
        word = f"zq{tag}r{round_}{uuid.uuid4().hex[:6]}"
        began = time.perf_counter()
        response = await client.post("/v1/memories", json={
            "user_id": user, "infer": False,
            "messages": [{"role": "user", "content": f"The locker code is {word}."}]})
        response.raise_for_status()
        memory_id = response.json()["results"][0]["id"]
        for attempt in range(1, 1000):
            found = await client.post("/v1/memories/search", json={
                "query": word, "user_id": user, "top_k": 10})
            if memory_id in {hit["id"] for hit in found.json()["results"]}:
                waits.append(time.perf_counter() - began)
                searches.append(attempt)
                break
    return {"rounds": rounds, "found": len(waits), **latency_summary(waits),
            "searches_needed_max": max(searches, default=None)}


# -- a server of our own ------------------------------------------------------------------------


# -- entry point --------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Load N memories over HTTP, then time searches; prints JSON on stdout."
    )
    parser.add_argument("--n", type=int, action="append",
                        help="memories to load (repeat for several sizes; default 10000)")
    parser.add_argument("--base-url", help="a running server; without it one is started")
    parser.add_argument("--api-key", default=os.environ.get("ANAMNESIS_API_KEY"),
                        help="key for --base-url (default $ANAMNESIS_API_KEY)")
    parser.add_argument("--server-pid", type=int,
                        help="pid of the --base-url server, to report its RSS")
    parser.add_argument("--batch", type=int, default=50, help="messages per add request")
    parser.add_argument("--load-concurrency", type=int, default=4,
                        help="add requests in flight")
    parser.add_argument("--queries", type=int, default=300, help="searches per variant")
    parser.add_argument("--concurrency", type=int, default=16,
                        help="clients in the concurrent search variants")
    parser.add_argument("--wide-concurrency", type=int, default=64,
                        help="clients in the concurrent_wide variant")
    parser.add_argument("--query-cache", action="store_true",
                        help="keep the started server's query-embedding cache (off by default: "
                             "the questions repeat, and a cached one is not embedded)")
    parser.add_argument("--facts-share", type=float, default=0.0, metavar="F",
                        help="share of the memories imported as facts, the rest posted as "
                             "messages (default 0: messages only)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--startup-timeout", type=float, default=600.0,
                        help="seconds to wait for a started server's /ready")
    parser.add_argument("--keep-data", action="store_true",
                        help="keep the started server's temporary data directory")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    args.n = args.n or [10_000]
    if any(n < 1 for n in args.n):
        parser.error("--n must be positive")
    if not 1 <= args.batch <= 200:
        parser.error("--batch must be 1..200 (the server's per-request message limit)")
    if min(args.queries, args.concurrency, args.wide_concurrency, args.load_concurrency) < 1:
        parser.error("--queries, --concurrency, --wide-concurrency and --load-concurrency "
                     "must be positive")
    if not 0 <= args.facts_share < 1:
        parser.error("--facts-share must be in [0, 1)")
    if args.base_url and not args.api_key:
        parser.error("--base-url needs --api-key (or $ANAMNESIS_API_KEY)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    report: dict[str, Any] = {
        "benchmark": "http_load",
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "config": {
            "sizes": args.n, "batch": args.batch, "load_concurrency": args.load_concurrency,
            "queries": args.queries, "warmup_queries": WARMUP_QUERIES,
            "concurrency": args.concurrency, "wide_concurrency": args.wide_concurrency,
            "max_users_per_size": USERS_PER_RUN, "top_k": 10,
            "seed": args.seed, "query_cache": args.query_cache,
            "facts_share": args.facts_share,
        },
    }
    server: ManagedServer | None = None
    try:
        if args.base_url:
            pid = args.server_pid
            report["server"] = {"base_url": args.base_url, "managed": False, "pid": pid}
        else:
            server = ManagedServer(args.startup_timeout, args.keep_data,
                                   query_cache=args.query_cache)
            server.start()
            args.base_url = server.base_url
            pid = server.pid
            report["server"] = {"base_url": server.base_url, "managed": True, "pid": pid,
                                "startup_s": server.startup_s,
                                "rss_mb_at_ready": rss_mb(pid)}
        report["runs"] = []
        for index, n in enumerate(args.n):
            # Each size gets its own project (own server) or its own users (given server).
            api_key = server.create_key(f"bench-{n}") if server else args.api_key
            report["runs"].append(asyncio.run(
                run_size(n, api_key, args, pid, trust_env=server is None,
                         seed=args.seed + 1000 * index)
            ))
    finally:
        if server is not None:
            server.stop()
    report["duration_s"] = round(time.perf_counter() - started, 1)
    emit_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
