"""The sync :class:`Anamnesis` client (the async one: ``anamnesis._async_client``).

Both are thin I/O shells over :class:`~anamnesis._base.BaseClient`: every method builds its
request there, sends it, and lets the base parse the answer or raise the mapped error.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from datetime import datetime
from types import TracebackType
from typing import Literal, Self, TypeVar, overload

import httpx

from anamnesis._admin import AdminMethods
from anamnesis._base import BaseClient
from anamnesis._browse import BrowseMethods
from anamnesis._graph import GraphMethods
from anamnesis._models import (
    AddResult,
    HistoryEvent,
    Job,
    Memory,
    MemoryDetail,
    Project,
    Results,
    SearchHits,
)
from anamnesis._routes import Call
from anamnesis._types import Filters, MessagesInput, Metadata, Ranking

T = TypeVar("T")


class Anamnesis(BaseClient, GraphMethods, AdminMethods, BrowseMethods):
    """Blocking client. Use as a context manager or call :meth:`close` when done.

    ``base_url`` defaults to ``$ANAMNESIS_BASE_URL`` then ``http://127.0.0.1:8420``; ``api_key``
    to ``$ANAMNESIS_API_KEY`` (construction raises :class:`AnamnesisError` if neither is set).
    API error answers raise :class:`APIError` subclasses; transport failures raise
    :class:`AnamnesisConnectionError`.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(base_url, api_key, headers)
        self._http = httpx.Client(
            base_url=self.base_url, headers=self._headers, timeout=timeout, transport=transport
        )

    def _send(self, call: Call[T]) -> T:
        try:
            response = self._http.request(
                call.method, call.path, params=call.params, json=call.json,
                content=call.content,
                headers={"Content-Type": call.content_type} if call.content_type else None,
                timeout=self._timeout(call, self._http.timeout),
            )
        except httpx.TransportError as exc:
            raise self._transport_error(exc, call) from exc
        return self._process(call, response)

    def close(self) -> None:
        """Close the connection pool. The client is unusable afterwards."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @overload
    def add(
        self,
        messages: MessagesInput,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        metadata: Metadata | None = None,
        infer: Literal[False],
        idempotency_key: str | None = None,
        expires_at: datetime | None = None,
    ) -> AddResult: ...

    @overload
    def add(
        self,
        messages: MessagesInput,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        metadata: Metadata | None = None,
        infer: Literal[True] = True,
        idempotency_key: str | None = None,
        expires_at: datetime | None = None,
        observed_at: datetime | None = None,
        instructions: str | None = None,
        wait: bool = False,
    ) -> Job: ...

    @overload
    def add(
        self,
        messages: MessagesInput,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        metadata: Metadata | None = None,
        infer: bool,
        idempotency_key: str | None = None,
        expires_at: datetime | None = None,
        observed_at: datetime | None = None,
        instructions: str | None = None,
        wait: bool = False,
    ) -> AddResult | Job: ...

    def add(
        self,
        messages: MessagesInput,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        metadata: Metadata | None = None,
        infer: bool = True,
        idempotency_key: str | None = None,
        expires_at: datetime | None = None,
        observed_at: datetime | None = None,
        instructions: str | None = None,
        wait: bool = False,
    ) -> AddResult | Job:
        """Remember ``messages`` (a string is one user message) for the given scope.

        ``infer=True`` (the default) stores the conversation as an episode that the server's
        LLM distils into memories in the background, and returns the :class:`Job` (``id``,
        ``status="PENDING"``; follow it with :meth:`wait_for_job` or :meth:`get_job`).
        ``observed_at`` is when the conversation happened (relative dates in it are read
        against it; default: now), ``instructions`` extra extraction rules for this call (after
        the project's, see :meth:`set_instructions`). ``wait=True`` makes the server answer
        once the job finished, or as it stands when its wait bound (``max_wait_s``) ran out.

        ``infer=False`` stores each non-empty message verbatim and returns the
        :class:`AddResult` (``observed_at``, ``instructions`` and ``wait`` raise ``ValueError``
        there). Retrying with the same ``idempotency_key`` and body replays the first answer;
        reusing it with another body raises :class:`IdempotencyKeyReusedError`.
        Datetimes must be timezone-aware.
        """
        return self._send(self._add_call(
            messages, user_id=user_id, agent_id=agent_id, run_id=run_id, metadata=metadata,
            infer=infer, idempotency_key=idempotency_key, expires_at=expires_at,
            observed_at=observed_at, instructions=instructions, wait=wait,
        ))

    def search(
        self,
        query: str,
        *,
        filters: Filters | None = None,
        top_k: int = 10,
        threshold: float | None = None,
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        as_of: datetime | None = None,
        include_superseded: bool = False,
        ranking: Ranking | None = None,
        graph: bool = False,
        explain: bool = False,
        context: bool = False,
        relations: bool = False,
    ) -> SearchHits:
        """Up to ``top_k`` memories most relevant to ``query``, best first.

        Searches current memories; ``as_of`` searches what was true at that (timezone-aware)
        time instead, ``include_superseded=True`` every memory, superseded ones included (not
        both). Hits whose cosine ``similarity`` is below ``threshold`` are dropped. A
        malformed ``filters`` raises :class:`InvalidFilterError`. ``ranking``: ``"hybrid"``
        (meaning and words; the server's default), ``"dense"`` or ``"lexical"``; ``graph``
        adds memories one relation away from the entities the query names; ``explain`` fills
        each hit's ``explain`` with the ranks and scores behind its ``score``; ``context``
        each hit's ``context`` with the exchange it belongs to; ``relations`` fills the
        answer's ``relations`` with the current relations among the hits' entities.
        """
        return self._send(self._search_call(
            query, filters=filters, top_k=top_k, threshold=threshold,
            user_id=user_id, agent_id=agent_id, run_id=run_id,
            as_of=as_of, include_superseded=include_superseded,
            ranking=ranking, graph=graph, explain=explain, context=context,
            relations=relations,
        ))

    def get(self, memory_id: str) -> MemoryDetail:
        """The memory with this id, superseded ones included, with ``supersedes`` and
        ``sources``; :class:`NotFoundError` if absent, deleted or expired."""
        return self._send(self._get_call(memory_id))

    def get_all(
        self,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        page_size: int = 100,
        as_of: datetime | None = None,
        include_superseded: bool = False,
        kind: str | None = None,
    ) -> Iterator[Memory]:
        """Iterate over the scope's current memories, newest first, ``page_size`` at a time.

        ``as_of`` lists what was true at that time instead, ``include_superseded=True``
        superseded memories too (not both); ``kind`` keeps to ``"message"`` or ``"fact"``.
        Arguments are checked now; pages are requested as the iterator is consumed.
        """
        first = self._list_call(user_id, agent_id, run_id, page_size, as_of, include_superseded,
                                kind)
        return self._pages(first)

    def _pages(self, call: Call[Results[T]]) -> Iterator[T]:
        next_call: Call[Results[T]] | None = call
        while next_call is not None:
            page = self._send(next_call)
            yield from page.results
            next_call = self._next_page(next_call, page)

    def update(
        self, memory_id: str, *, text: str | None = None, metadata: Metadata | None = None
    ) -> Memory:
        """Replace the text and/or metadata of a memory (at least one is required)."""
        return self._send(self._update_call(memory_id, text=text, metadata=metadata))

    def delete(self, memory_id: str) -> None:
        """Erase one memory and every copy of its words (history included);
        :class:`NotFoundError` if absent or already erased."""
        self._send(self._delete_call(memory_id))

    def delete_all(
        self, *, user_id: str | None = None, agent_id: str | None = None, run_id: str | None = None
    ) -> int:
        """Erase everything of the scope (at least one id required: memories, history,
        conversations, graph) and return how many memories went."""
        return self._send(self._delete_all_call(user_id, agent_id, run_id))

    def delete_user(self, user_id: str) -> int:
        """Erase everything of a user, across agents and runs; returns how many memories
        went."""
        return self._send(self._delete_user_call(user_id))

    def history(self, memory_id: str) -> list[HistoryEvent]:
        """The memory's change events, oldest first (an erased memory has none)."""
        return self._send(self._history_call(memory_id))

    def get_job(self, job_id: str) -> Job:
        """The consolidation job as it stands; :class:`NotFoundError` for another project's."""
        return self._send(self._get_job_call(job_id))

    def retry_job(self, job_id: str) -> Job:
        """Run a FAILED job again from its stored episode; returns it PENDING.

        Raises :class:`ConflictError` when the job is not FAILED.
        """
        return self._send(self._retry_job_call(job_id))

    def wait_for_job(
        self, job_id: str, *, timeout: float | None = 60.0, poll_interval: float = 0.5
    ) -> Job:
        """Poll the job every ``poll_interval`` seconds until it is SUCCEEDED or FAILED, and
        return it (a FAILED job is returned, not raised: see ``job.error``).

        Raises :class:`JobTimeoutError` (carrying the job as last seen) after ``timeout``
        seconds; ``timeout=None`` waits for as long as it takes.
        """
        deadline = self._wait_deadline(timeout, poll_interval)
        while True:
            job = self.get_job(job_id)
            if job.done:
                return job
            time.sleep(self._poll_pause(job, deadline, timeout, poll_interval))

    def get_project(self) -> Project:
        """The project of the API key, with its extraction ``instructions``."""
        return self._send(self._get_project_call())

    def set_instructions(self, instructions: str | None) -> Project:
        """Set the project's extraction instructions (at most 4000 characters), applied to
        every episode consolidated from now on; ``None`` or ``""`` clears them."""
        return self._send(self._set_instructions_call(instructions))

    def health(self) -> bool:
        """True if the server reports ``ok``, False if it answers otherwise.

        An unreachable server raises :class:`AnamnesisConnectionError`.
        """
        return self._send(self._health_call())
