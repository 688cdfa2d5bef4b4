"""What consolidation makes of conversations, measured: on the bundled model by default, on any
OpenAI-compatible endpoint with ``--llm-url``.

Two parts (``--part``, both by default), against one started server:

* ``locomo``: whole sessions of a few LoCoMo dev conversations are posted in order
  (``infer: true``, one add per session, or per ``--episode-turns`` turns, each message
  with its speaker's name and LoCoMo ``dia_id``). Per episode: seconds from the 202 until
  the messages are found by a search, until the facts are written (the job lists them
  while its graph step runs) and until the job finished (graph written too), LLM calls and
  tokens. Then every question of categories 1 to 4 searches its conversation
  three ways: facts only, messages only, both fused (the default search). A message stands
  for its own turn; a fact for the turns its ``sources`` cite. Evidence recall@k ("any"
  evidence turn in the top k), facts per user turn, entities and relations per session,
  share of jobs that SUCCEEDED. ``--from-session N`` posts the earlier sessions as messages
  only and measures sessions N.. (a long conversation in parts).
* ``updates``: the knowledge-update suite (``bench.knowledge_updates``): after each
  scenario's conversations, whether the current answer ranks first among facts, whether the
  old fact was superseded (not deleted, not still current), whether the unrelated fact
  survived, and how many current facts repeat another (cosine similarity >= 0.9).

Prints JSON on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import statistics
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx

from bench.evidence_recall import EvidenceRecall
from bench.knowledge_updates import SCENARIOS, updates
from bench.locomo_data import Episode, conversation_episodes, default_data_path
from bench.locomo_graph import graph_size
from bench.managed_server import (
    ManagedServer,
    emit_report,
    llm_calls_logged,
    log_size,
    machine_info,
    progress,
    server_env,
    set_progress_label,
)
from bench.memory_api import search, wait_job

PROJECT = "bench-quality-"  # the prefix of the project each run makes
WHOLE_SESSION = 10_000  # turns per episode: a session is one add


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", action="append", choices=["locomo", "updates"])
    parser.add_argument("--data", type=Path, default=default_data_path(),
                        help="locomo_dev.json (default $LOCOMO_DEV)")
    parser.add_argument("--conversations", type=int, default=2,
                        help="LoCoMo conversations, each with all its sessions (default 2)")
    parser.add_argument("--skip", type=int, default=0,
                        help="start after the first N conversations, so the dev split can be "
                             "run in parts (default 0)")
    parser.add_argument("--episode-turns", type=int, default=WHOLE_SESSION,
                        help="turns per posted episode (default: a whole session per add)")
    parser.add_argument("--sessions", type=int, default=None,
                        help="only each conversation's first N sessions (default: all)")
    parser.add_argument("--from-session", type=int, default=1, metavar="N",
                        help="post sessions before N as their messages only (infer: false), "
                             "so a long conversation can be measured in parts without paying "
                             "again for its earlier extraction; every number covers sessions "
                             "N.. (default 1: all of them)")
    parser.add_argument("--scenarios", type=int, default=len(SCENARIOS),
                        help=f"knowledge-update scenarios (default all {len(SCENARIOS)})")
    parser.add_argument("--scenario", action="append", default=[], metavar="NAME",
                        choices=[case.name for case in SCENARIOS],
                        help="only these knowledge-update scenarios (repeatable)")
    parser.add_argument("--llm-url", help="OpenAI-compatible …/v1 for the started server "
                        "(default: the server starts its bundled model)")
    parser.add_argument("--llm-model", help="model name for --llm-url")
    parser.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--job-timeout", type=float, default=900.0,
                        help="seconds one episode's job may take (default 900)")
    parser.add_argument("--startup-timeout", type=float, default=600.0)
    parser.add_argument("--keep-data", action="store_true")
    parser.add_argument("--rescore", type=Path, metavar="FOLDER",
                        help="no posting: rank the questions again on the data a --keep-data "
                             "run kept in FOLDER (the path it printed), with this checkout's "
                             "code; pass that run's --skip, --conversations, --sessions, "
                             "--from-session and --episode-turns")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    args.part = args.part or (["locomo"] if args.rescore else ["locomo", "updates"])
    if args.rescore and (args.part != ["locomo"] or not args.rescore.is_dir()):
        parser.error("--rescore takes the folder a --keep-data run kept, for --part locomo")
    if "locomo" in args.part and (args.data is None or not args.data.is_file()):
        parser.error("LoCoMo data not found: pass --data PATH/locomo_dev.json")
    return args


# -- locomo ----------------------------------------------------------------------------------


def episode_body(episode: Episode, user_id: str) -> dict[str, Any]:
    """The add for one episode: each message with its speaker's name and LoCoMo dia_id."""
    return {"messages": [{**message, "metadata": {"dia_id": dia_id}} for message, dia_id
                         in zip(episode.messages, episode.dia_ids, strict=True)],
            "user_id": user_id, "observed_at": episode.observed_at.isoformat()}


