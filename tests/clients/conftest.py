"""The SDK under test, both ways: ``sdk`` is a :class:`Facade` over a fresh project's
``Anamnesis`` (its blocking calls made in a worker thread, so the session event loop stays
free) or ``AsyncAnamnesis``, one test run per client, against the live server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from anamnesis import Anamnesis, AsyncAnamnesis, Memory

KeyFactory = Callable[..., Awaitable[str]]


class _SyncRecorder(httpx.HTTPTransport):
    def __init__(self, log: list[httpx.Request]) -> None:
        super().__init__()
        self.log = log

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.log.append(request)
        return super().handle_request(request)


class _AsyncRecorder(httpx.AsyncHTTPTransport):
    def __init__(self, log: list[httpx.Request]) -> None:
        super().__init__()
        self.log = log

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.log.append(request)
        return await super().handle_async_request(request)


class Facade:
    """Awaitable facade over either SDK client, so each scenario is written once.

    ``await sdk.add(...)`` calls the async client directly, or the sync one in a thread.
    ``requests`` records every HTTP request the SDK sent.
    """

    def __init__(self, sdk: Anamnesis | AsyncAnamnesis, requests: list[httpx.Request]) -> None:
        self.sdk = sdk
        self.requests = requests

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        method = getattr(self.sdk, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            if isinstance(self.sdk, AsyncAnamnesis):
                return await method(*args, **kwargs)
            return await asyncio.to_thread(method, *args, **kwargs)

        return call

    async def get_all(self, **kwargs: Any) -> list[Memory]:
        return await self.collect("get_all", **kwargs)

    async def collect(self, method_name: str, /, **kwargs: Any) -> list[Any]:
        """Everything the paging method (``get_all``, ``entities``) yields."""
        method = getattr(self.sdk, method_name)
        if isinstance(self.sdk, AsyncAnamnesis):
            return [item async for item in method(**kwargs)]
        return await asyncio.to_thread(lambda: list(method(**kwargs)))


@asynccontextmanager
async def open_client(kind: str, base_url: str, api_key: str) -> AsyncIterator[Facade]:
    log: list[httpx.Request] = []
    if kind == "sync":
        with Anamnesis(base_url, api_key, transport=_SyncRecorder(log)) as sync_sdk:
            yield Facade(sync_sdk, log)
    else:
        async with AsyncAnamnesis(base_url, api_key, transport=_AsyncRecorder(log)) as async_sdk:
            yield Facade(async_sdk, log)


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def sdk(kind: str, live_server: Any, api_key_factory: KeyFactory) -> AsyncIterator[Facade]:
    api_key = await api_key_factory()
    async with open_client(kind, live_server.base_url, api_key) as opened:
        yield opened


@pytest.fixture
def user() -> str:
    return f"user-{uuid.uuid4().hex[:12]}"
