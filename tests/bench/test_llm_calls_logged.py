"""The line the LLM client logs for each call is the one the consolidation benchmark reads to
split a job's time and tokens by step."""

from __future__ import annotations

import io
import logging
import statistics
from pathlib import Path

from pydantic import BaseModel

from app.config import Settings
from app.llm import ChatMessage, OpenAICompatibleClient
from app.logs import configure_logging
from bench.managed_server import llm_calls_logged
from tests.scripted_llm import Reply, ScriptedLLM


class Facts(BaseModel):
    facts: list[str]


class Entities(BaseModel):
    names: list[str]


async def test_each_call_is_read_back_by_its_kind(scripted_llm: ScriptedLLM,
                                                  tmp_path: Path) -> None:
    stream = io.StringIO()
    handler = configure_logging(Settings(log_format="text", log_level="INFO"), stream)
    scripted_llm.script(Reply.json(Facts(facts=["Dana lives in Oslo"])),
                        Reply(content="not json at all"),  # re-asked: two replies, one call
                        Reply.json(Facts(facts=["Dana works at Equinor"])),
                        Reply.json(Entities(names=["Dana", "Oslo"])))
    client = OpenAICompatibleClient(scripted_llm.base_url, "test-model", max_output_retries=1,
                                    backoff_base_s=0.01, timeout_s=5.0)
    messages: list[ChatMessage] = [{"role": "user", "content": "Hi, I'm Dana."}]
    try:
        await client.complete(messages, Facts, prompt_version="extract/v9")
        await client.complete(messages, Facts, prompt_version="extract/v9")
        await client.complete(messages, Entities, prompt_version="graph/v2")
    finally:
        await client.aclose()
        logging.getLogger().removeHandler(handler)
    log = tmp_path / "server.log"
    log.write_text("an earlier line\n" + stream.getvalue())
    usage = [request.response["usage"] for request in scripted_llm.requests
             if request.response is not None]

    calls = llm_calls_logged(log, 0)

    assert set(calls) == {"Facts extract/v9", "Entities graph/v2"}
    extract = calls["Facts extract/v9"]
    assert extract["calls"] == 2
    assert extract["replies"] == {"mean": 1.5, "p50": 1.5}
    per_call = [usage[0]["completion_tokens"],
                usage[1]["completion_tokens"] + usage[2]["completion_tokens"]]
    assert extract["completion_tokens"]["mean"] == round(statistics.fmean(per_call), 2)
    assert calls["Entities graph/v2"]["prompt_tokens"]["p50"] == usage[3]["prompt_tokens"]
    assert all(kind["seconds"]["mean"] >= 0 for kind in calls.values())
    assert llm_calls_logged(log, log.stat().st_size) == {}
