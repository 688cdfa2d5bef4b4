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

Token usage is summed over every reply of a call, rejected ones included; a failed call's
error carries the tokens it spent.
"""

from __future__ import annotations

import asyncio
import copy
import email.utils
import logging
import re
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


class LLMClient(Protocol):
    @property
    def model_name(self) -> str:
        """The model asked for."""
        ...

    async def complete(self, messages: Sequence[ChatMessage], output: type[OutputT], *,
                       prompt_version: str | None = None) -> Completion[OutputT]:
        """The model's reply to ``messages``, validated as ``output``.

        Raises ``LLMOutputError`` when the output stays invalid past its re-asks,
        ``LLMUnavailable`` (or ``LLMRateLimited``) when the endpoint stays unreachable,
        ``LLMRequestRejected`` when it refuses the request."""
        ...

    async def aclose(self) -> None: ...


def response_format(output: type[BaseModel]) -> dict[str, Any]:
    """The ``response_format`` asking for JSON that validates as ``output``."""
    return {
        "type": "json_schema",
        "json_schema": {
            "name": re.sub(r"[^A-Za-z0-9_-]", "_", output.__name__)[:64],
            "schema": strict_schema(output.model_json_schema()),
            "strict": True,
        },
    }


def strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` as OpenAI's strict mode accepts it: every object closed and every property
    required, ``None`` defaults dropped, no siblings beside a ``$ref``. Only ever stricter than
    the Pydantic model, so whatever satisfies it still validates."""
    return _closed(copy.deepcopy(schema), schema, frozenset())


