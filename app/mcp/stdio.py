"""``anamnesis mcp``: the tools over stdio, for an MCP host that starts a process (Claude
Desktop, Claude Code, Cursor), each call made with the SDK to a running server."""

from __future__ import annotations

from contextlib import nullcontext

from anamnesis import AsyncAnamnesis
from mcp.server.mcpserver import Context

from app.mcp.tools import build_server


async def serve_stdio(url: str, api_key: str) -> None:
    """Serve MCP on stdin/stdout until the host closes it; every tool call goes to the server
    at ``url`` with ``api_key`` (its project, its scopes)."""
    async with AsyncAnamnesis(url, api_key) as client:

        def shared(ctx: Context) -> nullcontext[AsyncAnamnesis]:
            return nullcontext(client)  # one client for the session, closed at its end

        await build_server(shared).run_stdio_async()
