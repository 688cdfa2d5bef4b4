"""Bulk import beside the add path, in one run on one server: `anamnesis import` of N memories
with their vectors, of M memories without (the import embeds them), of K memories with the
pgvector index kept in place, the same M texts added through `POST /v1/memories`
(`infer: false`, batches of 50), a resumed import (everything already there) and
`anamnesis export`. Prints one JSON document.

Files are shaped like an export of `infer: false` adds: per memory a `memory`, a `source`
and an `event` line, one `episode` per 50 messages. The vectors of the with-vectors file are
random unit vectors named as the server's model, so the import takes them as given (their
meaning does not matter to its speed); the without-vectors file is embedded for real.

    .venv/bin/python -m bench.transfer --n 100000 --out bench/results/transfer.json
    .venv/bin/python -m bench.transfer --n 5000 --n-embed 500 --n-keep 500   # quick check
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.managed_server import (
    REPO_ROOT,
    ManagedServer,
    anamnesis_command,
    emit_report,
    machine_info,
    progress,
    rss_mb,
    set_progress_label,
)
from bench.synthetic import TOPICS, add_requests, memory_text

MODEL, DIMENSION = "all-MiniLM-L6-v2", 384
PER_EPISODE = 50
USERS = [f"user-{index}" for index in range(10)]


def write_export(path: Path, n: int, *, vectors: bool, seed: int) -> dict[str, Any]:
    """An export-shaped file of ``n`` memories; returns its size and line count."""
    rng, vector_rng = random.Random(seed), np.random.default_rng(seed)
    base = datetime(2025, 1, 1, tzinfo=UTC)
    lines = 0
    with path.open("wb") as out:
        def put(record: dict[str, Any]) -> None:
            nonlocal lines
            out.write(json.dumps(record, separators=(",", ":")).encode() + b"\n")
            lines += 1

        put({"record": "header", "format": "anamnesis.export", "version": 1,
             "project": {"id": None, "name": "bench"},
             "embedding": {"model": MODEL, "dimension": DIMENSION,
                           "encoding": "f32le-base64"}})
        episodes, memories = [], []
        for start in range(0, n, PER_EPISODE):
            size = min(PER_EPISODE, n - start)
            user = USERS[(start // PER_EPISODE) % len(USERS)]
            topic = TOPICS[(start // PER_EPISODE) % len(TOPICS)]
            when = base + timedelta(minutes=start)
            texts = [memory_text(rng, topic) for _ in range(size)]
            episode = str(uuid.uuid4())
            episodes.append({"record": "episode", "id": episode, "user_id": user,
                             "messages": [{"role": "user", "content": t} for t in texts],
                             "metadata": {"topic": topic, "source": "bench"},
                             "observed_at": when.isoformat(), "created_at": when.isoformat()})
            block = vector_rng.standard_normal((size, DIMENSION)).astype("<f4")
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            for index, text in enumerate(texts):
                memory = {"record": "memory", "id": str(uuid.uuid4()), "kind": "message",
                          "user_id": user, "text": text,
                          "metadata": {"topic": topic, "source": "bench", "role": "user",
                                       "message_index": index},
                          "created_at": when.isoformat(), "valid_at": when.isoformat()}
                if vectors:
                    memory["embedding_model"] = MODEL
                    memory["embedding"] = base64.b64encode(block[index].tobytes()).decode()
                memories.append((memory, episode, index))
        for episode in episodes:
            put(episode)
        for memory, _, _ in memories:
            put(memory)
        for memory, episode, index in memories:
            put({"record": "source", "memory_id": memory["id"], "episode_id": episode,
                 "message_indices": [index]})
        for memory, _, _ in memories:
            put({"record": "event", "id": str(uuid.uuid4()), "memory_id": memory["id"],
                 "event": "ADD", "new_memory": memory["text"],
                 "new_metadata": memory["metadata"], "created_at": memory["created_at"]})
    return {"path": str(path), "bytes": path.stat().st_size, "lines": lines}


def run_cli(server: ManagedServer, *argv: str) -> tuple[float, str]:
    """Runs ``anamnesis ARGV`` on the server's data directory: (wall seconds, stdout)."""
    began = time.perf_counter()
    result = subprocess.run([*anamnesis_command(), *argv], cwd=REPO_ROOT, env=server.env,
                            capture_output=True, text=True, check=False, timeout=6 * 3600)
    wall = time.perf_counter() - began
    if result.returncode != 0:
        raise RuntimeError(f"anamnesis {' '.join(argv)} failed ({result.returncode}):\n"
                           f"{result.stderr[-3000:]}")
    return wall, result.stdout


def timed_import(server: ManagedServer, path: Path, project: str, n: int,
                 *options: str) -> dict[str, Any]:
    progress(f"anamnesis import {path.name} --project {project} {' '.join(options)}")
    wall, out = run_cli(server, "import", str(path), "--project", project, "--json", *options)
    receipt = json.loads(out)
    busy = receipt["check_s"] + receipt["write_s"] + receipt["index_s"]
    result = {
        "n": n, "wall_s": round(wall, 2), "check_s": receipt["check_s"],
        "write_s": receipt["write_s"], "index_s": receipt["index_s"],
        "vector_index_set_aside": receipt["vector_index_set_aside"],
        "memories_per_s": round(n / busy, 1) if busy else None,
        "memories_per_s_wall": round(n / wall, 1),
        "vectors_given": receipt["vectors_given"],
        "vectors_embedded": receipt["vectors_embedded"],
        "memory": receipt["records"]["memory"],
    }
    progress(f"  {result}")
    return result


