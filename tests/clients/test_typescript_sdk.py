"""The TypeScript SDK (``clients/typescript``): its own tests, node's test runner, against the
live server; and the check that its checked-in OpenAPI schema is the app's.

The node tests need the server's LLM to answer consolidation by a known script; this wrapper
scripts it (the ``Brain`` of the other tests) and tells the node tests which messages it
knows through ``ANAMNESIS_TEST_SCRIPT``. Node and npm are prerequisites (``scripts/dev``
installs them): without them these tests fail, they do not skip.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from app import openapi_dump
from app.config import LimitSettings, Settings
from app.embeddings import SentenceTransformerEmbedder
from tests.conftest import LiveServer, serve
from tests.consolidate.scripted_brain import Brain, FactSpec, ends
from tests.graph.test_graph_pipeline import graph_of
from tests.scripted_llm import Reply, Scriptable, ScriptedLLM

KeyFactory = Callable[..., Awaitable[str]]
SDK = Path(__file__).resolve().parents[2] / "clients" / "typescript"
REGENERATE = ("cd clients/typescript && PYTHON=<the project's python> npm run generate, "
              "then commit openapi.json and src/schema.ts")
# Marks the lock file node_modules was installed from, so `npm ci` runs only when it changed.
INSTALLED_LOCK = SDK / "node_modules" / ".anamnesis-lock.sha256"

FACT = {"message": "I like jazz", "fact": "User likes jazz"}
FAILS = "Please remember this in a way you cannot."
SLOW = {"message": "Take your time with this one.", "delayMs": 1500}
LIMITED = 2
GRAPH = [
    ({"message": "My sister Melanie lives in Paris since June 2023.",
      "observedAt": "2024-01-10T10:00:00Z"},
     [FactSpec("User's sister is Melanie"), FactSpec("Melanie lives in Paris", "since June 2023")]),
    ({"message": "Mel moved to Berlin on 20 February, she works at Siemens now.",
      "observedAt": "2024-03-01T10:00:00Z"},
     [FactSpec("Melanie lives in Berlin", "on 20 February"), FactSpec("Melanie works at Siemens")]),
    ({"message": "I miss the bakeries of Paris.", "observedAt": "2024-05-01T10:00:00Z"},
     [FactSpec("User likes the bakeries of Paris")]),
]


def test_the_checked_in_schema_is_the_servers(tmp_path: Path) -> None:
    """A server change that touches the API must regenerate the SDK's types."""
    dumped = tmp_path / "openapi.json"
    assert openapi_dump.main([str(dumped)]) == 0
    current = dumped.read_text(encoding="utf-8")
    checked_in = (SDK / "openapi.json").read_text(encoding="utf-8")
    assert current == checked_in, f"clients/typescript/openapi.json is stale: {REGENERATE}"


@pytest.fixture
def limited_server(settings: Settings,
                   embedder: SentenceTransformerEmbedder) -> Iterator[LiveServer]:
    """Another live server on the same database, letting a key make LIMITED requests a
    minute."""
    limits = LimitSettings(key_requests=LIMITED, window_s=60)
    with serve(settings.model_copy(update={"limits": limits}), embedder) as server:
        yield server


def _require_node() -> None:
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"{' and '.join(missing)} not found: the TypeScript SDK's tests need Node.js "
                    ">= 18 and npm (Debian: apt-get install nodejs npm; scripts/dev "
                    "test_prerequisites installs them)")


def _npm(*args: str, env: dict[str, str] | None = None) -> str:
    """Run ``npm args`` in the SDK and return its output; fail the test with the output
    unless it exits 0."""
    done = subprocess.run(["npm", *args], cwd=SDK, env=env, capture_output=True, text=True,
                          timeout=900, check=False)
    if done.returncode != 0:
        pytest.fail(f"npm {' '.join(args)} exited {done.returncode}\n--- stdout\n{done.stdout}"
                    f"\n--- stderr\n{done.stderr}", pytrace=False)
    return done.stdout


def _install() -> None:
    """``npm ci`` when node_modules is missing or was installed from another lock file."""
    lock = hashlib.sha256((SDK / "package-lock.json").read_bytes()).hexdigest()
    if INSTALLED_LOCK.is_file() and INSTALLED_LOCK.read_text() == lock:
        return
    _npm("ci", "--no-audit", "--no-fund")
    INSTALLED_LOCK.write_text(lock)


def _script(brain: Brain, scripted_llm: ScriptedLLM) -> dict[str, Any]:
    """Sets the server's LLM to answer the node tests' messages; returns what they need to
    know of it."""
    brain.facts = {FACT["message"]: [FACT["fact"]],
                   **{said["message"]: facts for said, facts in GRAPH}}
    brain.still_true = ends(("Melanie lives in Berlin", "Melanie lives in Paris"))
    brain.graph = graph_of

    def answer(body: dict[str, Any]) -> Scriptable:
        prompt = next(m["content"] for m in body["messages"] if m["role"] == "user")
        if FAILS in prompt:
            return "this is not JSON"
        if SLOW["message"] in prompt:
            return Reply.slow(SLOW["delayMs"] / 1000, json.dumps({"facts": []}))
        return brain(body)

    scripted_llm.responder = answer
    return {"fact": FACT, "fails": FAILS, "slow": SLOW, "graph": [said for said, _ in GRAPH]}


async def test_the_typescript_sdk_passes_its_tests_against_the_live_server(
    live_server: LiveServer, limited_server: LiveServer, api_key_factory: KeyFactory,
    brain: Brain, scripted_llm: ScriptedLLM
) -> None:
    _require_node()
    await asyncio.to_thread(_install)
    await asyncio.to_thread(_npm, "run", "check-generated")
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("ANAMNESIS_")}
    limited = {"url": limited_server.base_url, "apiKey": await api_key_factory(),
               "requests": LIMITED}
    env.update(ANAMNESIS_URL=live_server.base_url, ANAMNESIS_API_KEY=await api_key_factory(),
               ANAMNESIS_TEST_SCRIPT=json.dumps({**_script(brain, scripted_llm),
                                                 "limited": limited}))
    report = await asyncio.to_thread(_npm, "test", env=env)  # builds the SDK first (pretest)
    # Scripted, every node test runs: none is skipped for want of ANAMNESIS_TEST_SCRIPT.
    assert "\n# skipped 0\n" in report, report