def _closed(node: dict[str, Any], root: dict[str, Any], inlining: frozenset[str]) -> dict[str, Any]:
    ref = node.get("$ref")
    if isinstance(ref, str) and len(node) > 1:
        siblings = {key: value for key, value in node.items() if key != "$ref"}
        if ref in inlining:  # a recursive model: keep the bare reference
            return {"$ref": ref}
        node = {**_resolve(root, ref), **siblings}
        inlining = inlining | {ref}
    for key in ("$defs", "properties"):
        if isinstance(node.get(key), dict):
            node[key] = {name: _closed(sub, root, inlining) for name, sub in node[key].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            node[key] = _closed(node[key], root, inlining)
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        if isinstance(node.get(key), list):
            node[key] = [_closed(sub, root, inlining) for sub in node[key]]
    if node.get("type") == "object" or "properties" in node:
        node.setdefault("additionalProperties", False)
        node["required"] = list(node.get("properties", {}))
    if "default" in node and node["default"] is None:
        del node["default"]
    return node


def _resolve(root: dict[str, Any], ref: str) -> dict[str, Any]:
    target: Any = root
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return copy.deepcopy(dict(target))


_FENCED = re.compile(r"```[A-Za-z]*\s*(.*?)\s*```", re.DOTALL)


def parse_output(content: str, output: type[OutputT]) -> OutputT:
    """Validate a reply as ``output``, tolerating a fenced code block or prose around the one
    JSON object. Raises ``pydantic.ValidationError`` (invalid JSON included)."""
    text = content.strip()
    fenced = _FENCED.search(text)
    if fenced:
        text = fenced.group(1)
    elif not text.startswith(("{", "[")):
        start, end = text.find("{"), text.rfind("}")
        if 0 <= start < end:
            text = text[start:end + 1]
    return output.model_validate_json(text)


def describe_errors(error: ValidationError, limit: int = 5) -> str:
    """A validation error short enough to quote back to the model."""
    problems = []
    for item in error.errors(include_url=False)[:limit]:
        where = ".".join(str(part) for part in item["loc"]) or "reply"
        problems.append(f"{where}: {item['msg']}")
    if error.error_count() > limit:
        problems.append(f"and {error.error_count() - limit} more")
    return "; ".join(problems)


def correction_request(problem: str) -> str:
    return (f"Your reply was not valid: {problem}. Answer again with only the corrected JSON "
            "object matching the schema: no prose, no code fences.")


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
        return f"OpenAICompatibleClient(base_url={self.base_url!r}, model={self.model!r})"

    @property
    def model_name(self) -> str:
        return self.model

    async def complete(self, messages: Sequence[ChatMessage], output: type[OutputT], *,
                       prompt_version: str | None = None) -> Completion[OutputT]:
        conversation = list(messages)
        schema_format = response_format(output)
        usage = Usage()
        problem = ""
        replies = self.max_output_retries + 1
        for attempt in range(1, replies + 1):
            logger.debug("LLM call %s (prompt %s), reply %d/%d, %d messages", output.__name__,
                         prompt_version, attempt, replies, len(conversation))
            # A re-ask at temperature 0 tends to repeat the very reply that failed (a small
            # model cut off inside a runaway string is cut off at the same place again).
            temperature = (self.temperature if attempt == 1
                           else max(self.temperature, REASK_TEMPERATURE))
            try:
                reply = await self._exchange(conversation, schema_format, spent=usage,
                                             temperature=temperature)
            except LLMError as exc:
                exc.replies = attempt - 1
                raise
            usage += reply.usage
            try:
                value = parse_output(reply.content, output)
            except ValidationError as exc:
                problem = describe_errors(exc)
                if reply.finish_reason == "length":
                    problem += f" (the reply was cut off at max_tokens={self.max_tokens})"
            else:
                return Completion(value=value, usage=usage, model=reply.model, attempts=attempt,
                                  prompt_version=prompt_version)
            logger.warning("LLM reply %d/%d for %s (prompt %s) did not validate: %s",
                           attempt, replies, output.__name__, prompt_version, problem)
            conversation += [ChatMessage(role="assistant", content=reply.content),
                             ChatMessage(role="user", content=correction_request(problem))]
        raise LLMOutputError(
            f"LLM output did not match {output.__name__} after {replies} replies: {problem[:500]}",
            prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
            replies=replies,
        )

    async def _exchange(self, messages: list[ChatMessage], schema_format: dict[str, Any], *,
                        spent: Usage, temperature: float) -> _Reply:
        """One reply, retrying transient failures."""
        body = {"model": self.model, "messages": messages, "temperature": temperature,
                "max_tokens": self.max_tokens, "response_format": schema_format}
        failure, wait, rate_limited, attempt = "", None, False, 0
        for attempt in range(1, self.max_attempts + 1):
            wait, rate_limited = None, False
            try:
                response = await self._http.post("/chat/completions", json=body)
            except httpx.TimeoutException:
                failure = f"no answer within {self.timeout_s:g} s"
            except httpx.TransportError as exc:
                failure = f"connection failed ({type(exc).__name__}: {exc})"
            else:
                if response.is_success:
                    reply = self._read_reply(response)
                    if reply is not None:
                        return reply
                    failure = f"malformed chat completion: {self._error_text(response)}"
                elif _retryable(response.status_code):
                    failure = f"HTTP {response.status_code}: {self._error_text(response)}"
                    wait = retry_after_s(response.headers)
                    rate_limited = response.status_code == 429
                else:
                    raise LLMRequestRejected(
                        f"LLM endpoint {self.base_url} refused the request with HTTP "
                        f"{response.status_code}: {self._error_text(response)}",
                        prompt_tokens=spent.prompt_tokens,
                        completion_tokens=spent.completion_tokens,
                    )
            if attempt == self.max_attempts or (wait is not None and wait > self.max_retry_after_s):
                break
            delay = wait if wait is not None else self._backoff(attempt)
            logger.warning("LLM request %d/%d to %s failed (%s); retrying in %.2f s",
                           attempt, self.max_attempts, self.base_url, failure, delay)
            await asyncio.sleep(delay)
        error = LLMRateLimited if rate_limited else LLMUnavailable
        raise error(
            f"LLM endpoint {self.base_url} failed after {attempt} attempt(s): {failure}",
            retry_after_s=wait, prompt_tokens=spent.prompt_tokens,
            completion_tokens=spent.completion_tokens,
        )

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
