"""The async :class:`AsyncAnamnesis` client: the same calls as :class:`~anamnesis.Anamnesis`
(whose docstrings these methods point to), awaited over ``httpx.AsyncClient``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from types import TracebackType
from typing import Literal, Self, TypeVar, overload

import httpx

from anamnesis._admin import AsyncAdminMethods, async_content
from anamnesis._base import BaseClient
from anamnesis._browse import AsyncBrowseMethods
from anamnesis._graph import AsyncGraphMethods
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


class AsyncAnamnesis(BaseClient, AsyncGraphMethods, AsyncAdminMethods, AsyncBrowseMethods):
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
                call.method, call.path, params=call.params, json=call.json,
                content=async_content(call.content),
                headers={"Content-Type": call.content_type} if call.content_type else None,
                timeout=self._timeout(call, self._http.timeout),
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

    @overload
    async def add(
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
    async def add(
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
    async def add(
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
        observed_at: datetime | None = None,
        instructions: str | None = None,
        wait: bool = False,
    ) -> AddResult | Job:
        """See :meth:`Anamnesis.add`."""
        return await self._send(self._add_call(
            messages, user_id=user_id, agent_id=agent_id, run_id=run_id, metadata=metadata,
            infer=infer, idempotency_key=idempotency_key, expires_at=expires_at,
            observed_at=observed_at, instructions=instructions, wait=wait,
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
        as_of: datetime | None = None,
        include_superseded: bool = False,
        ranking: Ranking | None = None,
        graph: bool = False,
        explain: bool = False,
        context: bool = False,
        relations: bool = False,
    ) -> SearchHits:
        """See :meth:`Anamnesis.search`."""
        return await self._send(self._search_call(
            query, filters=filters, top_k=top_k, threshold=threshold,
            user_id=user_id, agent_id=agent_id, run_id=run_id,
            as_of=as_of, include_superseded=include_superseded,
            ranking=ranking, graph=graph, explain=explain, context=context,
            relations=relations,
        ))

    async def get(self, memory_id: str) -> MemoryDetail:
        """See :meth:`Anamnesis.get`."""
        return await self._send(self._get_call(memory_id))

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
    ) -> AsyncIterator[Memory]:
        """See :meth:`Anamnesis.get_all`; use with ``async for`` (do not ``await`` it)."""
        first = self._list_call(user_id, agent_id, run_id, page_size, as_of, include_superseded,
                                kind)
        return self._pages(first)

    async def _pages(self, call: Call[Results[T]]) -> AsyncIterator[T]:
        next_call: Call[Results[T]] | None = call
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

    async def delete_user(self, user_id: str) -> int:
        """See :meth:`Anamnesis.delete_user`."""
        return await self._send(self._delete_user_call(user_id))

    async def history(self, memory_id: str) -> list[HistoryEvent]:
        """See :meth:`Anamnesis.history`."""
        return await self._send(self._history_call(memory_id))

    async def get_job(self, job_id: str) -> Job:
        """See :meth:`Anamnesis.get_job`."""
        return await self._send(self._get_job_call(job_id))

    async def retry_job(self, job_id: str) -> Job:
        """See :meth:`Anamnesis.retry_job`."""
        return await self._send(self._retry_job_call(job_id))

    async def wait_for_job(
        self,
        job_id: str,
        *,
        timeout: float | None = 60.0,  # noqa: ASYNC109 - the sync client's signature
        poll_interval: float = 0.5,
    ) -> Job:
        """See :meth:`Anamnesis.wait_for_job`."""
        deadline = self._wait_deadline(timeout, poll_interval)
        while True:
            job = await self.get_job(job_id)
            if job.done:
                return job
            await asyncio.sleep(self._poll_pause(job, deadline, timeout, poll_interval))

    async def get_project(self) -> Project:
        """See :meth:`Anamnesis.get_project`."""
        return await self._send(self._get_project_call())

    async def set_instructions(self, instructions: str | None) -> Project:
        """See :meth:`Anamnesis.set_instructions`."""
        return await self._send(self._set_instructions_call(instructions))

    async def health(self) -> bool:
        """See :meth:`Anamnesis.health`."""
        return await self._send(self._health_call())
