"""``/mcp``: the tools over streamable HTTP on the API itself, with the API's keys.

The HTTP edge (``RequestContextMiddleware``) admits a ``/mcp`` request exactly as it admits
an API request (same headers, 401/429 in the error envelope) before MCP sees it. A tool call
then makes its SDK calls with the caller's own key over ``httpx.ASGITransport`` onto this
app: they pass the same edge (key, scopes, rates, project slot, body limits) and the same
routes and services as any API request, so MCP adds no path into the data of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

import httpx
from anamnesis import AsyncAnamnesis
from mcp.server.mcpserver import Context
from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from app.auth import key_from_headers
from app.http import REQUEST_ID_HEADER
from app.mcp.tools import build_server

# The tools' SDK requests never leave the process: the host only names it in logs.
IN_PROCESS_URL = "http://anamnesis.internal"


class McpEndpoint:
    """The ASGI endpoint of ``/mcp``; :meth:`running` belongs in the app's lifespan."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.server = build_server(self.client)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The MCP session manager, from start-up to shutdown (it runs once per app).

        Stateless: each request stands alone, so any API replica answers any MCP request.
        DNS-rebinding protection is off: every request must carry an API key, which a page
        rebinding a hostname cannot send. The manager's task group is held by a task of its
        own: a task group must be left by the task that entered it, and the task that ends a
        lifespan need not be the one that began it (a test harness's is not).
        """
        self.server.streamable_http_app(
            stateless_http=True, json_response=True,
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))
        started, stop = asyncio.Event(), asyncio.Event()

        async def hold() -> None:
            try:
                async with self.server.session_manager.run():
                    started.set()
                    await stop.wait()
            finally:
                started.set()  # never left waiting: a manager that failed to start says why
                # when it is awaited at shutdown (meanwhile /mcp answers 500)

        holder = asyncio.create_task(hold(), name="mcp-sessions")
        await started.wait()
        try:
            yield
        finally:
            stop.set()
            await holder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.server.session_manager.handle_request(scope, receive, send)

    @asynccontextmanager
    async def client(self, ctx: Context) -> AsyncIterator[AsyncAnamnesis]:
        """An SDK client bound to the key this MCP request was admitted with, sending into
        this app; its requests carry this request's id, so the logs tie them together."""
        request = cast(Request, ctx.request_context.request)
        key = key_from_headers(request.headers.get("authorization"),
                               request.headers.get("x-api-key"))
        async with AsyncAnamnesis(
                IN_PROCESS_URL, key, transport=httpx.ASGITransport(app=self.app),
                headers={REQUEST_ID_HEADER: request.state.request_id}) as client:
            yield client
