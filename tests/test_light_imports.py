"""The index's device scan and the embedder import, and ``bench.gpu`` runs, without the web and
database stack: a lent GPU machine has torch, sentence-transformers and numpy but no faiss,
Postgres driver, FastAPI or pydantic. Run in a child Python whose import system refuses
those packages as if they were not installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BLOCKED = ("pydantic", "pydantic_core", "pydantic_settings", "fastapi", "starlette",
           "sqlalchemy", "asyncpg", "alembic", "faiss", "uvicorn", "platformdirs", "celery",
           "redis", "neo4j")

# Put before the code the child runs: any import of a blocked package fails as a missing one.
BLOCKER = f"""
import importlib.abc, sys
BLOCKED = {BLOCKED!r}
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
        return None
sys.meta_path.insert(0, Refuse())
"""


def child(code: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BLOCKER + code, *args], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=timeout, check=False)


def test_the_blocker_blocks() -> None:
    done = child("import pydantic")
    assert done.returncode != 0
    assert "blocked" in done.stderr


def test_the_scan_and_the_embedder_import_without_the_stack() -> None:
    done = child("""
import numpy as np
import app.embeddings, app.index.device, bench.gpu
from app.index.device import Batcher, DeviceVectors
device = DeviceVectors(8, "cpu")
device.add(np.eye(8, dtype=np.float32))
device.remove([3])
[(slots, _)] = device.search_many(np.eye(8, dtype=np.float32)[3:4] + 0.1, 2, [None])
assert 3 not in slots.tolist(), slots
print(sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED))
""")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_bench_gpu_runs_the_query_path_without_the_stack() -> None:
    """Small and on the CPU; the numbers are not checked, only that text goes in and ten
    memories come out, the same ten an fp32 brute force finds."""
    done = child("import runpy; sys.argv[0] = 'bench.gpu'; "
                 "runpy.run_module('bench.gpu', run_name='__main__')",
                 "--n", "600", "--device", "cpu", "--corpus", "random", "--queries", "3",
                 "--batches", "1", "4", "--exact-checks", "3", "--users", "3")
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["device"] == "cpu"
    assert report["load"]["uploaded_rows"] == 600
    assert report["load"]["scan"].startswith("torch exact scan on cpu")
    assert report["single"]["unfiltered"]["queries"] == 3
    assert [row["clients"] for row in report["micro_batches"]] == [1, 4]
    assert report["recall_at_10_vs_fp32_exact"] == {"unfiltered": 1.0, "scoped": 1.0}
