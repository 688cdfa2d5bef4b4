"""LoCoMo evidence recall of consolidated memories, with and without graph expansion.

Sessions of one LoCoMo conversation go through the whole pipeline (``infer: true``: the LLM
extracts facts, resolves them, lists entities and relations), then every question of
categories 1 to 4 whose evidence lies in those sessions is asked twice, ``graph: false`` and
``graph: true``. A memory stands for the turns it was distilled from: its ``sources`` name
the episode and the message indices, which map back to LoCoMo ``dia_id``s. A question is hit
at k when the turns behind the top-k memories cover one evidence turn ("any") or all of them
("all"). Prints JSON on stdout.

Only facts are searched (``kind: fact``): every message is a memory too, and would answer
for itself. The numbers depend on the LLM more than on anything else here: the bundled model
makes few, rough facts. Point ``--llm-url`` at a stronger OpenAI-compatible server (the started
server uses it too) for numbers that say something about retrieval.
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

from bench.locomo_data import Episode, conversation_episodes, default_data_path
from bench.managed_server import (
    ManagedServer,
    emit_report,
    machine_info,
    progress,
    server_env,
    set_progress_label,
)

KS = (1, 5, 10, 20)
CATEGORIES = {1: "multi_hop", 2: "temporal", 3: "open_domain", 4: "single_hop"}
MODES = {"vector": False, "graph": True}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=default_data_path(),
                        help="locomo_dev.json (default $LOCOMO_DEV or shared/data/locomo/)")
    parser.add_argument("--conversation", default=None,
                        help="sample_id to ingest (default: the first)")
    parser.add_argument("--sessions", type=int, default=3,
                        help="ingest the conversation's first N sessions (default 3)")
    parser.add_argument("--turns", type=int, default=8, help="turns per episode (default 8)")
    parser.add_argument("--base-url", help="a running Anamnesis; without it one is started")
    parser.add_argument("--api-key", default=os.environ.get("ANAMNESIS_API_KEY"))
    parser.add_argument("--llm-url", help="OpenAI-compatible …/v1 for the started server "
                        "(default: the server starts its bundled model)")
    parser.add_argument("--llm-model", help="model name for --llm-url")
    parser.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment of the started server (repeatable)")
    parser.add_argument("--job-timeout", type=float, default=1800.0,
                        help="seconds to wait for all jobs (default 1800)")
    parser.add_argument("--startup-timeout", type=float, default=600.0)
    parser.add_argument("--keep-data", action="store_true")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    if args.data is None or not args.data.is_file():
        parser.error("LoCoMo data not found: pass --data PATH/locomo_dev.json")
    if args.base_url and not args.api_key:
        parser.error("--base-url needs --api-key (or $ANAMNESIS_API_KEY)")
    if args.sessions < 1 or args.turns < 2:
        parser.error("--sessions must be positive and --turns at least 2")
    return args


def chosen_episodes(sample: dict[str, Any], sessions: int, turns: int) -> list[Episode]:
    return [e for e in conversation_episodes(sample, turns) if e.session <= sessions]


def answerable(sample: dict[str, Any], turns: set[str]) -> list[dict[str, Any]]:
    """Questions of categories 1 to 4 whose every evidence turn was ingested."""
    return [qa for qa in sample["qa"] if qa.get("category") in CATEGORIES
            and qa.get("evidence") and set(qa["evidence"]) <= turns]


async def ingest(client: httpx.AsyncClient, episodes: list[Episode], user_id: str,
                 timeout_s: float) -> tuple[dict[str, list[str]], list[dict[str, Any]]]:
    """Posts the episodes in order and waits for their jobs. Returns each episode id's
    dia_ids (by message index) and the finished jobs."""
    turns_of: dict[str, list[str]] = {}
    job_ids: list[str] = []
    for episode in episodes:
        response = await client.post("/v1/memories", json={
            "messages": episode.messages, "user_id": user_id,
            "observed_at": episode.observed_at.isoformat(),
            "metadata": {"source": "bench", "episode": episode.label}})
        response.raise_for_status()
        body = response.json()
        job_ids.append(body["job_id"])
        job = (await client.get(f"/v1/jobs/{body['job_id']}")).json()
        turns_of[job["episode_id"]] = episode.dia_ids
    deadline = time.monotonic() + timeout_s
    jobs: dict[str, dict[str, Any]] = {}
    while len(jobs) < len(job_ids) and time.monotonic() < deadline:
        for job_id in job_ids:
            if job_id in jobs:
                continue
            job = (await client.get(f"/v1/jobs/{job_id}")).json()
            if job["status"] in ("SUCCEEDED", "FAILED"):
                jobs[job_id] = job
                progress(f"job {len(jobs)}/{len(job_ids)}: {job['status']}")
        await asyncio.sleep(2.0)
    return turns_of, [jobs.get(job_id, {"id": job_id, "status": "UNFINISHED"})
                      for job_id in job_ids]


async def turns_of_memory(client: httpx.AsyncClient, memory_id: str,
                          turns_of: dict[str, list[str]], cache: dict[str, set[str]]) -> set[str]:
    if memory_id not in cache:
        detail = (await client.get(f"/v1/memories/{memory_id}")).json()
        cache[memory_id] = {turns_of[source["episode_id"]][index]
                            for source in detail.get("sources", [])
                            if source["episode_id"] in turns_of
                            for index in source["message_indices"]
                            if 0 <= index < len(turns_of[source["episode_id"]])}
    return cache[memory_id]


def recall(hits: list[tuple[int, bool, bool]]) -> dict[str, Any]:
    """hits: (category, any-hit, all-hit) per question at one k."""
    table: dict[str, Any] = {}
    groups: dict[str, list[tuple[int, bool, bool]]] = defaultdict(list)
    for hit in hits:
        groups["overall"].append(hit)
        groups[CATEGORIES[hit[0]]].append(hit)
    for name, rows in groups.items():
        table[name] = {"questions": len(rows),
                       "any": round(sum(r[1] for r in rows) / len(rows), 3),
                       "all": round(sum(r[2] for r in rows) / len(rows), 3)}
    return table


async def evaluate(client: httpx.AsyncClient, questions: list[dict[str, Any]], user_id: str,
                   turns_of: dict[str, list[str]]) -> dict[str, Any]:
    cache: dict[str, set[str]] = {}
    results: dict[str, Any] = {}
    for mode, graph in MODES.items():
        per_k: dict[int, list[tuple[int, bool, bool]]] = {k: [] for k in KS}
        for qa in questions:
            response = await client.post("/v1/memories/search", json={
                "query": qa["question"], "user_id": user_id, "top_k": max(KS), "graph": graph,
                "filters": {"kind": "fact"}})
            response.raise_for_status()
            ids = [hit["id"] for hit in response.json()["results"]]
            evidence = set(qa["evidence"])
            for k in KS:
                covered: set[str] = set()
                for memory_id in ids[:k]:
                    covered |= await turns_of_memory(client, memory_id, turns_of, cache)
                per_k[k].append((qa["category"], bool(evidence & covered), evidence <= covered))
        results[mode] = {f"recall@{k}": recall(rows) for k, rows in per_k.items()}
    return results


async def graph_size(client: httpx.AsyncClient, user_id: str) -> dict[str, int]:
    entities = relations = 0
    cursor = None
    while True:
        params: dict[str, Any] = {"user_id": user_id, "limit": 200}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/v1/entities", params=params)).json()
        entities += len(page["results"])
        cursor = page["next_cursor"]
        if not cursor:
            break
    found = (await client.get("/v1/relations", params={"user_id": user_id, "limit": 200})).json()
    relations = len(found["results"])
    return {"entities": entities, "current_relations_up_to_200": relations}


async def run(base_url: str, api_key: str, sample: dict[str, Any], args: argparse.Namespace,
              trust_env: bool) -> dict[str, Any]:
    episodes = chosen_episodes(sample, args.sessions, args.turns)
    ingested = {dia_id for episode in episodes for dia_id in episode.dia_ids}
    questions = answerable(sample, ingested)
    user_id = f"{sample['sample_id']}-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=base_url, trust_env=trust_env,
                                 headers={"Authorization": f"Bearer {api_key}"},
                                 timeout=httpx.Timeout(120.0, connect=10.0)) as client:
        progress(f"posting {len(episodes)} episodes ({len(ingested)} turns) of "
                 f"{sample['sample_id']}; {len(questions)} questions answerable from them")
        began = time.perf_counter()
        turns_of, jobs = await ingest(client, episodes, user_id, args.job_timeout)
        ingest_s = time.perf_counter() - began
        memories = 0
        cursor = None
        while True:
            params: dict[str, Any] = {"user_id": user_id, "limit": 200, "kind": "fact"}
            if cursor:
                params["cursor"] = cursor
            page = (await client.get("/v1/memories", params=params)).json()
            memories += len(page["results"])
            cursor = page.get("next_cursor")
            if not cursor:
                break
        progress(f"{memories} memories; asking {len(questions)} questions twice")
        recalls = await evaluate(client, questions, user_id, turns_of)
        size = await graph_size(client, user_id)
    usage = [job.get("usage") or {} for job in jobs]
    return {
        "sample_id": sample["sample_id"], "sessions": args.sessions,
        "episodes": len(episodes), "turns": len(ingested), "questions": len(questions),
        "questions_per_category": {name: sum(1 for q in questions if q["category"] == c)
                                   for c, name in CATEGORIES.items()},
        "jobs": {status: sum(1 for j in jobs if j["status"] == status)
                 for status in ("SUCCEEDED", "FAILED", "UNFINISHED")},
        "ingest_s": round(ingest_s, 1),
        "llm_calls": sum(u.get("llm_calls", 0) for u in usage),
        "tokens": {"prompt": sum(u.get("prompt_tokens", 0) for u in usage),
                   "completion": sum(u.get("completion_tokens", 0) for u in usage)},
        "memories": memories, "graph": size,
        "recall": recalls,
    }


def main(argv: list[str] | None = None) -> int:
    set_progress_label("locomo_graph")
    args = parse_args(argv)
    samples = json.loads(args.data.read_text())
    sample = next((s for s in samples if s["sample_id"] == args.conversation), None) \
        if args.conversation else samples[0]
    if sample is None:
        raise SystemExit(f"no conversation {args.conversation!r} in {args.data}")
    started = time.perf_counter()
    report: dict[str, Any] = {
        "benchmark": "locomo_graph",
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "config": {"data": str(args.data), "conversation": sample["sample_id"],
                   "sessions": args.sessions, "turns_per_episode": args.turns, "ks": KS,
                   "llm": args.llm_url or ("whatever --base-url is configured with"
                                           if args.base_url else "the bundled model"),
                   "server_env": args.server_env},
    }
    server: ManagedServer | None = None
    try:
        if args.base_url:
            base_url, api_key = args.base_url, args.api_key
        else:
            env = server_env(args.server_env, args.llm_url, args.llm_model)
            server = ManagedServer(args.startup_timeout, args.keep_data, env=env)
            server.start()
            base_url = server.base_url
            api_key = server.create_key(f"bench-locomo-graph-{uuid.uuid4().hex[:8]}")
        report["result"] = asyncio.run(run(base_url, api_key, sample, args,
                                           trust_env=server is None))
    finally:
        if server is not None:
            server.stop()
    report["duration_s"] = round(time.perf_counter() - started, 1)
    emit_report(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
