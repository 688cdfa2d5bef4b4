"""The OpenAI-compatible client against a real HTTP server with scripted replies."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from pydantic import BaseModel, Field, SecretStr

from app.config import LLMSettings
from app.errors import (
    LLMOutputError,
    LLMRateLimited,
    LLMRequestRejected,
    LLMUnavailable,
)
from app.llm import RUNAWAY_REQUEST, ChatMessage, Completion, OpenAICompatibleClient, Usage
from app.llm_output import parse_output, strict_schema
from tests.scripted_llm import Reply, ScriptedLLM

ClientFactory = Callable[..., OpenAICompatibleClient]
MESSAGES: list[ChatMessage] = [
    {"role": "system", "content": "Extract durable facts as JSON."},
    {"role": "user", "content": "I live in Paris and I have a cat called Mimi."},
]


class Fact(BaseModel):
    text: str
    source_indices: list[int]
    valid_from: str | None = None


class Extraction(BaseModel):
    facts: list[Fact]


GOOD = Extraction(facts=[Fact(text="Lives in Paris", source_indices=[1]),
                         Fact(text="Has a cat called Mimi", source_indices=[1])])


@pytest.fixture
async def make_client(scripted_llm: ScriptedLLM) -> AsyncIterator[ClientFactory]:
    """Clients of the scripted server with tiny backoff; closed after the test."""
    clients: list[OpenAICompatibleClient] = []

    def build(**overrides: Any) -> OpenAICompatibleClient:
        options: dict[str, Any] = {"max_attempts": 3, "max_output_retries": 2,
                                   "backoff_base_s": 0.01, "timeout_s": 5.0, **overrides}
        client = OpenAICompatibleClient(scripted_llm.base_url, "test-model", **options)
        clients.append(client)
        return client

    yield build
    for client in clients:
        await client.aclose()


def reply_usage(scripted_llm: ScriptedLLM, which: list[int] | None = None) -> Usage:
    """What the server reported, summed over every completion it sent (or those of the
    requests numbered ``which``)."""
    total = Usage()
    for number, request in enumerate(scripted_llm.requests):
        if request.response is not None and (which is None or number in which):
            usage = request.response["usage"]
            total += Usage(usage["prompt_tokens"], usage["completion_tokens"])
    return total


async def test_valid_json_becomes_the_model(scripted_llm: ScriptedLLM,
                                            make_client: ClientFactory) -> None:
    scripted_llm.reported_model = "test-model-2025-01"
    scripted_llm.script(GOOD)

    completion = await make_client().complete(MESSAGES, Extraction, prompt_version="extract-v1")

    assert completion.value == GOOD
    assert completion.attempts == 1
    assert completion.model == "test-model-2025-01"
    assert completion.prompt_version == "extract-v1"
    assert completion.usage == reply_usage(scripted_llm)
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.total_tokens == (completion.usage.prompt_tokens
                                             + completion.usage.completion_tokens)


async def test_request_asks_for_the_json_schema(scripted_llm: ScriptedLLM,
                                                make_client: ClientFactory) -> None:
    scripted_llm.script(GOOD)

    await make_client(temperature=0.3, max_tokens=256).complete(MESSAGES, Extraction)

    [request] = scripted_llm.requests
    body = request.body
    assert body["model"] == "test-model"
    assert body["temperature"] == 0.3
    assert body["max_tokens"] == 256
    assert body["messages"] == MESSAGES
    response_format = body["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["name"] == "Extraction"
    assert response_format["json_schema"]["strict"] is True
    schema = response_format["json_schema"]["schema"]
    assert schema["required"] == ["facts"]
    assert schema["additionalProperties"] is False
    fact = schema["$defs"]["Fact"]
    assert fact["required"] == ["text", "source_indices", "valid_from"]
    assert fact["additionalProperties"] is False
    assert "default" not in fact["properties"]["valid_from"]
    assert "authorization" not in request.headers


async def test_api_key_sent_as_bearer_token(scripted_llm: ScriptedLLM) -> None:
    settings = LLMSettings(base_url=scripted_llm.base_url, api_key=SecretStr("sk-test-key"),
                           model="configured-model")
    client = OpenAICompatibleClient.from_settings(settings)
    scripted_llm.script(GOOD)
    try:
        await client.complete(MESSAGES, Extraction)
    finally:
        await client.aclose()

    [request] = scripted_llm.requests
    assert request.headers["authorization"] == "Bearer sk-test-key"
    assert request.body["model"] == "configured-model"
    assert "sk-test-key" not in repr(client)


async def test_from_settings_takes_the_given_base_url(scripted_llm: ScriptedLLM) -> None:
    client = OpenAICompatibleClient.from_settings(LLMSettings(),
                                                  base_url=scripted_llm.base_url + "/")
    scripted_llm.script(GOOD)
    try:
        completion = await client.complete(MESSAGES, Extraction)
    finally:
        await client.aclose()
    assert completion.value == GOOD
    with pytest.raises(ValueError, match="base_url"):
        OpenAICompatibleClient.from_settings(LLMSettings())


@pytest.mark.parametrize("content", [
    f"```json\n{GOOD.model_dump_json(indent=2)}\n```",
    f"Here are the facts:\n```\n{GOOD.model_dump_json()}\n```\nAnything else?",
    f"Sure! {GOOD.model_dump_json()}",
])
async def test_fenced_or_wrapped_json_is_accepted(scripted_llm: ScriptedLLM,
                                                  make_client: ClientFactory,
                                                  content: str) -> None:
    scripted_llm.script(content)

    completion = await make_client().complete(MESSAGES, Extraction)

    assert completion.value == GOOD
    assert completion.attempts == 1


@pytest.mark.parametrize(("bad", "error_text"), [
    ("I think the user lives in Paris.", "Invalid JSON"),
    ('{"facts": [{"text": "Lives in Paris"}]}', "facts.0.source_indices: Field required"),
])
async def test_bad_output_is_re_asked_with_the_error(scripted_llm: ScriptedLLM,
                                                     make_client: ClientFactory,
                                                     bad: str, error_text: str) -> None:
    scripted_llm.script(bad, GOOD)

    completion = await make_client().complete(MESSAGES, Extraction)

    assert completion.value == GOOD
    assert completion.attempts == 2
    first, second = scripted_llm.requests
    assert second.messages[: len(MESSAGES)] == MESSAGES
    assistant, correction = second.messages[len(MESSAGES):]
    assert assistant == {"role": "assistant", "content": bad}
    assert correction["role"] == "user"
    assert error_text in correction["content"]
    assert second.body["response_format"] == first.body["response_format"]
    assert completion.usage == reply_usage(scripted_llm)
    assert first.response is not None
    assert completion.usage.prompt_tokens > first.response["usage"]["prompt_tokens"]


async def test_output_that_stays_bad_fails_with_the_error(scripted_llm: ScriptedLLM,
                                                          make_client: ClientFactory) -> None:
    scripted_llm.script(*['{"facts": "none"}'] * 4)

    with pytest.raises(LLMOutputError) as caught:
        await make_client(max_output_retries=2).complete(MESSAGES, Extraction)

    assert len(scripted_llm.requests) == 3
    assert scripted_llm.pending == 1
    error = caught.value
    assert (error.status_code, error.code) == (502, "llm_bad_output")
    assert "Extraction" in error.detail
    assert "facts: Input should be a valid array" in error.detail
    spent = reply_usage(scripted_llm)
    assert (error.prompt_tokens, error.completion_tokens) == (spent.prompt_tokens,
                                                              spent.completion_tokens)


async def test_truncated_output_says_so(scripted_llm: ScriptedLLM,
                                        make_client: ClientFactory) -> None:
    scripted_llm.script(Reply(content='{"facts": [{"te', finish_reason="length"))

    with pytest.raises(LLMOutputError, match="cut off at max_tokens"):
        await make_client(max_output_retries=0).complete(MESSAGES, Extraction)


def assert_asked_again_briefly(scripted_llm: ScriptedLLM, completion: Completion[Any]) -> None:
    """One runaway, then the answer: asked again from the start with a request to be
    brief, at a higher temperature."""
    assert (completion.attempts, completion.truncated) == (2, 1)
    first, second = scripted_llm.requests
    assert second.messages == [*MESSAGES, {"role": "user", "content": RUNAWAY_REQUEST}]
    assert second.body["temperature"] > first.body["temperature"]


async def test_a_runaway_is_asked_again_once_from_the_start(
        scripted_llm: ScriptedLLM, make_client: ClientFactory) -> None:
    """A reply cut at max_tokens is not sent back (it is long and wrong): the call starts
    over with a request to be brief, at a higher temperature."""
    scripted_llm.script(Reply(content='{"facts": [{"text": "Lives in Paris Lives in Paris',
                              finish_reason="length"), GOOD)

    completion = await make_client().complete(MESSAGES, Extraction)

    assert completion.value == GOOD
    assert_asked_again_briefly(scripted_llm, completion)


async def test_a_second_runaway_ends_the_call(scripted_llm: ScriptedLLM,
                                              make_client: ClientFactory) -> None:
    """Never paid for a third time, whatever max_output_retries allows."""
    runaway = Reply(content='{"facts": [{"te', finish_reason="length")
    scripted_llm.script(runaway, runaway, GOOD)

    with pytest.raises(LLMOutputError, match="cut off at max_tokens") as caught:
        await make_client(max_output_retries=2).complete(MESSAGES, Extraction)

    assert len(scripted_llm.requests) == 2
    assert (caught.value.replies, caught.value.truncated) == (2, 2)
    assert scripted_llm.pending == 1


LOOPING_FACT = '{"text": "Lives in Paris with a cat called Mimi", "source_indices": [1]}, '
FIRST_FACT = '{"text": "Has a cat", "source_indices": [1]}, '


async def test_a_reply_that_repeats_itself_is_cut_there_and_what_came_before_kept(
        scripted_llm: ScriptedLLM, make_client: ClientFactory) -> None:
    """The reply streams; once an item has come back a third time the client stops reading
    (the connection closes, a llama.cpp server stops generating) and keeps each item said
    before, once, instead of paying for the rest of the loop up to max_tokens."""
    looping = '{"facts": [' + FIRST_FACT + LOOPING_FACT * 60
    scripted_llm.script(Reply(content=looping, finish_reason="length"))

    completion = await make_client().complete(MESSAGES, Extraction)

    assert completion.value == Extraction(facts=[
        Fact(text="Has a cat", source_indices=[1]),
        Fact(text="Lives in Paris with a cat called Mimi", source_indices=[1])])
    assert (completion.attempts, completion.truncated) == (1, 1)
    assert len(scripted_llm.requests) == 1
    # Read up to the fourth copy's closing brace, in four-character pieces, and the prompt
    # estimated: not the 60 copies.
    read = len('{"facts": [' + FIRST_FACT + LOOPING_FACT * 4) - len(", ")
    assert completion.usage.completion_tokens == -(-read // 4)
    assert completion.usage.prompt_tokens == sum(len(m["content"]) for m in MESSAGES) // 4


class Graph(BaseModel):
    entities: list[str]
    relations: list[Fact]


async def test_a_loop_with_nothing_valid_before_it_is_asked_again(
        scripted_llm: ScriptedLLM, make_client: ClientFactory) -> None:
    """What came before the loop must validate on its own: here the other list never
    started, so the reply is a runaway, asked again from the start, briefly."""
    looping = '{"relations": [' + FIRST_FACT + LOOPING_FACT * 60
    good = Graph(entities=["Paris"], relations=[])
    scripted_llm.script(looping, good)

    completion = await make_client().complete(MESSAGES, Graph)

    assert completion.value == good
    assert_asked_again_briefly(scripted_llm, completion)


async def test_a_list_of_names_that_loops_keeps_each_name_once(
        scripted_llm: ScriptedLLM, make_client: ClientFactory) -> None:
    """Long strings standing alone in a list are items too; quotes inside them are text."""
    name = 'Dana \\"the diver\\" who moved from Lisbon to Oslo'
    other = "Ines, Dana's sister, who still lives in Lisbon"
    looping = '{"relations": [], "entities": ["' + other + '", ' + f'"{name}", ' * 60
    scripted_llm.script(looping)

    completion = await make_client().complete(MESSAGES, Graph)

    assert completion.value == Graph(
        relations=[], entities=[other, 'Dana "the diver" who moved from Lisbon to Oslo'])
    assert (completion.attempts, completion.truncated) == (1, 1)


async def test_a_string_that_repeats_its_own_words_is_cut(
        scripted_llm: ScriptedLLM, make_client: ClientFactory) -> None:
    """Cut inside the first fact: no item came before it, so the call is asked again."""
    words = "and then we went home " * 40
    scripted_llm.script(Reply(content='{"facts": [{"text": "' + words), GOOD)

    completion = await make_client(max_tokens=4000).complete(MESSAGES, Extraction)

    assert (completion.attempts, completion.truncated) == (2, 1)
    assert completion.usage.completion_tokens - reply_usage(scripted_llm, [1]).completion_tokens \
        < len(words) // 4 // 2


async def test_a_long_reply_that_repeats_only_its_punctuation_and_names_is_not_cut(
        scripted_llm: ScriptedLLM, make_client: ClientFactory) -> None:
    """Names, keys and short values come back in every item of a long list: not a loop."""
    many = Extraction(facts=[Fact(text=f"Caroline went to the support group on day {day}",
                                  source_indices=[day % 3], valid_from=None)
                             for day in range(25)]
                      + [Fact(text="Caroline went to the support group on day 3",
                              source_indices=[0])])  # one item said twice: tolerated
    scripted_llm.script(many)

    completion = await make_client().complete(MESSAGES, Extraction)

    assert (completion.value, completion.attempts, completion.truncated) == (many, 1, 0)


async def test_a_server_that_ignores_stream_is_read_whole(
        scripted_llm: ScriptedLLM, make_client: ClientFactory) -> None:
    scripted_llm.script(Reply(content=GOOD.model_dump_json(), sse=False))

    completion = await make_client().complete(MESSAGES, Extraction)

    assert completion.value == GOOD
    assert completion.usage == reply_usage(scripted_llm)
    assert scripted_llm.requests[0].body["stream"] is True


async def test_a_call_bounds_its_reply_within_the_clients_limit(
        scripted_llm: ScriptedLLM, make_client: ClientFactory) -> None:
    scripted_llm.script(GOOD, GOOD)
    client = make_client(max_tokens=512)

    await client.complete(MESSAGES, Extraction, max_tokens=120)
    await client.complete(MESSAGES, Extraction, max_tokens=5000)

    assert [r.body["max_tokens"] for r in scripted_llm.requests] == [120, 512]


async def test_server_error_is_retried(scripted_llm: ScriptedLLM,
                                       make_client: ClientFactory) -> None:
    scripted_llm.script(Reply.error(500, "boom"), Reply.error(502), GOOD)

    completion = await make_client().complete(MESSAGES, Extraction)

    assert completion.value == GOOD
    assert completion.attempts == 1
    assert len(scripted_llm.requests) == 3


async def test_lasting_unavailability_raises_after_max_attempts(
        scripted_llm: ScriptedLLM, make_client: ClientFactory) -> None:
    scripted_llm.script(*[Reply.error(503, "model is loading")] * 5)

    with pytest.raises(LLMUnavailable) as caught:
        await make_client(max_attempts=3).complete(MESSAGES, Extraction)

    assert len(scripted_llm.requests) == 3
    error = caught.value
    assert type(error) is LLMUnavailable
    assert (error.status_code, error.code) == (503, "llm_unavailable")
    assert "HTTP 503" in error.detail
    assert "model is loading" in error.detail


async def test_unavailability_error_carries_tokens_already_spent(
        scripted_llm: ScriptedLLM, make_client: ClientFactory) -> None:
    scripted_llm.script("not json", Reply.error(503), Reply.error(503))

    with pytest.raises(LLMUnavailable) as caught:
        await make_client(max_attempts=2).complete(MESSAGES, Extraction)

    spent = reply_usage(scripted_llm)
    assert spent.prompt_tokens > 0
    assert (caught.value.prompt_tokens, caught.value.completion_tokens) == (
        spent.prompt_tokens, spent.completion_tokens)


async def test_retry_after_is_honoured(scripted_llm: ScriptedLLM,
                                       make_client: ClientFactory) -> None:
    scripted_llm.script(Reply.error(429, "slow down", retry_after=0.3), GOOD)

    started = time.monotonic()
    completion = await make_client(backoff_base_s=0.001).complete(MESSAGES, Extraction)

    assert time.monotonic() - started >= 0.3
    assert completion.value == GOOD
    assert len(scripted_llm.requests) == 2


async def test_lasting_rate_limit_raises_rate_limited(scripted_llm: ScriptedLLM,
                                                      make_client: ClientFactory) -> None:
    scripted_llm.script(*[Reply.error(429, "quota", retry_after=0.01)] * 3)

    with pytest.raises(LLMRateLimited) as caught:
        await make_client(max_attempts=3).complete(MESSAGES, Extraction)

    assert len(scripted_llm.requests) == 3
    assert (caught.value.status_code, caught.value.code) == (429, "llm_rate_limited")
    assert caught.value.retry_after_s == pytest.approx(0.01)


async def test_retry_after_beyond_the_cap_raises_at_once(scripted_llm: ScriptedLLM,
                                                         make_client: ClientFactory) -> None:
    """A worker should not sleep for minutes: the queue reschedules with the wait."""
    scripted_llm.script(Reply.error(429, "quota", retry_after=120), GOOD)

    with pytest.raises(LLMRateLimited) as caught:
        await make_client(max_retry_after_s=5).complete(MESSAGES, Extraction)

    assert len(scripted_llm.requests) == 1
    assert caught.value.retry_after_s == 120


async def test_timeout_is_retried(scripted_llm: ScriptedLLM,
                                  make_client: ClientFactory) -> None:
    scripted_llm.script(Reply.slow(1.0, GOOD.model_dump_json()), GOOD)

    completion = await make_client(timeout_s=0.2).complete(MESSAGES, Extraction)

    assert completion.value == GOOD
    assert len(scripted_llm.requests) == 2


async def test_lasting_timeouts_raise_unavailable(scripted_llm: ScriptedLLM,
                                                  make_client: ClientFactory) -> None:
    scripted_llm.script(*[Reply.slow(1.0)] * 2)

    with pytest.raises(LLMUnavailable) as caught:
        await make_client(timeout_s=0.2, max_attempts=2).complete(MESSAGES, Extraction)

    assert len(scripted_llm.requests) == 2
    assert "no answer within 0.2 s" in caught.value.detail


async def test_unreachable_endpoint_raises_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = OpenAICompatibleClient(f"http://127.0.0.1:{port}/v1", "m", max_attempts=2,
                                    backoff_base_s=0.01)
    try:
        with pytest.raises(LLMUnavailable, match="connection failed") as caught:
            await client.complete(MESSAGES, Extraction)
        assert str(port) not in str(caught.value)  # no address in what a tenant is shown
    finally:
        await client.aclose()


@pytest.mark.parametrize("malformed", [
    Reply(body="<html>gateway</html>"),
    Reply(body='data: {"choices": [{"delta": {"content": "{\\"fa"}}]}\n\ndata: {"choi\n\n',
          headers={"Content-Type": "text/event-stream"}),
], ids=["whole", "streamed"])
async def test_malformed_completion_is_retried(scripted_llm: ScriptedLLM,
                                               make_client: ClientFactory,
                                               malformed: Reply) -> None:
    scripted_llm.script(malformed, GOOD)

    completion = await make_client().complete(MESSAGES, Extraction)

    assert completion.value == GOOD
    assert len(scripted_llm.requests) == 2


async def test_client_error_is_not_retried_and_hides_the_key(
        scripted_llm: ScriptedLLM, make_client: ClientFactory) -> None:
    key = "sk-secret-1234567890"
    scripted_llm.script(Reply.error(401, f"Incorrect API key provided: {key}"), GOOD)

    with pytest.raises(LLMRequestRejected) as caught:
        await make_client(api_key=key).complete(MESSAGES, Extraction)

    assert len(scripted_llm.requests) == 1
    error = caught.value
    assert (error.status_code, error.code) == (502, "llm_request_rejected")
    assert "HTTP 401" in error.detail
    assert "Incorrect API key provided" in error.detail
    assert key not in error.detail
    assert key not in str(error)


async def test_responder_decides_from_the_prompt(scripted_llm: ScriptedLLM,
                                                 make_client: ClientFactory) -> None:
    def respond(request: dict[str, Any]) -> Extraction:
        said = request["messages"][-1]["content"]
        return Extraction(facts=[Fact(text=f"Said: {said}", source_indices=[0])])

    scripted_llm.responder = respond
    client = make_client()

    first = await client.complete([{"role": "user", "content": "hello"}], Extraction)
    second = await client.complete([{"role": "user", "content": "bye"}], Extraction)

    assert first.value.facts[0].text == "Said: hello"
    assert second.value.facts[0].text == "Said: bye"


class Node(BaseModel):
    name: str
    child: Node | None = Field(default=None, description="The next node")
    best: Fact = Field(description="The best fact")


def test_strict_schema_inlines_described_refs_and_survives_recursion() -> None:
    original = Node.model_json_schema()
    assert "$ref" in original  # a recursive model's root is a reference
    schema = strict_schema(original)

    assert original == Node.model_json_schema()
    assert "$ref" not in schema
    assert schema["type"] == "object"

    best = schema["properties"]["best"]
    assert "$ref" not in best
    assert best["description"] == "The best fact"
    assert best["required"] == ["text", "source_indices", "valid_from"]
    assert best["additionalProperties"] is False
    assert schema["required"] == ["name", "child", "best"]
    assert "default" not in schema["properties"]["child"]


def test_parse_output_rejects_prose() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="Invalid JSON"):
        parse_output("no facts today", Extraction)
