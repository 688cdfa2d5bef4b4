"""The sync :class:`Anamnesis` and async :class:`AsyncAnamnesis` clients.

Both are thin I/O shells over :class:`~anamnesis._base.BaseClient`: every method builds its
request there, sends it, and lets the base parse the answer or raise the mapped error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import datetime
from types import TracebackType
from typing import Self, TypeVar

import httpx

from anamnesis._base import BaseClient, Call
from anamnesis._models import AddResult, HistoryEvent, Memory, Results, SearchHit
from anamnesis._types import Filters, MessagesInput, Metadata

T = TypeVar("T")


class Anamnesis(BaseClient):
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
                call.method, call.path, params=call.params, json=call.json
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
    ) -> AddResult:
        """Store memories from ``messages`` (a string is one user message).

        ``infer=False`` stores each message verbatim; ``infer=True`` asks the server to extract
        and consolidate facts (raises :class:`ConsolidationNotConfiguredError` on servers
        without an LLM). Retrying with the same ``idempotency_key`` and body replays the first
        answer; reusing it with another body raises :class:`IdempotencyKeyReusedError`.
        ``expires_at`` must be timezone-aware.
        """
        return self._send(self._add_call(
            messages, user_id=user_id, agent_id=agent_id, run_id=run_id, metadata=metadata,
            infer=infer, idempotency_key=idempotency_key, expires_at=expires_at,
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
    ) -> list[SearchHit]:
        """Up to ``top_k`` memories most relevant to ``query``, best first.

        Hits scoring below ``threshold`` are dropped. A malformed ``filters`` raises
        :class:`InvalidFilterError`.
        """
        return self._send(self._search_call(
            query, filters=filters, top_k=top_k, threshold=threshold,
            user_id=user_id, agent_id=agent_id, run_id=run_id,
        ))

    def get(self, memory_id: str) -> Memory:
        """The memory with this id; :class:`NotFoundError` if absent or deleted."""
        return self._send(self._get_call(memory_id))

    def get_all(
        self,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        page_size: int = 100,
    ) -> Iterator[Memory]:
        """Iterate over every memory in the scope, fetching ``page_size`` at a time, lazily.

        Arguments are checked now; pages are requested as the iterator is consumed.
        """
        first = self._list_call(user_id, agent_id, run_id, page_size)
        return self._pages(first)

    def _pages(self, call: Call[Results[Memory]]) -> Iterator[Memory]:
        next_call: Call[Results[Memory]] | None = call
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
        """Delete one memory; :class:`NotFoundError` if absent or already deleted."""
        self._send(self._delete_call(memory_id))

    def delete_all(
        self, *, user_id: str | None = None, agent_id: str | None = None, run_id: str | None = None
    ) -> int:
        """Delete every memory in the scope (at least one id required) and return the count."""
        return self._send(self._delete_all_call(user_id, agent_id, run_id))

    def history(self, memory_id: str) -> list[HistoryEvent]:
        """The memory's change events, oldest first (kept after the memory is deleted)."""
        return self._send(self._history_call(memory_id))

    def health(self) -> bool:
        """True if the server reports ``ok``, False if it answers otherwise.

        An unreachable server raises :class:`AnamnesisConnectionError`.
        """
        return self._send(self._health_call())


class AsyncAnamnesis(BaseClient):
    """Async client; same contract as :class:`Anamnesis`, with awaitable methods.

    Use ``async with`` or call :meth:`aclose` when done. :meth:`get_all` returns an async
    iterator (``async for memory in client.get_all(...)``).
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(base_url, api_key, headers)
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=self._headers, timeout=timeout, transport=transport
        )

    async def _send(self, call: Call[T]) -> T:
        try:
            response = await self._http.request(
                call.method, call.path, params=call.params, json=call.json
            )
        except httpx.TransportError as exc:
            raise self._transport_error(exc, call) from exc
        return self._process(call, response)

    async def aclose(self) -> None:
        """Close the connection pool. The client is unusable afterwards."""
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def add(
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
    ) -> AddResult:
        """See :meth:`Anamnesis.add`."""
        return await self._send(self._add_call(
            messages, user_id=user_id, agent_id=agent_id, run_id=run_id, metadata=metadata,
            infer=infer, idempotency_key=idempotency_key, expires_at=expires_at,
        ))

    async def search(
        self,
        query: str,
        *,
        filters: Filters | None = None,
        top_k: int = 10,
        threshold: float | None = None,
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
    ) -> list[SearchHit]:
        """See :meth:`Anamnesis.search`."""
        return await self._send(self._search_call(
            query, filters=filters, top_k=top_k, threshold=threshold,
            user_id=user_id, agent_id=agent_id, run_id=run_id,
        ))

    async def get(self, memory_id: str) -> Memory:
        """See :meth:`Anamnesis.get`."""
        return await self._send(self._get_call(memory_id))

    def get_all(
        self,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[Memory]:
        """See :meth:`Anamnesis.get_all`; use with ``async for`` (do not ``await`` it)."""
        first = self._list_call(user_id, agent_id, run_id, page_size)
        return self._pages(first)

    async def _pages(self, call: Call[Results[Memory]]) -> AsyncIterator[Memory]:
        next_call: Call[Results[Memory]] | None = call
        while next_call is not None:
            page = await self._send(next_call)
            for memory in page.results:
                yield memory
            next_call = self._next_page(next_call, page)

    async def update(
        self, memory_id: str, *, text: str | None = None, metadata: Metadata | None = None
    ) -> Memory:
        """See :meth:`Anamnesis.update`."""
        return await self._send(self._update_call(memory_id, text=text, metadata=metadata))

    async def delete(self, memory_id: str) -> None:
        """See :meth:`Anamnesis.delete`."""
        await self._send(self._delete_call(memory_id))

    async def delete_all(
        self, *, user_id: str | None = None, agent_id: str | None = None, run_id: str | None = None
    ) -> int:
        """See :meth:`Anamnesis.delete_all`."""
        return await self._send(self._delete_all_call(user_id, agent_id, run_id))

    async def history(self, memory_id: str) -> list[HistoryEvent]:
        """See :meth:`Anamnesis.history`."""
        return await self._send(self._history_call(memory_id))

    async def health(self) -> bool:
        """See :meth:`Anamnesis.health`."""
        return await self._send(self._health_call())