async def post_episode(client: httpx.AsyncClient, episode: Episode, user_id: str,
                       timeout_s: float) -> dict[str, Any]:
    """Posts one session and follows it: when its messages are found, when its job ends."""
    body = episode_body(episode, user_id)
    messages = body["messages"]
    began = time.perf_counter()
    response = await client.post("/v1/memories", json=body)
    response.raise_for_status()
    accepted = time.perf_counter()
    probe = max(episode.messages, key=lambda message: len(message["content"]))["content"]
    messages_s = None
    while time.perf_counter() - accepted < 10:
        hits = await search(client, probe, user_id, 5, {"kind": "message"})
        if any(hit["memory"] == " ".join(probe.split()) for hit in hits):
            messages_s = time.perf_counter() - accepted
            break
        await asyncio.sleep(0.05)
    seen: dict[str, float] = {}
    job = await wait_job(client, response.json()["job_id"], timeout_s, seen)
    done = time.perf_counter()
    written = [seen.get(result["id"], done) for result in job["results"]] or [done]
    return {"label": episode.label, "turns": len(messages), "job": job,
            "episode_id": job["episode_id"], "dia_ids": episode.dia_ids,
            "user_turns": sum(1 for m in messages if m["role"] == "user"),
            "post_s": round(accepted - began, 3),
            "messages_searchable_s": None if messages_s is None else round(messages_s, 3),
            # the first facts, and the last of those the job ended with
            "facts_searchable_s": round(min(written) - accepted, 2),
            "all_facts_searchable_s": round(max(written) - accepted, 2),
            "job_done_s": round(done - accepted, 2)}


async def post_history(client: httpx.AsyncClient, episode: Episode, user_id: str) -> None:
    """An earlier session as its messages only: there to be searched, with no job to wait for
    (its turns count as not ingested, so no question about them is scored)."""
    response = await client.post("/v1/memories",
                                 json=episode_body(episode, user_id) | {"infer": False})
    response.raise_for_status()


