"""Serves the web console's static files at ``/ui``.

The page is a client of the public REST API like any other: it holds the API key in the
tab's session storage and sends it as a header, so serving it needs no session, cookie or
key here. The files are package data (``app/ui/static``), so an installed wheel carries them.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC = Path(__file__).parent / "static"

# Scripts and styles only from the console itself, requests only to this API, no framing:
# a memory's text is shown as text, and even a mistake that let markup through could not
# load or send anything elsewhere.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidate, so an upgraded server serves its own console
}


class ConsoleFiles(StaticFiles):
    """``StaticFiles`` with the console's security headers on every file."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        return response


def mount_console(app: FastAPI) -> None:
    """``/ui/`` serves ``index.html``; ``/ui`` redirects there (the page's relative links
    need the slash)."""
    app.mount("/ui", ConsoleFiles(directory=STATIC, html=True), name="console")
