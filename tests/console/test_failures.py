"""What the page says when things go wrong, never a blank screen: a wrong key, a key revoked
while the page is open, a server whose database is gone (5xx), a server that is gone."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
from playwright.async_api import expect

from app.config import Settings
from app.embeddings import SentenceTransformerEmbedder
from app.store.db import migrate, open_database
from tests.conftest import KeyFactory, plain_dsn, project_key, serve
from tests.console.conftest import Project, Screenshots, Tab

OUTAGE_DATABASE = "anamnesis_console_outage"


async def test_a_wrong_key_and_a_revoked_one_are_explained(
        tab: Tab, project: Project, api_key_factory: KeyFactory,
        screenshots: Screenshots) -> None:
    page = tab.page
    await tab.open()
    await page.get_by_label("API key").fill("anm_00000000_not-a-key-of-this-server")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#sign-in-problem")).to_contain_text("That key was not accepted")
    await expect(page.get_by_role("navigation", name="Sections")).to_be_hidden()
    await expect(page.get_by_label("API key")).to_be_focused()
    await screenshots.take(page, "bad-key")

    await tab.sign_in(project.key)
    assert project.key not in page.url
    assert await page.evaluate("document.cookie") == ""
    assert await page.evaluate("sessionStorage.getItem('anamnesis.apiKey')") == project.key

    # Revoked by an admin while the page is open: the next request signs the page out.
    name = (await project.api.get("/v1/project")).json()["name"]
    admin = await api_key_factory(name)
    prefix = project.key.split("_")[1]
    revoked = await project.api.delete(f"/v1/keys/{prefix}",
                                       headers={"Authorization": f"Bearer {admin}"})
    assert revoked.status_code == 200, revoked.text
    await page.get_by_role("link", name="Jobs").click()
    await expect(page.locator("#sign-in-problem")).to_contain_text(
        "Your API key was not accepted (invalid or revoked API key)")
    assert await page.evaluate("sessionStorage.getItem('anamnesis.apiKey')") is None


async def test_a_failing_server_and_a_gone_one_leave_a_message(
        tab: Tab, settings: Settings, embedder: SentenceTransformerEmbedder,
        database_factory: Callable[[str], Awaitable[str]], server_url: str, tmp_path: Path,
        screenshots: Screenshots) -> None:
    url = await database_factory(OUTAGE_DATABASE)
    await asyncio.to_thread(migrate, url, 384)
    own = settings.model_copy(update={"data_dir": tmp_path,
                                      "db": settings.db.model_copy(update={"url": url})})
    database = await open_database(own, migrate_schema=False)
    try:
        key, _ = await project_key(database, "outage")
    finally:
        await database.engine.dispose()
    page = tab.page
    alert = page.locator("#alert")
    listing = page.get_by_role("button", name="List memories")

    with serve(own, embedder) as server:
        tab.base_url = server.base_url
        await tab.open()
        await tab.sign_in(key)
        await expect(page.get_by_role("region", name="Results")).to_contain_text("0 shown")

        # The database goes away under the running server: its 503 envelope, in words.
        connection = await asyncpg.connect(plain_dsn(server_url))
        try:
            await connection.execute(f'DROP DATABASE "{OUTAGE_DATABASE}" WITH (FORCE)')
        finally:
            await connection.close()
        await listing.click()
        await expect(alert).to_contain_text(re.compile(
            r"The server could not answer \(503 unavailable\): .+ — request id [0-9a-f]{32}"))
        await expect(page.get_by_role("heading", name="Memories", exact=True)).to_be_visible()
        await screenshots.take(page, "server-error")

    # The server itself is gone.
    await listing.click()
    await expect(alert).to_contain_text("Cannot reach the Anamnesis server")
    await expect(page.get_by_role("heading", name="Memories", exact=True)).to_be_visible()
    # The jobs screen says so too, and stops polling a server that is not there.
    await page.get_by_role("link", name="Jobs").click()
    await expect(page.get_by_role("heading", name="Jobs", exact=True)).to_be_visible()
    await expect(alert).to_contain_text("Cannot reach the Anamnesis server")
    await expect(page.get_by_label("Live updates")).not_to_be_checked()
