"""Consolidation benchmark: LLM-distilled ingest of LoCoMo conversations, Anamnesis beside a peer.

Takes N episodes from the LoCoMo development conversations (a window of ``--turns`` turns of
one session each, dated by the session, one user per conversation), posts them to Anamnesis
(``infer: true``), follows every job to SUCCEEDED and then until a search finds one of its
memories, and reports episodes per minute, LLM tokens and calls per episode, 202→done and
202→searchable latencies, the event mix and failed jobs. The same episodes then go through a
peer on the same LLM server: Mem0 OSS (``pip install mem0ai``; skipped with a note when it is
not installed) or a naive single-prompt extraction. Prints one JSON document on stdout;
progress goes to stderr.

By default the benchmark starts the bundled model (``app.local_llm``, the one ``anamnesis
serve`` starts on its own) behind a small proxy that counts the tokens of every reply, and an
``anamnesis serve`` on the embedded defaults pointed at that proxy: one LLM server, shared in
turn, and token counts for peers that do not report them. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.consolidation_anamnesis import log_counts, run_anamnesis
from bench.consolidation_peers import mem0_installed, run_mem0, run_naive
from bench.llm_proxy import CountingProxy
from bench.locomo_data import default_data_path, number_summary, pick_episodes
from bench.managed_server import (
    ManagedServer,
    emit_report,
    machine_info,
    progress,
    rss_mb,
    set_progress_label,
)

# -- entry point ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Consolidate LoCoMo episodes with the LLM, Anamnesis beside a peer; "
                    "prints JSON on stdout.")
    parser.add_argument("--episodes", type=int, default=4, help="episodes to ingest (default 4)")
    parser.add_argument("--turns", type=int, default=8,
                        help="turns per episode: sessions are cut into windows of this many")
    parser.add_argument("--conversations", type=int, default=2,
                        help="LoCoMo conversations to take episodes from, in turn (one user each)")
    parser.add_argument("--data", type=Path, default=default_data_path(),
                        help="locomo_dev.json (default $LOCOMO_DEV or shared/data/locomo/)")
    parser.add_argument("--peer", action="append", choices=["auto", "mem0", "naive", "none"],
                        help="the system beside Anamnesis (repeatable); auto: mem0 when "
                             "installed, else naive")
    parser.add_argument("--base-url", help="a running Anamnesis; without it one is started")
    parser.add_argument("--api-key", default=os.environ.get("ANAMNESIS_API_KEY"),
                        help="key for --base-url (default $ANAMNESIS_API_KEY)")
    parser.add_argument("--llm-url", help="OpenAI-compatible …/v1 for the peer (and the started "
                        "server); default: start the bundled model")
    parser.add_argument("--llm-model", default=None,
                        help="model name sent to --llm-url (default: the bundled model's)")
    parser.add_argument("--llm-threads", type=int, default=None,
                        help="CPU threads of the bundled model (default: as the server, half "
                             "the cores)")
    parser.add_argument("--llm-context", type=int, default=16384,
                        help="context of the bundled model (default 16384: Mem0's prompt alone "
                             "is ~8k tokens)")
    parser.add_argument("--server-llm", choices=["shared", "own"], default="shared",
                        help="shared: the started server uses the benchmark's LLM server "
                             "(through the counting proxy); own: it starts its bundled model "
                             "itself, as with no configuration")
    parser.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment of the started server (repeatable)")
    parser.add_argument("--no-proxy", action="store_true",
                        help="talk to the LLM server directly (no token counts for peers)")
    parser.add_argument("--poll-interval", type=float, default=0.5,
                        help="seconds between job polls")
    parser.add_argument("--job-timeout", type=float, default=900.0,
                        help="seconds from 202 after which a job counts as unfinished")
    parser.add_argument("--search-timeout", type=float, default=30.0,
                        help="seconds after SUCCEEDED to wait for a memory to be searchable")
    parser.add_argument("--startup-timeout", type=float, default=600.0,
                        help="seconds to wait for a started server's /ready")
    parser.add_argument("--keep-data", action="store_true",
                        help="keep the temporary folder (server data, logs, peer state)")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    if args.episodes < 1 or args.turns < 2 or args.conversations < 1:
        parser.error("--episodes and --conversations must be positive, --turns at least 2")
    if args.data is None or not args.data.is_file():
        parser.error("LoCoMo data not found: pass --data PATH/locomo_dev.json (or $LOCOMO_DEV)")
    if args.base_url and not args.api_key:
        parser.error("--base-url needs --api-key (or $ANAMNESIS_API_KEY)")
    for item in args.server_env:
        if "=" not in item:
            parser.error(f"--server-env wants KEY=VALUE, got {item!r}")
    peers = args.peer or ["auto"]
    if "none" in peers:
        peers = []
    resolved: list[str] = []
    args.peer_notes = []
    for peer in peers:
        if peer == "auto":
            if mem0_installed():
                peer = "mem0"
            else:
                args.peer_notes.append("mem0ai is not installed (pip install mem0ai): the naive "
                                       "single-prompt baseline stands in for it")
                peer = "naive"
        if peer == "mem0" and not mem0_installed():
            args.peer_notes.append("mem0 skipped: mem0ai is not installed (pip install mem0ai)")
            continue
        if peer not in resolved:
            resolved.append(peer)
    args.peers = resolved
    return args


def main(argv: list[str] | None = None) -> int:
    set_progress_label("consolidation")
    args = parse_args(argv)
    started = time.perf_counter()
    samples = json.loads(args.data.read_text())
    episodes = pick_episodes(samples, args.episodes, args.turns, args.conversations)
    tag = uuid.uuid4().hex[:8]
    from app.config import LLMSettings
    from app.local_llm import MODEL_FILE, LocalLLM, default_threads

    llm_settings = LLMSettings(local_threads=args.llm_threads, local_context=args.llm_context)
    llm_model = args.llm_model or llm_settings.model
    report: dict[str, Any] = {
        "benchmark": "consolidation",
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "config": {
            "episodes": args.episodes, "turns_per_episode": args.turns,
            "conversations": args.conversations, "data": str(args.data), "peers": args.peers,
            "poll_interval_s": args.poll_interval, "job_timeout_s": args.job_timeout,
            "search_timeout_s": args.search_timeout, "server_llm": args.server_llm,
            "server_env": args.server_env, "proxy": not args.no_proxy,
        },
        "notes": args.peer_notes,
        "data": {
            "episodes": len(episodes),
            "users": len({episode.sample_id for episode in episodes}),
            "messages": sum(len(episode.messages) for episode in episodes),
            "messages_per_episode": number_summary(
                [float(len(episode.messages)) for episode in episodes]),
            "chars_per_episode": number_summary(
                [float(sum(len(m["content"]) for m in episode.messages)) for episode in episodes]),
            "episodes_used": [episode.label for episode in episodes],
        },
    }
    workdir = Path(tempfile.mkdtemp(prefix="anamnesis-bench-consolidation-"))
    workdir.chmod(0o755)
    local: LocalLLM | None = None
    proxy: CountingProxy | None = None
    server: ManagedServer | None = None
    server_stopped = False
    try:
        if args.llm_url:
            llm_url = args.llm_url
            report["llm"] = {"base_url": llm_url, "managed": False, "model": llm_model}
        else:
            local = LocalLLM(workdir / "llm", llm_settings, start_timeout_s=args.startup_timeout)
            progress("starting the bundled LLM (the first start assembles its model file)")
            began = time.perf_counter()
            llm_url = local.start()
            report["llm"] = {"base_url": llm_url, "managed": True, "model": llm_model,
                             "model_file": MODEL_FILE,
                             "threads": args.llm_threads or default_threads(),
                             "context": args.llm_context,
                             "startup_s": round(time.perf_counter() - began, 1)}
        if not args.no_proxy and not llm_url.startswith("http://"):
            report["notes"].append("no token-counting proxy: it forwards to http:// only")
        elif not args.no_proxy:
            proxy = CountingProxy(llm_url)
            proxy.start()
            llm_url = proxy.base_url
            report["llm"]["proxy_url"] = llm_url

        if args.base_url:
            base_url, api_key = args.base_url, args.api_key
            report["server"] = {"base_url": base_url, "managed": False,
                                "llm": "whatever that server is configured with"}
            server_proxy = None
        else:
            env = dict(item.split("=", 1) for item in args.server_env)
            if args.server_llm == "shared":
                env.setdefault("ANAMNESIS_LLM__BASE_URL", llm_url)
                env.setdefault("ANAMNESIS_LLM__MODEL", llm_model)
            server = ManagedServer(args.startup_timeout, args.keep_data, env=env)
            server.start()
            base_url = server.base_url
            api_key = server.create_key(f"bench-consolidation-{tag}")
            report["server"] = {
                "base_url": base_url, "managed": True, "pid": server.pid,
                "startup_s": server.startup_s, "rss_mb_at_ready": rss_mb(server.pid),
                "llm": ("the benchmark's LLM server, through the proxy"
                        if args.server_llm == "shared"
                        else "its own bundled model, started on the first job")}
            server_proxy = proxy if args.server_llm == "shared" else None

        systems: dict[str, Any] = {}
        progress(f"anamnesis: posting {len(episodes)} episodes")
        systems["anamnesis"] = asyncio.run(run_anamnesis(
            base_url, api_key, episodes, tag, args, server_proxy, trust_env=server is None))
        if server is not None:
            systems["anamnesis"]["server_rss_mb_after"] = rss_mb(server.pid)
            systems["anamnesis"]["server_log"] = log_counts(server.log_path)
            # Jobs still running would compete with the peer for the LLM: stop the server
            # (the proxy passes the disconnect on, and llama.cpp drops the generation).
            server.stop()
            server_stopped = True
        progress(f"anamnesis: {systems['anamnesis']['episodes_per_minute']} episodes/min")
        for peer in args.peers:
            progress(f"{peer}: {len(episodes)} episodes")
            if peer == "mem0":
                systems["mem0"] = run_mem0(episodes, tag, llm_url, llm_model, proxy, workdir)
            else:
                systems["naive"] = run_naive(episodes, llm_url, llm_model, proxy)
            progress(f"{peer}: {systems[peer]['episodes_per_minute']} episodes/min")
        report["systems"] = systems
        report["side_by_side"] = side_by_side(systems)
    finally:
        if server is not None and not server_stopped:
            server.stop()
        if proxy is not None:
            proxy.stop()
        if local is not None:
            local.stop()
        if args.keep_data:
            progress(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report["duration_s"] = round(time.perf_counter() - started, 1)
    emit_report(report, args.out)
    return 0


def side_by_side(systems: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of every system, one row each."""
    table: dict[str, Any] = {}
    for name, result in systems.items():
        tokens = result.get("tokens_per_episode") or {}
        latency = result.get("latency") or {}
        searchable = (latency.get("accepted_to_searchable") or latency.get("add_to_searchable")
                      or {})
        table[name] = {
            "episodes_per_minute": result.get("episodes_per_minute"),
            "prompt_tokens_per_episode_mean": (tokens.get("prompt") or {}).get("mean"),
            "completion_tokens_per_episode_mean": (tokens.get("completion") or {}).get("mean"),
            "llm_calls_per_episode_mean": (result.get("llm_calls_per_episode") or {}).get("mean"),
            "searchable_p50_s": searchable.get("p50_s"),
            "searchable_p95_s": searchable.get("p95_s"),
        }
    return table


if __name__ == "__main__":
    sys.exit(main())
