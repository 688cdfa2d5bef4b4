"""Tenant isolation under load: a quiet project's list latency while another project is busy.

Project A gets a few hundred memories (``infer=false``, several users) and, on a server the
benchmark started, a graph over the names they mention; then ``--clients`` clients (default
64) loop for ``--seconds`` over graph searches, small adds and lists. Project B is one
client listing a small page of its own memories: alone (``--b-requests`` lists), then
side by side with A's load, then alone again. Reports B's list latency in each phase and,
for A, requests per second, latency and every status code per kind (5xx and other non-2xx
apart). Timings decide nothing; the point is B alone beside B under A's load, in one run.

Without ``--base-url`` it starts its own server (embedded defaults, fresh data directory) and
makes a key for each project. Run from the repository root:
``python -m bench.tenant_isolation --seconds 60``. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
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

from app.config import Settings
from bench.http_load import make_client
from bench.managed_server import (
    ManagedServer,
    checkout,
    emit_report,
    log_problems,
    log_size,
    machine_info,
    pool_settings,
    progress,
    rss_mb,
    server_env,
    server_settings,
    set_progress_label,
)
from bench.synthetic import (
    TOPICS,
    memory_text,
)
from bench.tenant_setup import (
    Outcomes,
    graph_check,
    graph_question,
    names_by_user,
    preload,
    seed_graph,
    status_classes,
    timed,
)

KINDS = ("search", "add", "list")
MAX_SAMPLES = 5
WARMUP_SEARCHES = 12
PROGRESS_EVERY_S = 5.0

# -- load ---------------------------------------------------------------------------------------


@dataclass
class LoadPlan:
    clients: int
    seconds: float
    weights: dict[str, float]
    users: list[str]
    names: dict[str, list[str]]
    list_limit: int
    add_messages: int
    seed: int


async def project_a_client(index: int, client: httpx.AsyncClient, plan: LoadPlan,
                           deadline: float, outcomes: dict[str, Outcomes]) -> None:
    """Loops until ``deadline`` over the mix; one user per client, clients spread over users."""
    rng = random.Random(plan.seed * 1000 + index)
    user = plan.users[index % len(plan.users)]
    kinds = list(plan.weights)
    weights = list(plan.weights.values())
    while time.perf_counter() < deadline:
        kind = rng.choices(kinds, weights)[0]
        if kind == "search":
            await timed(client, outcomes[kind], "POST", "/v1/memories/search", json={
                "query": graph_question(rng, plan.names.get(user, [])), "user_id": user,
                "top_k": 10, "graph": True})
        elif kind == "add":
            topic = rng.choice(TOPICS)
            await timed(client, outcomes[kind], "POST", "/v1/memories", json={
                "messages": [{"role": "user", "content": memory_text(rng, topic)}
                             for _ in range(plan.add_messages)],
                "user_id": user, "infer": False,
                "metadata": {"topic": topic, "source": "bench-load"}})
        else:
            await timed(client, outcomes[kind], "GET", "/v1/memories",
                        params={"user_id": user, "limit": plan.list_limit})


async def project_b_lists(client: httpx.AsyncClient, user: str, limit: int, *,
                          count: int | None = None, start: float | None = None,
                          until: float | None = None) -> dict[str, Any]:
    """One client listing ``user``'s newest ``limit`` memories back to back: ``count``
    times, or from ``start`` until ``until`` (``time.perf_counter`` moments)."""
    outcomes = Outcomes()
    if start is not None:
        await asyncio.sleep(max(0.0, start - time.perf_counter()))
    began = time.perf_counter()
    done = 0
    while (count is not None and done < count) or (until is not None
                                                    and time.perf_counter() < until):
        await timed(client, outcomes, "GET", "/v1/memories",
                    params={"user_id": user, "limit": limit})
        done += 1
    wall = time.perf_counter() - began
    return {"wall_s": round(wall, 2), **outcomes.summary(wall)}


async def under_load(a_client: httpx.AsyncClient, b_client: httpx.AsyncClient, plan: LoadPlan,
                     b_user: str, b_limit: int, ramp_s: float) -> dict[str, Any]:
    """A's clients for ``plan.seconds``; B lists from ``ramp_s`` in until A's deadline."""
    outcomes = {kind: Outcomes() for kind in KINDS}
    began = time.perf_counter()
    deadline = began + plan.seconds

    async def report_progress() -> None:
        while True:
            await asyncio.sleep(PROGRESS_EVERY_S)
            counts = ", ".join(f"{kind} {sum(o.statuses.values())}"
                               for kind, o in outcomes.items())
            bad = sum(status_classes(o.statuses)["server_errors_5xx"]
                      for o in outcomes.values())
            progress(f"load {time.perf_counter() - began:5.1f}s: {counts}; 5xx {bad}")

    reporter = asyncio.create_task(report_progress())
    b_task = asyncio.create_task(project_b_lists(b_client, b_user, b_limit,
                                                 start=began + ramp_s, until=deadline))
    try:
        await asyncio.gather(*(project_a_client(i, a_client, plan, deadline, outcomes)
                               for i in range(plan.clients)))
        a_wall = time.perf_counter() - began
        b_result = await b_task
    finally:
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
    statuses: Counter[str] = Counter()
    for kind_outcomes in outcomes.values():
        statuses.update(kind_outcomes.statuses)
    # The last requests were sent before the deadline and answered after it: the wall
    # is until the last answer, so rates are a little under the steady state.
    a_result = {
        "clients": plan.clients, "seconds": plan.seconds, "wall_s": round(a_wall, 2),
        "requests": sum(statuses.values()),
        "rps": round(sum(len(o.latencies_s) for o in outcomes.values()) / a_wall, 2),
        "status_counts": dict(sorted(statuses.items())), **status_classes(statuses),
        "by_kind": {kind: o.summary(a_wall) for kind, o in outcomes.items()},
    }
    return {"a": a_result, "b": b_result}


# -- entry point --------------------------------------------------------------------------------


async def run(args: argparse.Namespace, key_a: str, key_b: str, pid: int | None,
              settings: Settings | None, trust_env: bool,
              log_path: Path | None) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:6]
    users = [f"iso-{tag}-a{i}" for i in range(args.users)]
    b_user = f"iso-{tag}-b0"
    report: dict[str, Any] = {}
    async with make_client(args.base_url, key_a, args.clients, trust_env) as a_client, \
            make_client(args.base_url, key_b, 1, trust_env) as b_client:
        progress(f"project A: preloading {args.memories} memories over {args.users} users")
        stored, a_data = await preload(a_client, args.memories, users, args.batch, args.seed)
        progress(f"project B: preloading {args.b_memories} memories")
        _, b_data = await preload(b_client, args.b_memories, [b_user], args.batch,
                                  args.seed + 1)
        names = names_by_user(stored)
        a_data["names_per_user_mean"] = round(
            sum(len(v) for v in names.values()) / max(1, len(names)), 1)
        if settings is not None:
            answer = await a_client.get("/v1/project")
            answer.raise_for_status()
            project = answer.json()
            progress("seeding project A's graph")
            graph: dict[str, Any] = await seed_graph(settings, uuid.UUID(project["id"]), stored,
                                                     args.seed)
        else:
            graph = {"seeded": False, "why": "--base-url: the bench cannot reach its graph store; "
                     "graph searches find what consolidation built there, if anything"}
        graph.update(await graph_check(a_client, users, names, random.Random(args.seed + 2)))
        progress(f"graph: {graph}")
        report["data"] = {"a": a_data, "b": b_data, "graph": graph}
        # Warm B's path (connection, key lookup) before timing it.
        await project_b_lists(b_client, b_user, args.b_list_limit, count=5)

        rss: dict[str, float | None] = {"before_load": await asyncio.to_thread(rss_mb, pid)}
        progress(f"project B alone: {args.b_requests} lists")
        phases: dict[str, Any] = {"alone_before": await project_b_lists(
            b_client, b_user, args.b_list_limit, count=args.b_requests)}
        progress(f"B alone: p50 {phases['alone_before']['p50_ms']} ms, "
                 f"p99 {phases['alone_before']['p99_ms']} ms")

        plan = LoadPlan(args.clients, args.seconds, args.mix, users, names, args.list_limit,
                        args.add_messages, args.seed)
        progress(f"project A: {args.clients} clients for {args.seconds}s ({args.mix}); "
                 f"project B lists from {args.ramp_seconds}s in")
        offset = log_size(log_path) if log_path else 0
        loaded = await under_load(a_client, b_client, plan, b_user, args.b_list_limit,
                                  args.ramp_seconds)
        rss["after_load"] = await asyncio.to_thread(rss_mb, pid)
        phases["under_load"] = loaded["b"]
        progress(f"B under load: p50 {loaded['b']['p50_ms']} ms, p99 {loaded['b']['p99_ms']} "
                 f"ms; A: {loaded['a']['rps']} rps, 5xx {loaded['a']['server_errors_5xx']}")

        progress(f"project B alone again: {args.b_requests} lists")
        phases["alone_after"] = await project_b_lists(b_client, b_user, args.b_list_limit,
                                                      count=args.b_requests)
        report["project_b_list"] = phases
        report["project_a_load"] = loaded["a"]
        report["side_by_side"] = side_by_side(phases, loaded["a"])
        report["server_rss_mb"] = rss
        if log_path is not None:
            report["server_log_during_load"] = log_problems(log_path, offset)
    return report


def side_by_side(phases: dict[str, Any], a: dict[str, Any]) -> dict[str, Any]:
    alone, loaded = phases["alone_before"], phases["under_load"]
    row: dict[str, Any] = {}
    for stat in ("p50_ms", "p95_ms", "p99_ms", "max_ms"):
        row[f"b_list_{stat}"] = {"alone": alone[stat], "under_load": loaded[stat],
                                 "alone_after": phases["alone_after"][stat]}
        if alone[stat] and loaded[stat] is not None:
            row[f"b_list_{stat}"]["ratio_under_load_vs_alone"] = round(
                loaded[stat] / alone[stat], 2)
    row["b_list_requests"] = {"alone": alone["requests"], "under_load": loaded["requests"]}
    row["b_non_2xx_under_load"] = loaded["requests"] - loaded["ok"]
    row["a_rps"] = a["rps"]
    row["a_server_errors_5xx"] = a["server_errors_5xx"]
    row["a_other_non_2xx"] = a["other_non_2xx"]
    row["a_transport_errors"] = a["transport_errors"]
    return row


def parse_mix(value: str) -> dict[str, float]:
    mix: dict[str, float] = {}
    for part in value.split(","):
        kind, _, weight = part.partition(":")
        kind = kind.strip()
        if kind not in KINDS:
            raise argparse.ArgumentTypeError(f"--mix kinds are {', '.join(KINDS)}, not {kind!r}")
        try:
            mix[kind] = float(weight or 1)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"--mix weight of {kind} is not a number") from exc
    if not mix or any(w < 0 for w in mix.values()) or not sum(mix.values()):
        raise argparse.ArgumentTypeError("--mix needs a positive weight")
    return mix


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="how long project A's clients run (default 60)")
    parser.add_argument("--clients", type=int, default=64,
                        help="project A's concurrent clients (default 64)")
    parser.add_argument("--mix", type=parse_mix, default=parse_mix("search:2,add:1,list:1"),
                        help="kinds and weights of A's requests (default search:2,add:1,list:1)")
    parser.add_argument("--memories", type=int, default=400,
                        help="memories preloaded into project A (default 400)")
    parser.add_argument("--users", type=int, default=8, help="project A's users (default 8)")
    parser.add_argument("--batch", type=int, default=20, help="messages per preload request")
    parser.add_argument("--list-limit", type=int, default=100,
                        help="page size of A's lists (default 100, the API's default)")
    parser.add_argument("--add-messages", type=int, default=2,
                        help="messages per add during A's load (default 2)")
    parser.add_argument("--b-memories", type=int, default=40,
                        help="memories preloaded into project B (default 40)")
    parser.add_argument("--b-list-limit", type=int, default=10,
                        help="page size of B's lists (default 10)")
    parser.add_argument("--b-requests", type=int, default=200,
                        help="B's lists in each phase alone (default 200)")
    parser.add_argument("--ramp-seconds", type=float, default=3.0,
                        help="B starts listing this long after A's clients (default 3)")
    parser.add_argument("--base-url", help="a running server; without it one is started")
    parser.add_argument("--api-key", default=os.environ.get("ANAMNESIS_API_KEY"),
                        help="project A's key for --base-url (default $ANAMNESIS_API_KEY)")
    parser.add_argument("--b-api-key", default=os.environ.get("ANAMNESIS_API_KEY_B"),
                        help="project B's key for --base-url, another project's "
                             "(default $ANAMNESIS_API_KEY_B)")
    parser.add_argument("--server-pid", type=int,
                        help="pid of the --base-url server, to report its RSS")
    parser.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment of the started server, e.g. "
                             "ANAMNESIS_DB__POOL_SIZE=20 (repeatable)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--startup-timeout", type=float, default=600.0,
                        help="seconds to wait for a started server's /ready")
    parser.add_argument("--keep-data", action="store_true",
                        help="keep the started server's temporary data directory and log")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    if min(args.clients, args.memories, args.users, args.batch, args.list_limit,
           args.add_messages, args.b_memories, args.b_list_limit, args.b_requests) < 1:
        parser.error("counts and sizes must be positive")
    if args.seconds <= 0 or not 0 <= args.ramp_seconds < args.seconds:
        parser.error("--seconds must be positive and --ramp-seconds under it")
    if args.batch > 200:
        parser.error("--batch must be at most 200 (the server's per-request message limit)")
    if any("=" not in item for item in args.server_env):
        parser.error("--server-env takes KEY=VALUE")
    if args.base_url and not (args.api_key and args.b_api_key):
        parser.error("--base-url needs --api-key and --b-api-key (keys of two projects)")
    return args


def main(argv: list[str] | None = None) -> int:
    set_progress_label("tenant_isolation")
    args = parse_args(argv)
    started = time.perf_counter()
    report: dict[str, Any] = {
        "benchmark": "tenant_isolation",
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "config": {key: value for key, value in vars(args).items()
                   if key not in ("api_key", "b_api_key", "out", "keep_data")},
    }
    server: ManagedServer | None = None
    try:
        if args.base_url:
            settings, pid, log_path = None, args.server_pid, None
            key_a, key_b = args.api_key, args.b_api_key
            report["server"] = {"base_url": args.base_url, "managed": False, "pid": pid,
                                "pool": None}
        else:
            server = ManagedServer(args.startup_timeout, args.keep_data,
                                   server_env(args.server_env))
            server.start()
            args.base_url = server.base_url
            settings, pid, log_path = server_settings(server.env), server.pid, server.log_path
            key_a, key_b = server.create_key("tenant-a"), server.create_key("tenant-b")
            report["server"] = {"base_url": server.base_url, "managed": True, "pid": pid,
                                "startup_s": server.startup_s, "rss_mb_at_ready": rss_mb(pid),
                                "code": checkout(), "pool": pool_settings(settings)}
        report.update(asyncio.run(run(args, key_a, key_b, pid, settings,
                                      trust_env=server is None, log_path=log_path)))
    finally:
        if server is not None:
            server.stop()
    report["duration_s"] = round(time.perf_counter() - started, 1)
    emit_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
