"""Switching the embedding model under load: LoCoMo dev turns posted to a server on the
default model, then ``anamnesis reindex --model`` (default all-mpnet-base-v2) run against its
database while a client keeps searching. Reports the switch (wall time, memories, entities)
and, side by side, the searches before, during and after it: answered, errors, latency
percentiles, and LoCoMo evidence recall@10 (any) of the questions asked in each phase.
Prints JSON on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from bench.locomo_data import default_data_path
from bench.locomo_recall import CATEGORIES, message, sessions
from bench.managed_server import (
    REPO_ROOT,
    ManagedServer,
    anamnesis_command,
    emit_report,
    machine_info,
    progress,
    set_progress_label,
)
from bench.timed_requests import latency_summary


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=default_data_path())
    parser.add_argument("--model", default="all-mpnet-base-v2")
    parser.add_argument("--conversations", type=int, default=None)
    parser.add_argument("--index", choices=["memory", "postgres"], default="memory")
    parser.add_argument("--startup-timeout", type=float, default=600.0)
    parser.add_argument("--keep-data", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.data is None or not args.data.is_file():
        parser.error("LoCoMo data not found: pass --data PATH/locomo_dev.json")
    return args


Question = tuple[str, str, set[str]]  # user, question, evidence turns


async def post(client: httpx.AsyncClient, samples: list[dict[str, Any]]
               ) -> tuple[dict[str, str], list[Question]]:
    turn_of: dict[str, str] = {}
    questions: list[Question] = []
    for sample in samples:
        user = f"{sample['sample_id']}-{uuid.uuid4().hex[:6]}"
        for number, when, turns in sessions(sample):
            response = await client.post("/v1/memories", json={
                "messages": [message(t, number) for t in turns], "user_id": user,
                "infer": False, "observed_at": when.isoformat()})
            response.raise_for_status()
            for turn, result in zip(turns, response.json()["results"], strict=True):
                turn_of[result["id"]] = turn["dia_id"]
        questions += [(user, qa["question"], set(qa["evidence"])) for qa in sample["qa"]
                      if qa.get("category") in CATEGORIES and qa.get("evidence")]
    return turn_of, questions


class Searcher:
    """Asks the questions round and round, recording each answer under the phase it
    began in."""

    def __init__(self, client: httpx.AsyncClient, questions: list[Question],
                 turn_of: dict[str, str]):
        self.client, self.questions, self.turn_of = client, questions, turn_of
        self.phase = "before"
        self.records: dict[str, list[tuple[float, int | str, bool]]] = {}
        self.running = True

    async def run(self) -> None:
        position = 0
        while self.running:
            user, question, evidence = self.questions[position % len(self.questions)]
            position += 1
            phase = self.phase
            began = time.perf_counter()
            try:
                response = await self.client.post("/v1/memories/search", json={
                    "query": question, "user_id": user, "top_k": 10})
            except httpx.TransportError as exc:  # counted, not fatal: the report says how many
                self.records.setdefault(phase, []).append(
                    (time.perf_counter() - began, type(exc).__name__, False))
                continue
            seconds = time.perf_counter() - began
            found = False
            if response.status_code == 200:
                found = bool(evidence & {self.turn_of.get(hit["id"])
                                         for hit in response.json()["results"]})
            self.records.setdefault(phase, []).append((seconds, response.status_code, found))

    def summary(self) -> dict[str, Any]:
        return {phase: {"searches": len(rows),
                        "errors": sum(1 for _, status, _ in rows if status != 200),
                        "error_kinds": sorted({str(s) for _, s, _ in rows if s != 200}),
                        "recall@10_any": round(sum(f for _, _, f in rows) / len(rows), 3),
                        "latency": latency_summary([s for s, _, _ in rows])}
                for phase, rows in self.records.items()}


async def measure(server: ManagedServer, key: str, samples: list[dict[str, Any]],
                  model: str) -> dict[str, Any]:
    # Idle connections expire before the server's keep-alive (5 s) closes them under us.
    async with httpx.AsyncClient(base_url=server.base_url, trust_env=False,
                                 headers={"Authorization": f"Bearer {key}"},
                                 timeout=httpx.Timeout(300.0, connect=10.0),
                                 limits=httpx.Limits(keepalive_expiry=2.0)) as client:
        began = time.perf_counter()
        turn_of, questions = await post(client, samples)
        progress(f"posted {len(turn_of)} turns in {time.perf_counter() - began:.0f}s")
        searcher = Searcher(client, questions, turn_of)
        task = asyncio.create_task(searcher.run())
        await asyncio.sleep(20)
        searcher.phase = "during"
        began = time.perf_counter()
        switched = await asyncio.to_thread(
            subprocess.run, [*anamnesis_command(), "reindex", "--model", model], cwd=REPO_ROOT,
            env=server.env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - began
        progress(f"reindex --model {model}: rc {switched.returncode} in {wall:.0f}s")
        for _ in range(6000):  # the server moves within a poll interval; a minute at most
            if (await client.get("/ready")).json().get("embedding_model") == model:
                break
            await asyncio.sleep(0.1)
        searcher.phase = "after"
        await asyncio.sleep(20)
        searcher.running = False
        await task
    return {"turns": len(turn_of), "questions": len(questions),
            "switch": {"returncode": switched.returncode, "wall_s": round(wall, 1),
                       "output": switched.stdout.strip()[-500:],
                       "errors": switched.stderr.strip()[-1500:] if switched.returncode else ""},
            "searches": searcher.summary()}


def main(argv: list[str] | None = None) -> int:
    set_progress_label("reembed")
    args = parse_args(argv)
    samples = json.loads(args.data.read_text())[:args.conversations]
    server = ManagedServer(args.startup_timeout, args.keep_data,
                           env={"ANAMNESIS_SEARCH__INDEX": args.index})
    try:
        server.start()
        result = asyncio.run(measure(server, server.create_key("reembed"), samples,
                                     args.model))
    finally:
        server.stop()
    emit_report({"benchmark": "reembed",
                 "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                 "machine": machine_info(),
                 "config": {"model": args.model, "index": args.index,
                            "conversations": [s["sample_id"] for s in samples]},
                 **result}, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
