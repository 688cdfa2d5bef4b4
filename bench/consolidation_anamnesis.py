"""``bench.consolidation``'s Anamnesis side: post the episodes (``infer: true``), follow every
job until SUCCEEDED and until a search finds one of its memories, and report what it took."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.llm_proxy import CountingProxy
from bench.locomo_data import Episode, number_summary, per_minute, seconds_summary
from bench.managed_server import (
    progress,
)

NEW_TEXT_EVENTS = ("ADD", "UPDATE", "SUPERSEDE")
EVENTS = ("ADD", "UPDATE", "SUPERSEDE", "NOOP")
MAX_FAILURE_SAMPLES = 10
SAMPLE_MEMORIES = 5
MAX_JOB_ROWS = 50


# -- Anamnesis -----------------------------------------------------------------------------------


@dataclass
class Tracked:
    episode: Episode
    user_id: str
    sent: float
    accepted: float | None = None
    status_code: int | None = None
    job_id: str | None = None
    job: dict[str, Any] | None = None
    finished: float | None = None
    searchable: float | None = None
    search_note: str | None = None
    post_error: str | None = None


def error_code(response: httpx.Response) -> str:
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        return str(response.json()["error"]["code"])
    return f"http_{response.status_code}"


async def follow_job(client: httpx.AsyncClient, item: Tracked, args: argparse.Namespace) -> None:
    """Poll the job until it settles, then search until one of its new memories shows up."""
    assert item.job_id is not None
    assert item.accepted is not None
    deadline = item.accepted + args.job_timeout
    while time.perf_counter() < deadline:
        try:
            response = await client.get(f"/v1/jobs/{item.job_id}")
        except httpx.HTTPError:
            await asyncio.sleep(args.poll_interval)
            continue
        if response.status_code == 200:
            job = response.json()
            if job["status"] in ("SUCCEEDED", "FAILED"):
                item.finished, item.job = time.perf_counter(), job
                progress(f"anamnesis: {item.episode.label} {job['status']} "
                         f"{item.finished - item.accepted:.1f}s after its 202, "
                         f"{job['usage']['llm_calls']} LLM calls, {len(job['results'])} results")
                break
        await asyncio.sleep(args.poll_interval)
    else:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            item.job = (await client.get(f"/v1/jobs/{item.job_id}")).json()
        return
    assert item.job is not None
    if item.job["status"] != "SUCCEEDED":
        return
    fresh = [result for result in item.job["results"] if result["event"] in NEW_TEXT_EVENTS]
    if not fresh:
        item.search_note = "no new memory (nothing extracted, or only NOOP)"
        return
    target = fresh[0]
    search_deadline = time.perf_counter() + args.search_timeout
    while time.perf_counter() < search_deadline:
        found: httpx.Response | None = None
        with contextlib.suppress(httpx.HTTPError):
            found = await client.post("/v1/memories/search", json={
                "query": target["memory"], "user_id": item.user_id, "top_k": 10})
        if found is not None and found.status_code == 200 and target["id"] in {
                hit["id"] for hit in found.json()["results"]}:
            item.searchable = time.perf_counter()
            return
        await asyncio.sleep(0.1)
    item.search_note = f"memory {target['id']} not found by search within {args.search_timeout}s"


def job_error(item: Tracked) -> tuple[str, str]:
    error = (item.job or {}).get("error") or {}
    return str(error.get("code") or "unknown"), str(error.get("detail") or "")


def failure(item: Tracked) -> dict[str, Any]:
    if item.post_error:
        return {"episode": item.episode.label, "stage": "post", "code": item.post_error,
                "http_status": item.status_code}
    code, detail = job_error(item)
    return {"episode": item.episode.label, "stage": "job", "job_id": item.job_id, "code": code,
            "detail": detail[:300], "attempts": (item.job or {}).get("attempts")}


LOG_PATTERNS = {
    "llm_replies_rejected": re.compile(r"did not validate"),
    "llm_requests_timed_out": re.compile(r"failed \(no answer within"),
    "job_attempts_failed": re.compile(r"job \S+ attempt \d+ failed"),
    "jobs_failed": re.compile(r"job \S+ failed(: |$)"),
    "jobs_taken_over": re.compile(r"was taken over by another run"),
    "sweeper_requeues": re.compile(r"re-enqueueing"),
}


def log_counts(path: Path) -> dict[str, int]:
    """How often the started server logged each kind of consolidation trouble."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return {}
    return {name: sum(1 for line in lines
                      if ("WARNING" in line or "ERROR" in line) and pattern.search(line))
            for name, pattern in LOG_PATTERNS.items()}


def seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds()


