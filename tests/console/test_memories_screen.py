"""Sign in, then the Memories screen end to end: list a scope, find memories with a filter,
open one's sources and history, correct it, delete another."""

from __future__ import annotations

from typing import Any

from playwright.async_api import expect

from tests.console.conftest import Project, Screenshots, Tab
from tests.consolidate.scripted_brain import Brain
from tests.consolidate.test_consolidation_api import consolidate


async def remember(project: Project, text: str, **fields: Any) -> dict[str, Any]:
    response = await project.api.post("/v1/memories", json={
        "messages": [{"role": "user", "content": text}], "infer": False, "user_id": "alice",
        **fields})
    assert response.status_code == 201, response.text
    memory: dict[str, Any] = response.json()["results"][0]
    return memory


async def test_find_read_correct_and_delete_memories(tab: Tab, project: Project, brain: Brain,
                                                     screenshots: Screenshots) -> None:
    brain.facts = {"I like jazz": ["User likes jazz"]}
    job = await consolidate(project.api, "I like jazz", user_id="alice")
    jazz = job["results"][0]
    pizza = await remember(project, "Pizza on Fridays", metadata={"topic": "food"})
    await remember(project, "Sushi is overrated", metadata={"topic": "opinions"})
    await remember(project, "Bob's note", user_id="bob")
    page = tab.page

    await tab.open()
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await screenshots.take(page, "sign-in")
    await tab.sign_in(project.key)
    await expect(page.get_by_role("heading", name="Memories", exact=True)).to_be_focused()

    # The scope: alice's memories, newest first, bob's not among them.
    await page.get_by_label("User id").fill("alice")
    await page.get_by_role("button", name="List memories").click()
    results = page.get_by_role("region", name="Results")
    await expect(results.get_by_role("row")).to_have_count(1 + 4)  # header, 3 adds + 1 fact
    await expect(results).not_to_contain_text("Bob's note")
    await expect(results.get_by_role("row").nth(1)).to_contain_text("Sushi is overrated")
    await screenshots.take(page, "memories")

    # A filter built from a condition finds the food memory only.
    await page.get_by_label("Query").fill("what does alice eat")
    await page.get_by_role("button", name="Add condition").click()
    await page.get_by_label("Field", exact=True).fill("metadata.topic")
    await page.get_by_label("Value").fill("food")
    await page.get_by_label("Explain scores").check()
    await page.get_by_role("button", name="Search", exact=True).click()
    await expect(results.get_by_role("row")).to_have_count(2)
    await expect(results.get_by_role("row").nth(1)).to_contain_text("Pizza on Fridays")
    await results.get_by_text("why").click()
    await expect(results.locator("details pre")).to_contain_text("rank")
    await screenshots.take(page, "search")

    # The fact: where it came from, and its history with the cause.
    await page.get_by_role("button", name="List memories").click()
    await results.get_by_role("button", name="User likes jazz").click()
    detail = page.get_by_role("complementary", name="Memory detail")
    await expect(detail.get_by_role("heading", name="Memory", exact=True)).to_be_focused()
    await expect(detail.locator(".sources")).to_contain_text("[0] user:I like jazz")
    history = detail.locator("ol.history > li")
    await expect(history).to_have_count(1)
    await expect(history.first).to_contain_text("ADD")
    await expect(history.first).to_contain_text("consolidation of a conversation")
    await screenshots.take(page, "memory-detail")

    # Corrected: the new text, and the old one in history.
    await detail.get_by_label("Text").fill("User loves jazz")
    await detail.get_by_role("button", name="Save changes").click()
    await expect(page.get_by_role("status").first).to_contain_text("Memory updated")
    await expect(history).to_have_count(2)
    await expect(history.last).to_contain_text("UPDATE")
    await expect(history.last.locator("del")).to_have_text("User likes jazz")
    await expect(history.last.locator("ins")).to_have_text("User loves jazz")
    await expect(results.get_by_role("button", name="User loves jazz")).to_be_visible()
    stored = (await project.api.get(f"/v1/memories/{jazz['id']}")).json()
    assert stored["memory"] == "User loves jazz"

    # Deleted, after saying so in a dialog.
    await results.get_by_role("button", name="Pizza on Fridays").click()
    await expect(detail.locator(".memory-text")).to_have_text("Pizza on Fridays")
    await detail.get_by_role("button", name="Delete memory").click()
    dialog = page.get_by_role("dialog")
    await expect(dialog).to_contain_text("Pizza on Fridays")
    await screenshots.take(page, "delete-dialog")
    await expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
    await page.keyboard.press("Escape")  # cancels, and focus goes back where it was
    await expect(dialog).to_have_count(0)
    await expect(detail.get_by_role("button", name="Delete memory")).to_be_focused()
    assert (await project.api.get(f"/v1/memories/{pizza['id']}")).status_code == 200
    await detail.get_by_role("button", name="Delete memory").click()
    await dialog.get_by_role("button", name="Delete").click()
    await expect(page.get_by_role("status").first).to_contain_text("Memory deleted")
    await expect(results).not_to_contain_text("Pizza on Fridays")
    assert (await project.api.get(f"/v1/memories/{pizza['id']}")).status_code == 404
