"""The console's files are served by the API at ``/ui`` with headers that keep the page to
itself; no key is needed to load the page (it asks for one)."""

from __future__ import annotations

import httpx


async def test_the_console_is_served_at_ui(anonymous: httpx.AsyncClient) -> None:
    bare = await anonymous.get("/ui")
    assert bare.status_code in (307, 308)
    assert bare.headers["location"].endswith("/ui/")

    page = await anonymous.get("/ui/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="app.js">' in page.text
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "connect-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"

    script = await anonymous.get("/ui/views/memories.js")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert "content-security-policy" in script.headers


async def test_a_missing_console_file_is_404(anonymous: httpx.AsyncClient) -> None:
    missing = await anonymous.get("/ui/nothing-here.js")
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found"
