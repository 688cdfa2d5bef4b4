"""The ``LLMClient`` seam and its OpenAI-compatible implementation.

A call asks for JSON matching a Pydantic model (``response_format`` of type ``json_schema``,
strict) and returns the validated model. Two retry loops, one inside the other:

* output: a reply that does not validate is sent back with the validation error and a request
  for corrected JSON, up to ``max_output_retries`` times, then ``LLMOutputError``;
* transport: 408/429/5xx answers, timeouts and connection failures are retried up to
  ``max_attempts`` requests with exponential backoff and jitter, then ``LLMUnavailable``
  (``LLMRateLimited`` for a lasting 429). ``Retry-After`` is honoured up to
  ``max_retry_after_s``; a longer wait raises at once, carrying the wait, so the job queue can
  schedule the retry instead of a worker sleeping on it. Other 4xx answers raise
  ``LLMRequestRejected`` without a retry.

Replies are streamed, and watched as they come (``LoopWatch``): a reply that starts repeating
itself is cut there and the connection closed (llama.cpp's server then stops generating).
What it said before the loop is kept when that validates; otherwise it is treated like a
reply cut at ``max_tokens``. A server that answers a streamed request with the
whole completion at once is read as such.

Token usage is summed over every reply of a call, rejected ones included; a failed call's
error carries the tokens it spent. A call that succeeds logs its replies, tokens and seconds
(one INFO line: which step of a job the time went to; ``bench.consolidation_quality``).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, Protocol, TypedDict, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from app.backoff import backoff_delay
from app.config import LLMSettings
from app.errors import (
    LLMError,
    LLMOutputError,
    LLMRateLimited,
    LLMRequestRejected,
    LLMUnavailable,
)
from app.llm_output import (
    LoopWatch,
    describe_errors,
    parse_output,
    response_format,
    stream_event,
)
from app.logs import redact_url

logger = logging.getLogger(__name__)

OutputT = TypeVar("OutputT", bound=BaseModel)
REASK_TEMPERATURE = 0.5


class ChatMessage(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.prompt_tokens + other.prompt_tokens,
                     self.completion_tokens + other.completion_tokens)


@dataclass(frozen=True, slots=True)
class Completion(Generic[OutputT]):
    """A validated reply. ``usage`` sums every reply of the call; ``attempts`` counts those
    replies (1 unless the output had to be re-asked); ``model`` is the name the endpoint
    reported, which may be more specific than the one asked for."""

    value: OutputT
    usage: Usage
    model: str
    attempts: int
    prompt_version: str | None = None
    truncated: int = 0  # runaway replies (cut at max_tokens, or when they looped)


class LLMClient(Protocol):
    @property
    def model_name(self) -> str:
        """The model asked for."""
        ...

    async def complete(self, messages: Sequence[ChatMessage], output: type[OutputT], *,
                       prompt_version: str | None = None,
                       max_tokens: int | None = None) -> Completion[OutputT]:
        """The model's reply to ``messages``, validated as ``output``, in at most
        ``max_tokens`` (default: the client's).

        Raises ``LLMOutputError`` when the output stays invalid past its re-asks,
        ``LLMUnavailable`` (or ``LLMRateLimited``) when the endpoint stays unreachable,
        ``LLMRequestRejected`` when it refuses the request."""
        ...

    async def aclose(self) -> None: ...


def correction_request(problem: str) -> str:
    return (f"Your reply was not valid: {problem}. Answer again with only the corrected JSON "
            "object matching the schema: no prose, no code fences.")


RUNAWAY_REQUEST = ("Your previous answer ran too long, repeating itself, and was cut off. "
                   "Answer again, shorter: each item brief and said once, and close the JSON.")
LOOPED = "looped"  # the finish reason of a reply cut because it repeated itself


def retry_after_s(headers: httpx.Headers) -> float | None:
    """The wait an endpoint asked for: ``retry-after-ms`` (OpenAI), or ``Retry-After`` in
    seconds or as an HTTP date."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) * scale)
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            continue
        return max(0.0, when.timestamp() - time.time())
    return None


def _retryable(status: int) -> bool:
    return status in (408, 429) or status >= 500


@dataclass(frozen=True, slots=True)
class _Reply:
    content: str
    model: str
    usage: Usage
    finish_reason: str | None
    salvage: str | None = None  # a looped reply: the items before the loop (``LoopWatch``)


class OpenAICompatibleClient:
    """An ``LLMClient`` over any OpenAI-compatible ``/chat/completions`` endpoint (OpenAI,
    vLLM, Ollama, a llama.cpp server). ``base_url`` ends in ``/v1``."""

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None,
                 timeout_s: float = 120.0, max_attempts: int = 3, max_output_retries: int = 2,
                 temperature: float = 0.0, max_tokens: int = 1024,
                 backoff_base_s: float = 0.5, backoff_cap_s: float = 8.0,
                 max_retry_after_s: float = 30.0) -> None:
        if max_attempts < 1 or max_output_retries < 0:
            raise ValueError("max_attempts must be >= 1 and max_output_retries >= 0")
        self.base_url = base_url.rstrip("/")
        # What the log and repr show: a password in the URL (https://user:pass@host) is not.
        self.endpoint = redact_url(self.base_url)
        self.model = model
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.max_output_retries = max_output_retries
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.max_retry_after_s = max_retry_after_s
        self._api_key = api_key or None
        headers = {"Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)),
        )

    @classmethod
    def from_settings(cls, settings: LLMSettings, *, base_url: str | None = None,
                      backoff_base_s: float = 0.5) -> OpenAICompatibleClient:
        """``base_url``, when given, stands in for the configured one (the bundled local
        server's address when none is configured)."""
        url = base_url or settings.base_url
        if not url:
            raise ValueError("no LLM base_url: configure ANAMNESIS_LLM__BASE_URL or pass one")
        return cls(
            url, settings.model,
            api_key=settings.api_key.get_secret_value() if settings.api_key else None,
            timeout_s=settings.timeout_s, max_attempts=settings.max_attempts,
            max_output_retries=settings.max_output_retries, temperature=settings.temperature,
            max_tokens=settings.max_tokens, backoff_base_s=backoff_base_s,
        )

    def __repr__(self) -> str:
        return f"OpenAICompatibleClient(base_url={self.endpoint!r}, model={self.model!r})"

    @property
    def model_name(self) -> str:
        return self.model

    async def complete(self, messages: Sequence[ChatMessage], output: type[OutputT], *,
                       prompt_version: str | None = None,
                       max_tokens: int | None = None) -> Completion[OutputT]:
        """See ``LLMClient.complete``. A reply that does not validate is sent back with the
        problem, up to ``max_output_retries`` times. A reply cut where it looped is kept up
        to the loop when that validates. A reply cut at ``max_tokens``, or looped with
        nothing valid before the loop (a model that ran away) is not sent back, it is asked
        again from the start with a request to be brief, once: a second runaway ends the
        call."""
        conversation = list(messages)
        schema_format = response_format(output)
        usage = Usage()
        problem, truncated, started = "", 0, time.perf_counter()
        limit = min(max_tokens or self.max_tokens, self.max_tokens)
        replies = self.max_output_retries + 1
        attempt = 0
        for attempt in range(1, replies + 1):
            logger.debug("LLM call %s (prompt %s), reply %d/%d, %d messages", output.__name__,
                         prompt_version, attempt, replies, len(conversation))
            # A re-ask at temperature 0 tends to repeat the very reply that failed (a small
            # model cut off inside a runaway string is cut off at the same place again).
            temperature = (self.temperature if attempt == 1
                           else max(self.temperature, REASK_TEMPERATURE))
            try:
                reply = await self._exchange(conversation, schema_format, spent=usage,
                                             temperature=temperature, max_tokens=limit)
            except LLMError as exc:
                exc.replies = attempt - 1
                raise
            usage += reply.usage
            looped = int(reply.finish_reason == LOOPED)
            try:
                value = parse_output(reply.salvage if reply.salvage is not None
                                     else reply.content, output)
            except ValidationError as exc:
                problem = describe_errors(exc)
            else:
                logger.info("LLM call %s (prompt %s): %d replies, %d prompt + %d completion "
                            "tokens, %.2f s", output.__name__, prompt_version, attempt,
                            usage.prompt_tokens, usage.completion_tokens,
                            time.perf_counter() - started)
                return Completion(value=value, usage=usage, model=reply.model, attempts=attempt,
                                  prompt_version=prompt_version, truncated=truncated + looped)
            if reply.finish_reason in ("length", LOOPED):
                truncated += 1
                cut = (f"when it repeated itself, after {reply.usage.completion_tokens} tokens"
                       if reply.finish_reason == LOOPED else f"at max_tokens={limit}")
                problem += f" (the reply ran away and was cut off {cut})"
                logger.warning("LLM reply %d/%d for %s (prompt %s) ran away, cut %s",
                               attempt, replies, output.__name__, prompt_version, cut)
                if truncated > 1:
                    break
                conversation = [*messages, ChatMessage(role="user", content=RUNAWAY_REQUEST)]
                continue
            logger.warning("LLM reply %d/%d for %s (prompt %s) did not validate: %s",
                           attempt, replies, output.__name__, prompt_version, problem)
            conversation += [ChatMessage(role="assistant", content=reply.content),
                             ChatMessage(role="user", content=correction_request(problem))]
        raise LLMOutputError(
            f"LLM output did not match {output.__name__} after {attempt} replies: "
            f"{problem[:500]}",
            prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
            replies=attempt, truncated=truncated,
        )

    async def _exchange(self, messages: list[ChatMessage], schema_format: dict[str, Any], *,
                        spent: Usage, temperature: float, max_tokens: int) -> _Reply:
        """One reply, retrying transient failures."""
        body = {"model": self.model, "messages": messages, "temperature": temperature,
                "max_tokens": max_tokens, "response_format": schema_format,
                "stream": True, "stream_options": {"include_usage": True}}
        failure, wait, rate_limited, attempt = "", None, False, 0
        for attempt in range(1, self.max_attempts + 1):
            wait, rate_limited = None, False
            try:
                # The whole reply within timeout_s, not each streamed piece.
                async with asyncio.timeout(self.timeout_s), \
                        self._http.stream("POST", "/chat/completions", json=body) as response:
                    if response.is_success:
                        reply = await self._receive(response, messages)
                        if reply is not None:
                            return reply
                        failure = "malformed chat completion"
                    else:
                        await response.aread()
                        if not _retryable(response.status_code):
                            logger.warning("LLM endpoint %s refused a request with HTTP %d",
                                           self.endpoint, response.status_code)
                            raise LLMRequestRejected(
                                f"the LLM endpoint refused the request with HTTP "
                                f"{response.status_code}: {self._error_text(response)}",
                                prompt_tokens=spent.prompt_tokens,
                                completion_tokens=spent.completion_tokens,
                            )
                        failure = f"HTTP {response.status_code}: {self._error_text(response)}"
                        wait = retry_after_s(response.headers)
                        rate_limited = response.status_code == 429
            except (TimeoutError, httpx.TimeoutException):
                failure = f"no answer within {self.timeout_s:g} s"
            except httpx.TransportError as exc:
                # The class only: the text names hosts and addresses, and this message is
                # shown to tenants (a job's error); the log below has the endpoint.
                failure = f"connection failed ({type(exc).__name__})"
            if attempt == self.max_attempts or (wait is not None and wait > self.max_retry_after_s):
                break
            delay = wait if wait is not None else self._backoff(attempt)
            logger.warning("LLM request %d/%d to %s failed (%s); retrying in %.2f s",
                           attempt, self.max_attempts, self.endpoint, failure, delay)
            await asyncio.sleep(delay)
        error = LLMRateLimited if rate_limited else LLMUnavailable
        logger.warning("LLM endpoint %s failed after %d attempt(s): %s", self.endpoint,
                       attempt, failure)
        raise error(
            f"the LLM endpoint failed after {attempt} attempt(s): {failure}",
            retry_after_s=wait, prompt_tokens=spent.prompt_tokens,
            completion_tokens=spent.completion_tokens,
        )

    async def _receive(self, response: httpx.Response,
                       messages: list[ChatMessage]) -> _Reply | None:
        """The streamed reply, cut (finish reason ``LOOPED``) as soon as it loops; None when
        the stream is not a chat completion's."""
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            await response.aread()  # a server that ignored ``stream``: the whole reply at once
            return self._read_reply(response)
        watch, pieces = LoopWatch(), []
        model, usage, finish = self.model, None, None
        async for line in response.aiter_lines():
            data = line.removeprefix("data:").strip()
            if not line.startswith("data:") or data == "[DONE]":
                continue
            event = stream_event(data)
            if event is None:
                return None
            model = event.model or model
            usage = Usage(*event.usage) if event.usage else usage
            finish = event.finish_reason or finish
            for piece in event.pieces:
                pieces.append(piece)
                if watch.feed(piece):
                    logger.info("LLM reply cut after %d pieces: %s", len(pieces), watch.reason)
                    # Leaving the stream closes the connection. Its usage never came: one
                    # token per streamed piece, the prompt by its length (~4 characters a
                    # token).
                    prompt = sum(len(message["content"]) for message in messages) // 4
                    return _Reply("".join(pieces), model, Usage(prompt, len(pieces)), LOOPED,
                                  watch.salvage)
        return _Reply("".join(pieces), model, usage or Usage(0, len(pieces)), finish)

    def _read_reply(self, response: httpx.Response) -> _Reply | None:
        try:
            data = response.json()
            choice = data["choices"][0]
            content = choice["message"].get("content") or ""
            usage = data.get("usage") or {}
            return _Reply(
                content=content if isinstance(content, str) else str(content),
                model=str(data.get("model") or self.model),
                usage=Usage(int(usage.get("prompt_tokens") or 0),
                            int(usage.get("completion_tokens") or 0)),
                finish_reason=choice.get("finish_reason"),
            )
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            return None

    def _error_text(self, response: httpx.Response) -> str:
        """The endpoint's own explanation, short, with the API key masked should it echo it."""
        text = response.text
        try:
            data = response.json()
        except ValueError:
            data = None
        if isinstance(data, dict):
            error = data.get("error", data.get("detail", data.get("message")))
            if isinstance(error, dict):
                error = error.get("message", error)
            if error:
                text = str(error)
        text = " ".join(text.split())[:300] or response.reason_phrase
        if self._api_key:
            text = text.replace(self._api_key, "***")
        return text

    def _backoff(self, attempt: int) -> float:
        return backoff_delay(attempt, self.backoff_base_s, self.backoff_cap_s)

    async def aclose(self) -> None:
        await self._http.aclose()
