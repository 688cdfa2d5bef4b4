"""The Project screen: extraction instructions saved; an admin key lists, creates and revokes
keys; a key without admin is told why it sees none."""

from __future__ import annotations

import re

import httpx
from playwright.async_api import expect

from tests.conftest import LiveServer
from tests.console.conftest import Project, Screenshots, Tab


async def test_instructions_and_keys(tab: Tab, project: Project, live_server: LiveServer,
                                     screenshots: Screenshots) -> None:
    page = tab.page
    await tab.open("#/project")
    await tab.sign_in(project.key)
    await expect(page.get_by_role("heading", name="Project", exact=True)).to_be_focused()

    await page.get_by_label("Instructions applied").fill("Only keep food preferences.")
    await page.get_by_role("button", name="Save instructions").click()
    await expect(page.get_by_role("status").first).to_contain_text("Instructions saved")
    stored = (await project.api.get("/v1/project")).json()
    assert stored["instructions"] == "Only keep food preferences."

    keys = page.get_by_role("region", name="API keys")
    await expect(keys.locator("tbody tr")).to_have_count(1)
    await keys.get_by_label("Name").fill("reader")
    await keys.get_by_label("write").uncheck()
    await keys.get_by_role("button", name="Create key").click()
    await expect(keys.locator("tbody tr")).to_have_count(2)
    shown = keys.locator(".alert code")
    await expect(shown).to_have_text(re.compile(r"^anm_[0-9a-f]{8}_"))
    reader = await shown.inner_text()
    await expect(keys.locator("tbody tr").nth(1)).to_contain_text("reader")
    await expect(keys.locator("tbody tr").nth(1)).to_contain_text("read")
    await screenshots.take(page, "project")

    async with httpx.AsyncClient(base_url=live_server.base_url,
                                 headers={"Authorization": f"Bearer {reader}"}) as as_reader:
        assert (await as_reader.get("/v1/jobs")).status_code == 200
        refused = await as_reader.post("/v1/memories", json={
            "messages": [{"role": "user", "content": "hi"}], "user_id": "u", "infer": False})
        assert refused.status_code == 403

    prefix = reader.split("_")[1]
    await keys.get_by_role("button", name=f"Revoke key {prefix}").click()
    await page.get_by_role("dialog").get_by_role("button", name="Revoke").click()
    await expect(page.get_by_role("status").first).to_contain_text(f"Key {prefix} revoked")
    await expect(keys.locator("tbody tr").nth(1)).to_contain_text("revoked")

    # A read-only key is told why it sees no keys, and still sees the project.
    reading = (await project.api.post("/v1/keys", json={"scopes": ["read"]})).json()["key"]
    await page.get_by_role("button", name="Sign out").click()
    await tab.sign_in(reading)
    await expect(keys).to_contain_text("Only an admin key sees and manages the project's keys")
    await expect(page.get_by_label("Instructions applied")).to_have_value(
        "Only keep food preferences.")