def index_lag(client: httpx.Client) -> int | None:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("anamnesis_index_lag_changes"):
            return int(float(line.split()[-1]))
    return None


def wait_for_index(server: ManagedServer, timeout_s: float = 3600) -> float | None:
    """Seconds until the server's search index has read every change (its lag is 0)."""
    began = time.perf_counter()
    with httpx.Client(base_url=server.base_url, timeout=30, trust_env=False) as client:
        while time.perf_counter() - began < timeout_s:
            lag = index_lag(client)
            if lag == 0:
                return round(time.perf_counter() - began, 2)
            time.sleep(0.5)
    return None


def http_baseline(server: ManagedServer, n: int, seed: int) -> dict[str, Any]:
    key = server.create_key("baseline-http")
    requests = add_requests(n, PER_EPISODE, USERS, seed)
    progress(f"POST /v1/memories: {n} messages in {len(requests)} requests, 4 at a time")
    began = time.perf_counter()
    with httpx.Client(base_url=server.base_url, timeout=600, trust_env=False,
                      headers={"Authorization": f"Bearer {key}"}) as client:
        def send(body: dict[str, Any]) -> int:
            response = client.post("/v1/memories", json=body)
            response.raise_for_status()
            return len(response.json()["results"])

        with ThreadPoolExecutor(4) as pool:
            stored = sum(pool.map(send, [request.body() for request in requests]))
    wall = time.perf_counter() - began
    return {"n": stored, "wall_s": round(wall, 2), "memories_per_s": round(stored / wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="memories with vectors")
    parser.add_argument("--n-embed", type=int, default=2000,
                        help="memories without vectors (embedded by the import), and the "
                        "same number added over HTTP as the baseline")
    parser.add_argument("--n-keep", type=int, default=5000,
                        help="memories with vectors imported with the pgvector index kept")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--keep-data", action="store_true")
    parser.add_argument("--startup-timeout", type=float, default=600)
    args = parser.parse_args()
    set_progress_label("transfer")

    server = ManagedServer(args.startup_timeout, args.keep_data)
    report: dict[str, Any] = {"machine": machine_info(), "config": vars(args) | {
        "out": str(args.out) if args.out else None, "model": MODEL,
        "per_episode": PER_EPISODE, "vectors": "random unit vectors named as the model"}}
    try:
        server.start()
        files = server.root / "files"
        files.mkdir()
        progress(f"writing export files under {files}")
        made = {
            "vectors": write_export(files / "vectors.ndjson", args.n, vectors=True,
                                    seed=args.seed),
            "keep": write_export(files / "keep.ndjson", args.n_keep, vectors=True,
                                 seed=args.seed + 1),
            "embed": write_export(files / "embed.ndjson", args.n_embed, vectors=False,
                                  seed=args.seed + 2),
        }
        report["files"] = made
        runs: dict[str, Any] = {}
        runs["http_add_baseline"] = http_baseline(server, args.n_embed, args.seed + 2)
        runs["import_without_vectors"] = timed_import(
            server, files / "embed.ndjson", "import-embed", args.n_embed,
            "--vector-index", "keep")
        runs["import_with_vectors_index_kept"] = timed_import(
            server, files / "keep.ndjson", "import-keep", args.n_keep, "--vector-index", "keep")
        runs["import_with_vectors"] = timed_import(
            server, files / "vectors.ndjson", "import-vectors", args.n)
        runs["import_with_vectors"]["server_index_caught_up_s"] = wait_for_index(server)
        runs["import_resumed"] = timed_import(
            server, files / "vectors.ndjson", "import-vectors", args.n, "--vector-index",
            "keep")
        progress("anamnesis export --project import-vectors")
        exported = files / "exported.ndjson"
        wall, _ = run_cli(server, "export", "--project", "import-vectors", "-o", str(exported))
        runs["export"] = {"n": args.n, "wall_s": round(wall, 2),
                          "memories_per_s_wall": round(args.n / wall, 1),
                          "bytes": exported.stat().st_size}
        report["server_rss_mb"] = rss_mb(server.pid)
        report["runs"] = runs
        report["extrapolated_1m"] = extrapolate(runs["import_with_vectors"],
                                                runs["import_without_vectors"])
    finally:
        server.stop()
    emit_report(report, args.out)


def extrapolate(with_vectors: dict[str, Any], without: dict[str, Any]) -> dict[str, Any]:
    """A million at the measured rates: checking and writing grow linearly; the HNSW build
    grows as n log n while its graph fits in --index-memory (past that it is slower)."""
    n = with_vectors["n"]
    scale = 1_000_000 / n
    linear = (with_vectors["check_s"] + with_vectors["write_s"]) * scale
    index = with_vectors["index_s"] * scale * (np.log(1_000_000) / np.log(max(n, 2)))
    embed_rate = without["n"] / (without["check_s"] + without["write_s"])
    return {"with_vectors_check_and_write_s": round(linear, 1),
            "with_vectors_index_build_s_estimate": round(index, 1),
            "with_vectors_total_s": round(linear + index, 1),
            "without_vectors_texts_per_s": round(embed_rate, 1),
            "without_vectors_total_s": round(1_000_000 / embed_rate, 1)}


if __name__ == "__main__":
    main()