def measured_samples(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The conversations the run measures (``--skip``, ``--conversations``)."""
    samples: list[dict[str, Any]] = json.loads(args.data.read_text())
    return samples[args.skip:args.skip + args.conversations]


def measured_episodes(sample: dict[str, Any], args: argparse.Namespace
                      ) -> tuple[list[Episode], list[Episode]]:
    """A conversation's episodes posted as history (messages only), and those measured."""
    episodes = [e for e in conversation_episodes(sample, args.episode_turns)
                if args.sessions is None or e.session <= args.sessions]
    history = [e for e in episodes if e.session < args.from_session]
    return history, episodes[len(history):]


async def rescore(client: httpx.AsyncClient, args: argparse.Namespace) -> dict[str, Any]:
    """Evidence recall on the data an earlier run kept (``--rescore``), ranked by this
    checkout: a ranking change measured without paying for the extraction again. The
    episodes (each message's ``dia_id``) and user ids are read from the project's export."""
    samples = measured_samples(args)
    turns_of: dict[str, dict[str, list[str]]] = defaultdict(dict)  # user → episode → turns
    async with client.stream("GET", "/v1/export") as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            record = json.loads(line) if line.strip() else {}
            if record.get("record") == "episode":
                turns_of[record["user_id"]][record["id"]] = [
                    str((message.get("metadata") or {}).get("dia_id"))
                    for message in record["messages"]]
    scores = EvidenceRecall()
    for sample in samples:
        users = [user for user in turns_of if user.startswith(f"{sample['sample_id']}-")]
        if len(users) != 1:
            raise SystemExit(f"the kept data holds {len(users)} users for "
                             f"{sample['sample_id']}: pass the run's --skip/--conversations")
        _, episodes = measured_episodes(sample, args)
        await scores.score(client, sample, users[0], {dia_id for episode in episodes
                                                      for dia_id in episode.dia_ids},
                           turns_of[users[0]])
    return {"conversations": [sample["sample_id"] for sample in samples], **scores.report()}


async def locomo(client: httpx.AsyncClient, args: argparse.Namespace) -> dict[str, Any]:
    samples = measured_samples(args)
    rows: list[dict[str, Any]] = []
    scores = EvidenceRecall()
    graph = {"entities": 0, "relations": 0}
    sessions = 0
    for sample in samples:
        history, episodes = measured_episodes(sample, args)
        user_id = f"{sample['sample_id']}-{uuid.uuid4().hex[:6]}"
        for episode in history:
            await post_history(client, episode, user_id)
        turns_of: dict[str, list[str]] = {}
        for number, episode in enumerate(episodes, 1):
            row = await post_episode(client, episode, user_id, args.job_timeout)
            turns_of[row["episode_id"]] = row["dia_ids"]
            rows.append(row)
            job = row["job"]
            progress(f"{episode.label} ({number}/{len(episodes)}): {job['status']} in "
                     f"{row['facts_searchable_s']} s, {len(job['results'])} facts, "
                     f"{job['usage']['llm_calls']} calls")
        sessions += len({episode.session for episode in episodes})  # a window is not one
        size = await graph_size(client, user_id)
        graph["entities"] += size["entities"]
        graph["relations"] += size["current_relations_up_to_200"]
        ingested = {dia_id for episode in episodes for dia_id in episode.dia_ids}
        await scores.score(client, sample, user_id, ingested, turns_of)
    jobs = [row["job"] for row in rows]
    usage = [job["usage"] for job in jobs]
    facts = sum(1 for job in jobs for result in job["results"]
                if result["event"] in ("ADD", "SUPERSEDE"))
    eight = [row for row in rows if 6 <= row["turns"] <= 10]
    return {
        "conversations": [sample["sample_id"] for sample in samples],
        "episodes": len(rows), "turns": sum(row["turns"] for row in rows),
        "jobs": {status: sum(1 for job in jobs if job["status"] == status)
                 for status in ("SUCCEEDED", "FAILED", "PENDING", "RUNNING")},
        "succeeded_share": round(sum(job["status"] == "SUCCEEDED" for job in jobs)
                                 / max(1, len(jobs)), 3),
        "failures": sorted({(job.get("error") or {}).get("code", "") for job in jobs
                            if job["status"] != "SUCCEEDED"}),
        "truncated_replies": sum(u.get("truncated_replies", 0) for u in usage),
        "decisions": dict(Counter(result["event"] for job in jobs for result in job["results"])),
        # what each SUPERSEDE retired, to be read: a wrong one ends a fact that still holds
        "supersessions": [[result["previous_memory"], result["memory"]] for job in jobs
                          for result in job["results"] if result["event"] == "SUPERSEDE"],
        "facts_per_user_turn": round(facts / max(1, sum(r["user_turns"] for r in rows)), 3),
        "entities_per_session": round(graph["entities"] / max(1, sessions), 2),
        "relations_per_session": round(graph["relations"] / max(1, sessions), 2),
        "per_episode": {
            "llm_calls": _mean(u["llm_calls"] for u in usage),
            "prompt_tokens": _mean(u["prompt_tokens"] for u in usage),
            "completion_tokens": _mean(u["completion_tokens"] for u in usage),
            "seconds_to_facts_p50": _p50(row["facts_searchable_s"] for row in rows),
            "seconds_to_job_done_p50": _p50(row["job_done_s"] for row in rows),
            "seconds_to_messages_p50": _p50(row["messages_searchable_s"] for row in rows
                                            if row["messages_searchable_s"] is not None),
        },
        "eight_turn_episodes": {"count": len(eight),
                                "seconds_to_facts_p50": _p50(r["facts_searchable_s"]
                                                             for r in eight),
                                "seconds_to_all_facts_p50": _p50(r["all_facts_searchable_s"]
                                                                 for r in eight),
                                "seconds_to_job_done_p50": _p50(r["job_done_s"]
                                                                for r in eight)},
        **scores.report(),
        "episodes_detail": [{key: value for key, value in row.items()
                             if key not in ("job", "dia_ids")} |
                            {"status": row["job"]["status"],
                             "facts": len(row["job"]["results"]),
                             "usage": row["job"]["usage"]} for row in rows],
    }


def _mean(values: Any) -> float | None:
    found = list(values)
    return round(statistics.fmean(found), 2) if found else None


def _p50(values: Any) -> float | None:
    found = list(values)
    return round(statistics.median(found), 2) if found else None


async def run(base_url: str, api_key: str, args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=base_url, trust_env=False,
                                 headers={"Authorization": f"Bearer {api_key}"},
                                 timeout=httpx.Timeout(120.0, connect=10.0)) as client:
        if "updates" in args.part:
            report["updates"] = await updates(client, args)
        if args.rescore:
            report["locomo"] = await rescore(client, args)
        elif "locomo" in args.part:
            report["locomo"] = await locomo(client, args)
    return report


def main(argv: list[str] | None = None) -> int:
    set_progress_label("consolidation_quality")
    args = parse_args(argv)
    started = time.perf_counter()
    report: dict[str, Any] = {
        "benchmark": "consolidation_quality",
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "config": {"parts": args.part, "conversations": args.conversations, "skip": args.skip,
                   "episode_turns": args.episode_turns,
                   "sessions": args.sessions, "from_session": args.from_session,
                   "scenarios": args.scenario or args.scenarios,
                   "llm": args.llm_url or "the bundled model", "server_env": args.server_env},
    }
    server = ManagedServer(args.startup_timeout, args.keep_data,
                           env=server_env(args.server_env, args.llm_url, args.llm_model),
                           root=args.rescore)
    try:
        server.start()
        project = f"{PROJECT}{uuid.uuid4().hex[:8]}"
        if args.rescore:  # the kept run's own project
            kept = [name for name in server.projects() if name.startswith(PROJECT)]
            if len(kept) != 1:
                raise SystemExit(f"{args.rescore} holds {len(kept)} {PROJECT}… projects, "
                                 "not one")
            project = kept[0]
        api_key = server.create_key(project)
        offset = log_size(server.log_path)
        report |= asyncio.run(run(server.base_url, api_key, args))
        # per step of a job (extract, resolve, graph): where its time and tokens go
        report["llm_calls"] = llm_calls_logged(server.log_path, offset)
    finally:
        server.stop()
    report["duration_s"] = round(time.perf_counter() - started, 1)
    emit_report(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
