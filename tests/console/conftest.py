"""The web console in a real headless Chromium (Debian's, driven by Playwright; nothing is
downloaded at run time) against the live server.

Screenshots: each test photographs its screens; with ``ANAMNESIS_SCREENSHOTS=1`` they go to
``docs/screenshots/`` (the README shows them), otherwise to the test's temporary folder, so a
test run leaves the tree as it was.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright

from tests.conftest import KeyFactory, LiveServer

DOCS_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
WAIT_MS = 20_000


@pytest.fixture(scope="session")
async def chromium() -> AsyncIterator[Browser]:
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.fail("the console tests need Debian's chromium: apt-get install chromium "
                    "(scripts/dev test installs it)")
    async with async_playwright() as playwright:
        # Root in a container has no user namespaces for Chromium's sandbox.
        browser = await playwright.chromium.launch(executable_path=executable,
                                                   args=["--no-sandbox"])
        yield browser
        await browser.close()


@dataclass
class Tab:
    """A browser tab of its own (fresh session storage) and what went wrong in its scripts."""

    page: Page
    base_url: str
    errors: list[str] = field(default_factory=list)

    async def open(self, route: str = "") -> None:
        await self.page.goto(f"{self.base_url}/ui/{route}")

    async def sign_in(self, key: str) -> None:
        await self.page.get_by_label("API key").fill(key)
        await self.page.get_by_role("button", name="Sign in").click()
        await self.page.get_by_role("navigation", name="Sections").wait_for()


@pytest.fixture
async def tab(chromium: Browser, live_server: LiveServer) -> AsyncIterator[Tab]:
    # UTC, so a time typed into the page is the instant a test means.
    context = await chromium.new_context(viewport={"width": 1400, "height": 1000},
                                         timezone_id="UTC", locale="en-GB")
    context.set_default_timeout(WAIT_MS)
    page = await context.new_page()
    opened = Tab(page, live_server.base_url)
    page.on("pageerror", lambda error: opened.errors.append(str(error)))
    try:
        yield opened
    finally:
        await context.close()
    assert opened.errors == [], "uncaught errors in the console's scripts"


@dataclass
class Screenshots:
    folder: Path

    async def take(self, page: Page, name: str, *, full_page: bool = True) -> Path:
        path = self.folder / f"{name}.png"
        await page.screenshot(path=path, full_page=full_page)
        return path


@pytest.fixture
def screenshots(tmp_path: Path) -> Screenshots:
    if os.environ.get("ANAMNESIS_SCREENSHOTS") == "1":
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        return Screenshots(DOCS_SCREENSHOTS)
    return Screenshots(tmp_path)


@dataclass
class Project:
    """A fresh project: its key, and an HTTP client of the live server signed in with it."""

    key: str
    api: httpx.AsyncClient


@pytest.fixture
async def project(api_key_factory: KeyFactory, live_server: LiveServer
                  ) -> AsyncIterator[Project]:
    key = await api_key_factory()
    async with httpx.AsyncClient(base_url=live_server.base_url, timeout=60,
                                 headers={"Authorization": f"Bearer {key}"}) as api:
        yield Project(key, api)