async def run_anamnesis(base_url: str, api_key: str, episodes: list[Episode], tag: str,
                        args: argparse.Namespace, proxy: CountingProxy | None,
                        trust_env: bool) -> dict[str, Any]:
    before = proxy.snapshot() if proxy else None
    tracked: list[Tracked] = []
    watchers: list[asyncio.Task[None]] = []
    async with httpx.AsyncClient(base_url=base_url, trust_env=trust_env,
                                 headers={"Authorization": f"Bearer {api_key}"},
                                 timeout=httpx.Timeout(120.0, connect=10.0)) as client:
        first_sent = time.perf_counter()
        for episode in episodes:
            item = Tracked(episode, f"locomo-{episode.sample_id}-{tag}", time.perf_counter())
            tracked.append(item)
            try:
                response = await client.post("/v1/memories", json={
                    "messages": episode.messages, "user_id": item.user_id,
                    "observed_at": episode.observed_at.isoformat(),
                    "metadata": {"source": "bench", "episode": episode.label}})
            except httpx.HTTPError as exc:
                item.post_error = type(exc).__name__
                continue
            item.accepted, item.status_code = time.perf_counter(), response.status_code
            if response.status_code != 202:
                item.post_error = error_code(response)
                continue
            item.job_id = response.json()["job_id"]
            watchers.append(asyncio.create_task(follow_job(client, item, args)))
        progress(f"anamnesis: {len(watchers)} of {len(episodes)} episodes accepted; "
                 "waiting for their jobs")
        await asyncio.gather(*watchers)
    after = proxy.snapshot() if proxy else None

    accepted = [item for item in tracked if item.job_id]
    finished = [item for item in accepted if item.finished is not None]
    succeeded = [item for item in finished if item.job and item.job["status"] == "SUCCEEDED"]
    failed = [item for item in finished if item.job and item.job["status"] == "FAILED"]
    last = max((item.finished for item in finished if item.finished), default=None)
    wall = (last - first_sent) if last else None
    jobs = [item.job for item in accepted if item.job]
    events: Counter[str] = Counter({event: 0 for event in EVENTS})
    for item in succeeded:
        assert item.job is not None
        events.update(result["event"] for result in item.job["results"])
    samples = [result["memory"] for item in succeeded for result in (item.job or {})["results"]
               if result["event"] in NEW_TEXT_EVENTS][:SAMPLE_MEMORIES]
    failed_ids = {id(item) for item in failed}
    errors_by_code = Counter(item.post_error for item in tracked if item.post_error)
    errors_by_code.update(job_error(item)[0] for item in failed)
    return {
        "episodes": len(episodes),
        "accepted": len(accepted),
        "post_latency": seconds_summary([item.accepted - item.sent for item in tracked
                                         if item.accepted is not None]),
        "jobs": {"SUCCEEDED": len(succeeded), "FAILED": len(failed),
                 "unfinished": len(accepted) - len(finished)},
        "retried_jobs": sum(1 for job in jobs if job.get("attempts", 0) > 1),
        "wall_s": round(wall, 1) if wall else None,
        "episodes_per_minute": per_minute(len(succeeded), wall),
        "tokens_per_episode": {
            "prompt": number_summary([job["usage"]["prompt_tokens"] for job in jobs]),
            "completion": number_summary([job["usage"]["completion_tokens"] for job in jobs]),
        },
        "llm_calls_per_episode": number_summary([job["usage"]["llm_calls"] for job in jobs]),
        "latency": {
            "accepted_to_succeeded": seconds_summary(
                [item.finished - item.accepted for item in succeeded
                 if item.finished and item.accepted]),
            "accepted_to_searchable": seconds_summary(
                [item.searchable - item.accepted for item in succeeded
                 if item.searchable and item.accepted]),
            "server_queue_wait": seconds_summary([
                value for job in jobs
                if (value := seconds_between(job["created_at"], job["started_at"])) is not None]),
            "server_created_to_completed": seconds_summary([
                value for job in jobs
                if (value := seconds_between(job["created_at"], job["completed_at"]))
                is not None]),
        },
        "not_searchable": [{"job_id": item.job_id, "note": item.search_note}
                           for item in succeeded if item.searchable is None],
        "events": dict(events),
        "memories_per_episode": number_summary(
            [len([r for r in (item.job or {})["results"] if r["event"] in NEW_TEXT_EVENTS])
             for item in succeeded], 2),
        "errors_by_code": dict(errors_by_code),
        "failed": [failure(item) for item in tracked
                   if item.post_error or id(item) in failed_ids][:MAX_FAILURE_SAMPLES],
        "llm_traffic": after.minus(before).to_json() if after and before else None,
        "sample_memories": samples,
        "per_job": [job_row(item) for item in tracked][:MAX_JOB_ROWS],
    }


def job_row(item: Tracked) -> dict[str, Any]:
    """One line per episode: what its job did and cost (as last seen)."""
    job = item.job or {}
    usage = job.get("usage") or {}
    return {"episode": item.episode.label, "messages": len(item.episode.messages),
            "status": job.get("status") or item.post_error, "attempts": job.get("attempts"),
            "llm_calls": usage.get("llm_calls"), "prompt_tokens": usage.get("prompt_tokens"),
            "completion_tokens": usage.get("completion_tokens"),
            "events": dict(Counter(result["event"] for result in job.get("results") or [])),
            "accepted_to_finished_s": round(item.finished - item.accepted, 1)
            if item.finished and item.accepted else None,
            "error_code": (job.get("error") or {}).get("code")}
