"""Transport-free core shared by the sync and async clients.

Each endpoint is described once, as a :class:`Call` (method, path, query, JSON body and a parser
for the answer). The clients only send a ``Call`` and hand the ``httpx.Response`` back to
:meth:`BaseClient._process`, which maps errors and parses the body.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar

import httpx
import pydantic

from anamnesis import _routes as routes
from anamnesis._exceptions import (
    AnamnesisConnectionError,
    AnamnesisError,
    AnamnesisTimeoutError,
    APIError,
    JobTimeoutError,
    make_api_error,
)
from anamnesis._models import (
    AddResult,
    Deleted,
    Health,
    HistoryEvent,
    Job,
    Memory,
    MemoryDetail,
    Message,
    Project,
    Results,
    SearchHits,
    SearchResults,
)
from anamnesis._routes import Call
from anamnesis._types import Filters, MessagesInput, Metadata, Ranking

__version__ = "0.1.0"

DEFAULT_BASE_URL = "http://127.0.0.1:8420"
BASE_URL_ENV = "ANAMNESIS_BASE_URL"
API_KEY_ENV = "ANAMNESIS_API_KEY"
# The server bounds ``"wait": true`` by its consolidation.max_wait_s, which is at most this.
SERVER_MAX_WAIT_S = 600.0

T = TypeVar("T")


def _scope(user_id: str | None, agent_id: str | None, run_id: str | None) -> dict[str, str]:
    ids = {"user_id": user_id, "agent_id": agent_id, "run_id": run_id}
    return {name: value for name, value in ids.items() if value is not None}


def _messages(messages: MessagesInput) -> list[dict[str, Any]]:
    if isinstance(messages, str):
        items: list[Message] = [Message(role="user", content=messages)]
    else:
        items = [m if isinstance(m, Message) else Message.model_validate(m) for m in messages]
    if not items:
        raise ValueError("messages must not be empty")
    return [m.model_dump(exclude_none=True) for m in items]


def _page_size(page_size: int) -> int:
    """``page_size`` checked before any request: a page holds at least one item."""
    if page_size < 1:
        raise ValueError("page_size must be at least 1")
    return page_size


def _iso(value: datetime, name: str) -> str:
    # A naive datetime is local time to Python but would be read as UTC by the server.
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (e.g. datetime.now(UTC))")
    return value.isoformat()


def _timeline(as_of: datetime | None, include_superseded: bool) -> dict[str, str | bool]:
    """The ``as_of`` / ``include_superseded`` fields of a read; empty for current memories."""
    if as_of is not None and include_superseded:
        raise ValueError("as_of and include_superseded exclude each other")
    fields: dict[str, str | bool] = {}
    if as_of is not None:
        fields["as_of"] = _iso(as_of, "as_of")
    if include_superseded:
        fields["include_superseded"] = True
    return fields


def _search_hits(body: Any) -> SearchHits:
    answer = SearchResults.model_validate(body)
    return SearchHits(answer.results, answer.relations)


class BaseClient:
    """Configuration, request building and answer parsing; no I/O."""

    def __init__(
        self,
        base_url: str | None,
        api_key: str | None,
        headers: Mapping[str, str] | None,
    ) -> None:
        """Resolve settings: arguments first, then ``ANAMNESIS_*`` variables, then defaults.

        Raises :class:`AnamnesisError` when no API key is given or found in the environment.
        """
        api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        if not api_key:
            raise AnamnesisError(
                f"no API key: pass api_key=... or set the {API_KEY_ENV} environment variable"
            )
        self.base_url = (base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")
        merged = httpx.Headers({"User-Agent": f"anamnesis-python/{__version__}"})
        merged.update(headers or {})
        merged["Authorization"] = f"Bearer {api_key}"
        self._headers = merged

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    # -- answers ---------------------------------------------------------------------------

    @staticmethod
    def _timeout(call: Call[Any], default: httpx.Timeout) -> httpx.Timeout:
        """The client's timeout, with room for the server's wait on requests that hold."""
        if not call.holds or default.read is None:
            return default
        return httpx.Timeout(connect=default.connect, read=default.read + SERVER_MAX_WAIT_S,
                             write=default.write, pool=default.pool)

    @staticmethod
    def _transport_error(exc: httpx.TransportError, call: Call[Any]) -> AnamnesisConnectionError:
        cls = AnamnesisTimeoutError if isinstance(exc, httpx.TimeoutException) else (
            AnamnesisConnectionError
        )
        return cls(f"{call.method} {call.path}: {type(exc).__name__}: {exc}")

    @staticmethod
    def _process(call: Call[T], response: httpx.Response) -> T:
        """Raise the mapped :class:`APIError` for an error status, else parse the body."""
        if response.is_error:
            if not call.check:
                return call.parse(None)
            raise BaseClient._api_error(response)
        try:
            body = response.json() if response.content else None
            return call.parse(body)
        except (ValueError, pydantic.ValidationError) as exc:
            raise AnamnesisError(
                f"unexpected answer to {call.method} {call.path} "
                f"({response.status_code}): {exc}"
            ) from exc

    @staticmethod
    def _api_error(response: httpx.Response) -> APIError:
        code: str | None = None
        detail = response.text or response.reason_phrase
        request_id = response.headers.get("x-request-id")
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            if isinstance(body.get("error"), str):
                code = body["error"]
            if "detail" in body:
                raw = body["detail"]
                detail = raw if isinstance(raw, str) else str(raw)
            if isinstance(body.get("request_id"), str):
                request_id = body["request_id"]
        return make_api_error(response.status_code, code, detail, request_id)

    # -- endpoints -------------------------------------------------------------------------

    def _add_call(
        self,
        messages: MessagesInput,
        *,
        user_id: str | None,
        agent_id: str | None,
        run_id: str | None,
        metadata: Metadata | None,
        infer: bool,
        idempotency_key: str | None,
        expires_at: datetime | None,
        observed_at: datetime | None,
        instructions: str | None,
        wait: bool,
    ) -> Call[AddResult | Job]:
        body: dict[str, Any] = {"messages": _messages(messages), "infer": infer}
        body.update(_scope(user_id, agent_id, run_id))
        if metadata is not None:
            body["metadata"] = dict(metadata)
        if idempotency_key is not None:
            body["idempotency_key"] = idempotency_key
        if expires_at is not None:
            body["expires_at"] = _iso(expires_at, "expires_at")
        parse: Callable[[Any], AddResult | Job] = Job.model_validate
        if not infer:
            given = [name for name, value in (("observed_at", observed_at),
                                              ("instructions", instructions), ("wait", wait))
                     if value not in (None, False)]
            if given:
                raise ValueError(f"{', '.join(given)}: only with infer=True")
            parse = AddResult.model_validate
        if observed_at is not None:
            body["observed_at"] = _iso(observed_at, "observed_at")
        if instructions is not None:
            body["instructions"] = instructions
        if wait:
            body["wait"] = True
        return Call("POST", routes.ADD.path(), parse, json=body, holds=wait)

    def _search_call(
        self,
        query: str,
        *,
        filters: Filters | None,
        top_k: int,
        threshold: float | None,
        user_id: str | None,
        agent_id: str | None,
        run_id: str | None,
        as_of: datetime | None,
        include_superseded: bool,
        ranking: Ranking | None = None,
        graph: bool = False,
        explain: bool = False,
        context: bool = False,
        relations: bool = False,
    ) -> Call[SearchHits]:
        body: dict[str, Any] = {"query": query, "top_k": top_k}
        if ranking is not None:
            body["ranking"] = ranking
        if graph:
            body["graph"] = True
        if explain:
            body["explain"] = True
        include = [name for name, wanted in (("relations", relations), ("context", context))
                   if wanted]
        if include:
            body["include"] = include
        if filters is not None:
            body["filters"] = dict(filters)
        if threshold is not None:
            body["threshold"] = threshold
        body.update(_scope(user_id, agent_id, run_id))
        body.update(_timeline(as_of, include_superseded))
        return Call("POST", routes.SEARCH.path(), _search_hits, json=body)

    def _get_call(self, memory_id: str) -> Call[MemoryDetail]:
        return routes.GET_MEMORY.call(MemoryDetail.model_validate, memory_id=memory_id)

    def _list_call(
        self,
        user_id: str | None,
        agent_id: str | None,
        run_id: str | None,
        page_size: int,
        as_of: datetime | None,
        include_superseded: bool,
        kind: str | None = None,
    ) -> Call[Results[Memory]]:
        _page_size(page_size)
        if kind not in (None, "fact", "message"):
            raise ValueError('kind is "fact", "message" or None (both)')
        params: dict[str, str | int] = {**_scope(user_id, agent_id, run_id), "limit": page_size}
        if kind is not None:
            params["kind"] = kind
        for name, value in _timeline(as_of, include_superseded).items():
            params[name] = "true" if value is True else str(value)
        return Call("GET", routes.LIST_MEMORIES.path(), Results[Memory].model_validate,
                    params=params)

    @staticmethod
    def _next_page(call: Call[Results[T]], page: Results[T]) -> Call[Results[T]] | None:
        """The request for the page after ``page``, or None when it was the last one."""
        params = call.params or {}
        if page.next_cursor is None or page.next_cursor == params.get("cursor"):
            return None
        return replace(call, params={**params, "cursor": page.next_cursor})

    def _update_call(
        self, memory_id: str, *, text: str | None, metadata: Metadata | None
    ) -> Call[Memory]:
        body: dict[str, Any] = {}
        if text is not None:
            body["text"] = text
        if metadata is not None:
            body["metadata"] = dict(metadata)
        if not body:
            raise ValueError("update needs text and/or metadata")
        return Call("PATCH", routes.UPDATE_MEMORY.path(memory_id=memory_id), Memory.model_validate,
                    json=body)

    def _delete_call(self, memory_id: str) -> Call[None]:
        return routes.DELETE_MEMORY.call(lambda _body: None, memory_id=memory_id)

    def _delete_all_call(
        self, user_id: str | None, agent_id: str | None, run_id: str | None
    ) -> Call[int]:
        scope = _scope(user_id, agent_id, run_id)
        if not scope:
            raise ValueError("delete_all needs at least one of user_id, agent_id, run_id")
        parse = Deleted.model_validate
        return Call("DELETE", routes.DELETE_SCOPE.path(), lambda b: parse(b).deleted,
                    params=dict(scope))

    def _delete_user_call(self, user_id: str) -> Call[int]:
        if not user_id:
            raise ValueError("delete_user needs a user_id")
        parse = Deleted.model_validate
        return routes.DELETE_USER.call(lambda b: parse(b).deleted, user_id=user_id)

    def _history_call(self, memory_id: str) -> Call[list[HistoryEvent]]:
        parse = Results[HistoryEvent].model_validate
        return routes.HISTORY.call(lambda b: parse(b).results, memory_id=memory_id)

    def _get_job_call(self, job_id: str) -> Call[Job]:
        return routes.GET_JOB.call(Job.model_validate, job_id=job_id)

    def _retry_job_call(self, job_id: str) -> Call[Job]:
        return routes.RETRY_JOB.call(Job.model_validate, job_id=job_id)

    @staticmethod
    def _wait_deadline(timeout: float | None, poll_interval: float) -> float | None:
        """The monotonic time ``wait_for_job`` gives up at (None: never); checks the arguments."""
        if poll_interval <= 0:
            raise ValueError("poll_interval must be positive")
        if timeout is None:
            return None
        if timeout < 0:
            raise ValueError("timeout must not be negative")
        return time.monotonic() + timeout

    @staticmethod
    def _poll_pause(
        job: Job, deadline: float | None, timeout: float | None, poll_interval: float
    ) -> float:
        """Seconds to sleep before looking at an unfinished job again.

        Raises :class:`JobTimeoutError` when the deadline has passed.
        """
        if deadline is None or timeout is None:
            return poll_interval
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise JobTimeoutError(job, timeout)
        return min(poll_interval, remaining)

    def _get_project_call(self) -> Call[Project]:
        return routes.GET_PROJECT.call(Project.model_validate)

    def _set_instructions_call(self, instructions: str | None) -> Call[Project]:
        return Call("PATCH", routes.UPDATE_PROJECT.path(), Project.model_validate,
                    json={"instructions": instructions})

    def _health_call(self) -> Call[bool]:
        parse = Health.model_validate
        return Call("GET", routes.HEALTH.path(),
                    lambda b: b is not None and parse(b).status == "ok", check=False)
